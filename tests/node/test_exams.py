"""From received series to one queued job per complete visit: mapping, completeness, re-opening."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from node.intake.overview import node_status
from node.service import Node
from node.work.exams import ExamWatcher, check_visits
from node.work.jobs import HANDLERS, visit_of_target
from storage import models as m
from storage.database import transaction
from storage.visit_states import move_visit
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import AXIAL, CORONAL, mr_image

PROTOCOL = "t2_stations = 2\ndwi_stations = 2\nstable_age_s = 0.3\n"


class Scanner:
    """Writes a small whole-body exam (coronal T2 stations, axial DWI stations) and pushes it with storescu."""

    def __init__(self, node: Node, folder: Path, patient_id: str = "MND-001", study_date: date = date(2026, 3, 1)):
        self.node, self.folder, self.patient_id, self.study_date = node, folder, patient_id, study_date
        self.study = generate_uid()
        self.n = 0
        folder.mkdir(parents=True, exist_ok=True)

    def _push(self, datasets) -> None:
        paths = []
        for ds in datasets:
            self.n += 1
            path = self.folder / f"{self.n:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(str(path))
        out = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(self.node.listener.port), *paths)
        assert out.returncode == 0, out.stdout

    def t2_station(self, station: int, slices: int = 3) -> None:
        series = generate_uid()
        self._push(mr_image(patient_id=self.patient_id, study_uid=self.study, series_uid=series, orientation=CORONAL,
                            description=f"WB T2 TSE st{station}", position=(-200.0, 5.0 * i, 400.0 - 350 * station),
                            instance_number=i + 1, study_date=self.study_date) for i in range(slices))

    def dwi_station(self, station: int, b_values=(0, 1000), slices: int = 2, series: str | None = None) -> str:
        series = series or generate_uid()
        self._push(mr_image(patient_id=self.patient_id, study_uid=self.study, series_uid=series, orientation=AXIAL,
                            description=f"WB DWI st{station}", position=(-200.0, -200.0, -5.0 * i - 250 * station),
                            b_value=b, philips_private_b=True, instance_number=len(b_values) * i + k + 1,
                            study_date=self.study_date)
                   for i in range(slices) for k, b in enumerate(b_values))
        return series


def register(node: Node, subject_id: str, patient_id: str, group: m.Group = m.Group.PATIENT) -> None:
    node.settle()
    with transaction(node.sessions) as s:
        s.add(m.Subject(subject_id=subject_id, group=group,
                        patient_ids=[m.SubjectPatientId(patient_id=patient_id)]))


def quiet(node: Node) -> Node:
    """Stop the node's own watcher so the test decides when exams are checked."""
    node.watcher.stop()
    return node


def settle(node: Node) -> list[int]:
    """Check the exams once everything acknowledged is indexed (storescu returns when its instances are journaled;
    the index follows) and has been quiet for the stable age."""
    assert node.settle(30.0), "the index did not catch up with the journal"
    time.sleep(node.settings.protocol.stable_age_s + 0.1)
    return check_visits(node.sessions, node.settings, node.jobs)


def visit_states(node: Node) -> list[tuple[str, str, bool]]:
    node.settle()
    with node.sessions() as s:
        return [(v.label, v.state.value, v.incomplete) for v in s.scalars(select(m.Visit).order_by(m.Visit.id))]


def wait_visit_state(node: Node, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(v[1] == state for v in visit_states(node)):
            return
        time.sleep(0.05)
    raise AssertionError(visit_states(node))


def mark_processed(ctx, target: str) -> None:
    """Stands in for quantification (tested in tests/quant and tests/e2e on phantom visits), with its moves:
    these tests are about when a visit is queued, and use 16×16 images no atlas fits."""
    visit_id = visit_of_target(target)
    with transaction(ctx.sessions) as s:
        assert move_visit(s, visit_id, m.VisitState.PROCESSING)
        assert move_visit(s, visit_id, m.VisitState.PROCESSED)


@pytest.fixture(autouse=True)
def _processing_recorded(monkeypatch) -> None:
    monkeypatch.setitem(HANDLERS, "process_visit", mark_processed)


def test_complete_visit_queued_exactly_once_and_reopened_by_late_instance(running_node, tmp_path: Path) -> None:
    node = quiet(running_node(protocol=PROTOCOL))
    register(node, "P001", "MND-001")
    scan = Scanner(node, tmp_path)
    scan.t2_station(0)
    scan.t2_station(1)
    scan.dwi_station(0)
    last = scan.dwi_station(1, b_values=(0,))  # b1000 of the last DWI station still missing
    assert settle(node) == []
    assert visit_states(node) == [("baseline", "receiving", False)]

    scan.dwi_station(1, b_values=(1000,), series=last)
    queued = settle(node)
    assert len(queued) == 1
    wait_visit_state(node, "processed")  # the job ran and recorded the visit ready
    assert settle(node) == []  # nothing new: not queued again

    scan.t2_station(1, slices=1)  # a late instance re-opens the visit
    assert visit_states(node) == [("baseline", "receiving", False)]
    assert len(settle(node)) == 1
    wait_visit_state(node, "processed")
    # the job row is finished in its own transaction just after the handler has updated the visit
    deadline = time.monotonic() + 20
    while True:
        node.settle()
        with node.sessions() as s:
            jobs = s.scalars(select(m.Job).order_by(m.Job.id)).all()
        if all(j.state is m.JobState.DONE for j in jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(j.kind, j.state) for j in jobs] == [("process_visit", m.JobState.DONE)] * 2


def test_visit_from_days_since_baseline_and_unknown_patients_listed(running_node, tmp_path: Path) -> None:
    node = quiet(running_node(protocol=PROTOCOL))
    register(node, "P002", "MND-002")
    Scanner(node, tmp_path / "a", "MND-002", date(2026, 1, 5)).t2_station(0)
    Scanner(node, tmp_path / "b", "MND-002", date(2026, 5, 15)).t2_station(0)  # 130 days later
    Scanner(node, tmp_path / "c", "WALK-IN-7").t2_station(0)
    settle(node)
    assert [v[0] for v in visit_states(node)] == ["baseline", "m4"]
    node.settle()
    with node.sessions() as s:
        st = node_status(s)
    assert st.unknown_patients == ["WALK-IN-7"]
    assert {(line.patient_id, line.visit) for line in st.studies} == {
        ("MND-002", "baseline"), ("MND-002", "m4"), ("WALK-IN-7", None)}


def test_the_watcher_judges_no_exam_while_the_index_is_behind_the_journal(running_node, tmp_path: Path) -> None:
    node = quiet(running_node(protocol=PROTOCOL))
    register(node, "P004", "MND-004")
    scan = Scanner(node, tmp_path, "MND-004")
    for station in (0, 1):
        scan.t2_station(station)
        scan.dwi_station(station)
    time.sleep(node.settings.protocol.stable_age_s + 0.1)  # complete and stable: ready once judged
    behind = ExamWatcher(node.sessions, node.settings, node.jobs, lambda: False, interval_s=0.02)
    behind.start()
    time.sleep(0.3)
    behind.stop()
    with node.sessions() as s:
        assert s.scalars(select(m.Job)).all() == []
    assert visit_states(node) == []  # not even assigned: that round looked at nothing
    caught_up = ExamWatcher(node.sessions, node.settings, node.jobs, node.receiver.settle, interval_s=0.02)
    caught_up.start()
    try:
        wait_visit_state(node, "processed")
    finally:
        caught_up.stop()


def test_incomplete_exam_processed_after_deadline_and_flagged(running_node, tmp_path: Path) -> None:
    node = quiet(running_node(protocol=PROTOCOL + "incomplete_deadline_s = 1\n"))
    register(node, "P003", "MND-003")
    Scanner(node, tmp_path, "MND-003").t2_station(0)
    time.sleep(1.1)
    assert len(settle(node)) == 1
    wait_visit_state(node, "processed")
    assert visit_states(node) == [("baseline", "processed", True)]


def test_studies_of_no_subject_are_tried_again_only_when_a_patient_id_is_mapped(running_node, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """A site keeps many studies of no study subject: the watcher does not try each of them every round."""
    import node.work.exams as exams

    node = quiet(running_node(protocol=PROTOCOL))
    Scanner(node, tmp_path, patient_id="CLINICAL-1").t2_station(0)
    Scanner(node, tmp_path, patient_id="MND-001").t2_station(0)
    node.settle()
    tried: list[int] = []
    real = exams.assign_study
    monkeypatch.setattr(exams, "assign_study", lambda s, study, v: tried.append(study.id) or real(s, study, v))
    mark = exams.AssignMark()
    with transaction(node.sessions) as s:
        assert exams.assign_unassigned(s, node.settings, mark) == 0
    assert len(tried) == 2
    for _ in range(3):
        with transaction(node.sessions) as s:
            exams.assign_unassigned(s, node.settings, mark)
    assert len(tried) == 2  # nothing new: nothing tried
    register(node, "MND-001", "MND-001")
    with transaction(node.sessions) as s:
        assert exams.assign_unassigned(s, node.settings, mark) == 1  # a Patient ID mapped: all tried again
    assert len(tried) == 4

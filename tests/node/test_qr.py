"""Query/Retrieve SCP against dcmtk findscu, getscu and movescu."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from node.demo.ports import free_port
from node.service import Node
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import write_series


@pytest.fixture
def populated(running_node, tmp_path: Path) -> tuple[Node, dict[str, object]]:
    """Two patients; the first has one study with two series (3 + 2 images), the second one series."""
    move_port = free_port()
    node = running_node(qr=f'[[qr.move_destinations]]\nname = "mover"\nae_title = "MOVESCU"\nhost = "127.0.0.1"\n'
                          f'port = {move_port}\n')
    study = generate_uid()
    t2 = write_series(tmp_path / "a", 3, study_uid=study, description="WB T2 TSE")
    dwi = write_series(tmp_path / "b", 2, study_uid=study, description="WB DWI b0 b1000", seed=5)
    other = write_series(tmp_path / "c", 1, patient_id="CTRL-002", description="Survey")
    out = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                *map(str, t2 + dwi + other))
    assert out.returncode == 0, out.stdout
    facts = {"study": study, "t2": t2, "dwi": dwi, "other": other, "move_port": move_port,
             "t2_series": dcmread(t2[0]).SeriesInstanceUID}
    return node, facts


def findscu(node: Node, out: Path, *keys: str, root: str = "-S") -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = [root, "-X", "-od", str(out), "-aet", "FINDSCU", "-aec", "MYONODE"]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args, "127.0.0.1", str(node.listener.port))
    assert result.returncode == 0, result.stdout
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_find_study_level_with_counts(populated, tmp_path: Path) -> None:
    node, f = populated
    rsp = findscu(node, tmp_path / "q1", "QueryRetrieveLevel=STUDY", "PatientID=MND-001", "StudyInstanceUID",
                  "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy", "StudyDate")
    assert len(rsp) == 1
    r = rsp[0]
    assert r.StudyInstanceUID == f["study"] and r.StudyDate == "20260301"
    assert (int(r.NumberOfStudyRelatedSeries), int(r.NumberOfStudyRelatedInstances)) == (2, 5)
    assert r.ModalitiesInStudy == "MR"


def test_find_wildcards_ranges_and_patient_root(populated, tmp_path: Path) -> None:
    node, _ = populated
    assert len(findscu(node, tmp_path / "q1", "QueryRetrieveLevel=STUDY", "PatientID=*", "StudyInstanceUID")) == 2
    assert len(findscu(node, tmp_path / "q2", "QueryRetrieveLevel=STUDY", "PatientID=CTRL*")) == 1
    assert len(findscu(node, tmp_path / "q3", "QueryRetrieveLevel=STUDY", "StudyDate=20260101-20260331")) == 2
    assert findscu(node, tmp_path / "q4", "QueryRetrieveLevel=STUDY", "StudyDate=20270101-") == []
    patients = findscu(node, tmp_path / "q5", "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName=test^*",
                       "NumberOfPatientRelatedInstances", root="-P")
    assert sorted((p.PatientID, int(p.NumberOfPatientRelatedInstances)) for p in patients) == [
        ("CTRL-002", 1), ("MND-001", 5)]


def test_find_series_and_image_levels(populated, tmp_path: Path) -> None:
    node, f = populated
    series = findscu(node, tmp_path / "q1", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={f['study']}",
                     "SeriesInstanceUID", "SeriesDescription=*DWI*", "NumberOfSeriesRelatedInstances")
    assert [(s.SeriesDescription, int(s.NumberOfSeriesRelatedInstances)) for s in series] == [("WB DWI b0 b1000", 2)]
    images = findscu(node, tmp_path / "q2", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={f['study']}",
                     f"SeriesInstanceUID={f['t2_series']}", "SOPInstanceUID", "InstanceNumber", "SOPClassUID")
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert {i.SOPInstanceUID for i in images} == {dcmread(p).SOPInstanceUID for p in f["t2"]}


def test_find_with_a_repeating_group_key_answers_it_empty(populated, tmp_path: Path) -> None:
    """A key the index does not hold, from a repeating group (overlay rows, 6000,0010), is returned empty."""
    node, f = populated
    images = findscu(node, tmp_path / "q", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={f['study']}",
                     f"SeriesInstanceUID={f['t2_series']}", "SOPInstanceUID", "(6000,0010)")
    assert len(images) == 3 and all((0x6000, 0x0010) in i for i in images)


def test_get_series_with_getscu(populated, tmp_path: Path) -> None:
    """getscu retrieves a series over its own association; the files equal what was stored."""
    node, f = populated
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    result = dcmtk("getscu", "-S", "-aet", "GETSCU", "-aec", "MYONODE", "-od", str(out_dir),
                   "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={f['study']}",
                   "-k", f"SeriesInstanceUID={f['t2_series']}", "127.0.0.1", str(node.listener.port))
    assert result.returncode == 0, result.stdout
    got = {dcmread(p).SOPInstanceUID: dcmread(p) for p in out_dir.iterdir()}
    sent = {dcmread(p).SOPInstanceUID: dcmread(p) for p in f["t2"]}
    assert got.keys() == sent.keys()
    assert all(got[k].PixelData == sent[k].PixelData for k in sent)


def test_move_study_with_movescu(populated, tmp_path: Path) -> None:
    """movescu asks the node to C-MOVE a study to a configured destination (movescu's own listener)."""
    node, f = populated
    out_dir = tmp_path / "moved"
    out_dir.mkdir()
    result = dcmtk("movescu", "-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec", "MYONODE",
                   "--port", str(f["move_port"]), "-od", str(out_dir),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={f['study']}",
                   "127.0.0.1", str(node.listener.port))
    assert result.returncode == 0, result.stdout
    assert len(list(out_dir.iterdir())) == 5


def test_move_to_unknown_destination_refused(populated, tmp_path: Path) -> None:
    node, f = populated
    result = dcmtk("movescu", "-v", "-S", "-aet", "MOVESCU", "-aem", "NOBODY", "-aec", "MYONODE",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={f['study']}",
                   "127.0.0.1", str(node.listener.port))
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in result.stdout, result.stdout

"""Real exams nobody here made, sent as the scanner sends them: a Siemens XA60 calf exam (myoqmri's volunteer;
enhanced multi-frame, a 17-echo spin echo and a two-point Dixon) becomes a visit of the ``calves`` profile."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from node.intake.completeness import exam_gaps
from node.settings import SettingsError, load_settings
from node.work.exams import exam_facts
from node.work.jobs import HANDLERS
from storage import models as m
from storage.catalogue import MUSCLES, ScanProfile
from tests.node.test_exams import mark_processed, quiet, register, settle, visit_states, wait_visit_state
from tests.support.dcmtk import dcmtk
from tests.support.real_data import mese_files, myoqmri_example_data

DIXON = ("012_dixon_2echo_RR_opp", "014_dixon_2echo_RR_in", "016_dixon_2echo_RR_F", "018_dixon_2echo_RR_W")


def test_each_profile_gives_its_own_defaults_and_any_of_them_can_still_be_set(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[protocol]\nprofile = "calves"\n')
    calves = load_settings(path, environ={}).protocol
    assert (calves.profile, calves.t2_stations, calves.dwi_stations) == (ScanProfile.CALVES, 1, 0)
    assert calves.muscles == ("tibialis_anterior", "gastrocnemius_soleus")
    assert {r.kind for r in calves.rules} == {"t2", "dwi"}
    legs = load_settings(path, environ={"MYONODE_PROTOCOL__PROFILE": "lower_limbs",
                                         "MYONODE_PROTOCOL__DWI_STATIONS": "2"}).protocol
    assert (legs.profile, legs.t2_stations, legs.dwi_stations) == (ScanProfile.LOWER_LIMBS, 2, 2)
    (tmp_path / "empty.toml").write_text("")
    whole = load_settings(tmp_path / "empty.toml", environ={}).protocol
    assert (whole.profile, whole.t2_stations, whole.dwi_stations) == (ScanProfile.WHOLE_BODY, 6, 8)
    assert whole.muscles == tuple(muscle.key for muscle in MUSCLES)
    path.write_text('[protocol]\nprofile = "thighs"\n')
    with pytest.raises(SettingsError, match="profile"):
        load_settings(path, environ={})


def test_a_siemens_calf_exam_completes_a_visit_of_the_calves_profile(running_node, monkeypatch) -> None:
    monkeypatch.setitem(HANDLERS, "process_visit", mark_processed)
    node = quiet(running_node(protocol='profile = "calves"\nstable_age_s = 0.3\n'))
    files = [*mese_files(), *(next((myoqmri_example_data() / "Dixon_enhanced" / name).glob("*.dcm")) for name in DIXON)]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    register(node, "CALF-001", str(first.PatientID))
    sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 *map(str, files))
    assert sent.returncode == 0, sent.stdout + sent.stderr

    assert len(settle(node)) == 1  # one process_visit job
    wait_visit_state(node, "processed")
    assert visit_states(node) == [("baseline", "processed", False)]  # complete by the profile: not flagged

    with node.sessions() as s:
        kinds = {row.series_description: (row.kind, row.n_instances)
                 for row in s.scalars(select(m.Series).order_by(m.Series.series_number))}
        visit_id = s.scalars(select(m.Visit.id)).one()
        facts, _, _ = exam_facts(s, visit_id=visit_id)
    assert kinds["mese_product"] == (m.SeriesKind.T2, 17)  # every echo one enhanced instance of one series
    assert {kinds[name[4:]] for name in DIXON} == {(m.SeriesKind.OTHER, 1)}  # stored and served, not processed
    gaps = exam_gaps(facts, node.settings.protocol)
    assert (len(gaps.t2_stations), gaps.complete, gaps.lines()) == (1, True, [])

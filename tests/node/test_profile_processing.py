"""A visit measured with a leg profile: values for the covered muscles only, every other one "not covered" in the
database's profile, the SR, the SEG, the console and the report's status — nothing valued from labels the atlas
extrapolated beyond the field of view."""

from __future__ import annotations

import time
from datetime import date
from datetime import time as dtime
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from node.demo.ports import free_port
from node.demo.scenario import prepare_demo_folder, push_visit
from node.service import start_node
from node.web.accounts import add_user
from node.work.processing import process_visit
from node.work.reports import processing_status
from node.work.results import newest_results
from phantom.anatomy import AnatomyParams
from phantom.contrast import MuscleState
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import scan_visit
from quant import codes as C
from stats.importer import import_subjects
from storage import models as m
from storage.catalogue import PROFILE_MUSCLES, ScanProfile, not_covered
from storage.database import transaction
from tests.support.console import post_login
from tests.support.sr import evaluations, measurement_groups

pytestmark = pytest.mark.slow


def test_a_whole_body_visit_measured_again_with_the_lower_limb_profile_values_only_the_legs(tmp_path: Path) -> None:
    settings = prepare_demo_folder(tmp_path / "node", port=free_port(), stable_age_s=1)
    rng = np.random.default_rng(31)
    params = AnatomyParams.random(rng, "F").placed(rng)
    meta = VisitMeta(subject_id="LEGS01", patient_name="PHANTOM^LEGS", birth_date=date(1960, 1, 1), sex="F",
                     age_years=66.0, weight_kg=70.0, height_m=params.height_mm / 1000, study_date=date(2026, 3, 2),
                     study_time=dtime(9, 0), visit="baseline", seed=31, time_point_id="BASELINE")
    scan_visit(meta, params, MuscleState(), tmp_path / "visit", ScanSettings(size="small"))
    (tmp_path / "subjects.csv").write_text("subject_id,group,sex,age,onset_site,onset_side,diagnosis\n"
                                           "LEGS01,control,F,66,,,\n")
    node = start_node(settings)
    try:
        with transaction(node.sessions) as s:
            import_subjects(s, tmp_path / "subjects.csv")
        push_visit(tmp_path / "visit" / "dicom", settings.node.ae_title, settings.node.port)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with node.sessions() as s:
                visit = s.scalars(select(m.Visit)).first()
                if visit is not None and visit.state is m.VisitState.PROCESSED:
                    break
            time.sleep(1)
        with node.sessions() as s:
            visit = s.scalars(select(m.Visit)).one()
            assert (visit.state, visit.profile) == (m.VisitState.PROCESSED, ScanProfile.WHOLE_BODY)
            whole_body = {x.muscle for x in s.scalars(select(m.Measurement))}
        assert whole_body > set(PROFILE_MUSCLES[ScanProfile.LOWER_LIMBS])

        legs = settings.model_copy(update={"protocol": settings.protocol.model_copy(
            update={"profile": ScanProfile.LOWER_LIMBS})})
        outcome = process_visit(legs, node.sessions, node.store, visit.id)
        assert any("registered to the stations stitched" in w for w in outcome.warnings)
        uncovered = not_covered(ScanProfile.LOWER_LIMBS)
        with node.sessions() as s:
            assert s.get_one(m.Visit, visit.id).profile is ScanProfile.LOWER_LIMBS
            assert {x.muscle for x in s.scalars(select(m.Measurement))} == set(PROFILE_MUSCLES[ScanProfile.LOWER_LIMBS])
            (sr,) = newest_results(s, node.store, visit.id, m.ResultKind.SR)
            (seg,) = newest_results(s, node.store, visit.id, m.ResultKind.SEG)
            status = processing_status(s, 0)
        groups = measurement_groups(sr)
        for muscle, side in uncovered:
            assert (C.COVERAGE.value, C.NOT_COVERED.value) in evaluations(groups[f"{muscle}_{side}"])
            assert not [item for item in groups[f"{muscle}_{side}"] if item.ValueType == "NUM"]
        assert {f"{k}_{side}" for k in PROFILE_MUSCLES[ScanProfile.LOWER_LIMBS] for side in ("left", "right")} <= set(groups)
        assert {str(item.TrackingID) for item in seg.SegmentSequence} == {
            f"{k}_{side}" for k in PROFILE_MUSCLES[ScanProfile.LOWER_LIMBS] for side in ("left", "right")}
        assert any(key.startswith("measured with profile lower_limbs") and n == 1 for key, n in status.items())

        with transaction(node.sessions) as s:
            add_user(s, name="reader", password="correct horse battery", role=m.Role.VIEWER)
        base = f"http://127.0.0.1:{settings.web.port}"
        with httpx.Client(base_url=base) as client:
            post_login(client, "reader", "correct horse battery")
            page = client.get(f"/visits/{visit.id}").text
        assert page.count('class="not-covered"') == len(uncovered)
        assert "not covered (profile lower_limbs" in page
    finally:
        node.stop()

"""One atlas per study: which reviewed visits a site atlas is built from, and pinning an atlas queues every visit
measured with another (real rows in SQLite, real atlas folders)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from sqlalchemy.orm import Session

from node.settings import AtlasSettings
from node.work.atlas_in_use import NoAtlasError, atlas_in_use, current_pin, manifest_in_use, pin_atlas
from node.work.site_atlas import VisitFacts, choose
from quant.atlas import AtlasError, AtlasLabel, save_atlas
from storage import models as m
from storage.database import make_engine, session_factory
from storage.migrate import upgrade

TABLE = [AtlasLabel(value=1, key="quadriceps", side="left", tissue="muscle", name="Quadriceps (left)"),
         AtlasLabel(value=2, key="marrow_femur", side="none", tissue="marrow", name="Femoral marrow")]


def atlas_folder(path: Path, atlas_id: str) -> Path:
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3], labels[3:5] = 1, 2
    images = [sitk.GetImageFromArray(a) for a in (np.ones((6, 6, 6), np.float32), labels)]
    return save_atlas(path, atlas_id, "test", images[0], images[1], TABLE, synthetic=False)


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def visit(s: Session, subject: str, state: m.VisitState, atlas_id: str | None) -> int:
    v = m.Visit(subject=m.Subject(subject_id=subject, group=m.Group.PATIENT), label="baseline",
                visit_date=date(2026, 3, 1), state=state)
    s.add(v)
    s.flush()
    if atlas_id is not None:
        s.add(m.Measurement(visit_fk=v.id, modality=m.Modality.REL_T2, muscle="quadriceps", side=m.Side.LEFT,
                            value=1.2, voxel_count=100, pipeline_version="1", stations=[3], atlas_id=atlas_id))
    s.flush()
    return v.id


def facts(name: str, **changes: object) -> VisitFacts:
    base: dict[str, object] = dict(visit_id=1, name=name, accepted=True, atlas_ids=frozenset({"site-1"}),
                                   corrections_applied=0, reviewed_labels=False, automatic_labels=True)
    return VisitFacts(**{**base, **changes})  # type: ignore[arg-type]


def test_a_site_atlas_learns_only_from_accepted_visits_measured_with_the_atlas_in_use() -> None:
    chosen, left_out = choose([
        facts("P1 baseline"),
        facts("P2 baseline", accepted=False),
        facts("P3 baseline", atlas_ids=frozenset({"old"})),
        facts("P4 baseline", corrections_applied=1),
        facts("P5 baseline", corrections_applied=1, reviewed_labels=True),
        facts("P6 baseline", automatic_labels=False),
    ], "site-1")
    assert [f.name for f in chosen] == ["P1 baseline", "P5 baseline"]
    assert left_out == ["P2 baseline: not accepted by a reviewer",
                        "P3 baseline: measured with old, not site-1 (process it again first)",
                        "P4 baseline: its corrections were applied before its last processing; review it again",
                        "P6 baseline: no labels in its QC folder"]


def test_pinning_an_atlas_queues_every_visit_measured_with_another_and_the_failed_ones(s: Session,
                                                                                      tmp_path: Path) -> None:
    old = visit(s, "P1", m.VisitState.PROCESSED, "old")
    same = visit(s, "P2", m.VisitState.PROCESSED, "site-1")
    failed = visit(s, "P3", m.VisitState.FAILED, None)
    visit(s, "P4", m.VisitState.RECEIVING, None)  # queued anyway by the exam watcher when complete
    folder = atlas_folder(tmp_path / "site", "site-1")
    queued: list[int] = []
    pinned = pin_atlas(s, folder, "anna", lambda _s, visit_id: queued.append(visit_id))
    assert (pinned.atlas_id, pinned.queued, queued) == ("site-1", sorted([old, failed]), sorted([old, failed]))
    assert same not in queued
    pin = current_pin(s)
    assert pin is not None and (pin.atlas_id, pin.pinned_by, pin.visits_queued, pin.path) == \
        ("site-1", "anna", 2, str(folder.resolve()))
    # the pin wins over [atlas] path
    other = atlas_folder(tmp_path / "configured", "configured")
    assert atlas_in_use(AtlasSettings(path=other), pin).id == "site-1"
    assert atlas_in_use(AtlasSettings(path=other), None).id == "configured"
    path, manifest, error = manifest_in_use(AtlasSettings(path=other), pin)
    assert (path, manifest.id if manifest else None, error) == (folder.resolve(), "site-1", None)


def test_a_pinned_folder_rebuilt_with_another_id_is_refused_until_pinned_again(s: Session, tmp_path: Path) -> None:
    folder = atlas_folder(tmp_path / "site", "site-1")
    pin_atlas(s, folder, "anna", lambda _s, _v: None)
    atlas_folder(folder, "site-2")
    with pytest.raises(NoAtlasError, match=r"pinned to atlas site-1 .* now holds site-2: pin it again"):
        atlas_in_use(AtlasSettings(), current_pin(s))
    pin_atlas(s, folder, "anna", lambda _s, _v: None)
    assert atlas_in_use(AtlasSettings(), current_pin(s)).id == "site-2"


def test_a_folder_that_is_no_atlas_is_refused_and_nothing_is_pinned(s: Session, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="no atlas here"):
        pin_atlas(s, tmp_path / "empty", "anna", lambda _s, _v: None)
    assert current_pin(s) is None
    with pytest.raises(NoAtlasError, match=r"\[atlas\] path is not set"):
        atlas_in_use(AtlasSettings(), None)

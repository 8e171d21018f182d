"""A site atlas from the node's own reviewed visits (``myonode atlas build --from-visits``, the console's action).

Which visits (:func:`choose`, a pure choice over what the database says, :func:`visit_facts`): processed, accepted by a
reviewer (the newest decision on the whole visit), and measured with the atlas in use (their labels carry its
label values). Left out, each with the reason: a visit not accepted, measured with another atlas, or whose
corrections were applied before its last processing (the reviewed labels went with the old QC folder).

Each chosen visit becomes a :class:`quant.atlas_build.Subject`: its T2 stations stitched as the pipeline
registers them (:func:`quant.pipeline.registration_image`), its reviewed labels (``reviewed_labels.nii.gz``: the
automatic labels with every applied correction; else the automatic ``subject_labels.nii.gz``), and as unusable
the ROIs a reviewer rejected and the muscles its protocol does not cover. :func:`quant.atlas_build.build_and_save`
registers, fuses, measures leave-one-out accuracy and writes the folder; it is not synthetic (real images,
labels a person accepted). Nothing is pinned here: ``myonode atlas use`` does that (:mod:`node.work.atlas_in_use`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.settings import Settings
from node.work.atlas_in_use import atlas_in_use, current_pin
from node.work.corrections import REVIEWED_LABELS, SUBJECT_LABELS
from node.work.review import visit_review
from storage import models as m
from storage.catalogue import ReviewVerdict, ScanProfile, not_covered
from storage.filestore import FileStore

ATLAS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # an atlas id that is also a folder name


class SiteAtlasError(ValueError):
    """Not enough reviewed visits to build from (the message says which were left out and why)."""


@dataclass(frozen=True, kw_only=True)
class VisitFacts:
    """What the choice of a visit rests on."""

    visit_id: int
    name: str  # subject and visit label
    accepted: bool
    atlas_ids: frozenset[str]  # of its automatic measurements
    corrections_applied: int
    reviewed_labels: bool  # its QC folder holds reviewed labels
    automatic_labels: bool
    rejected: frozenset[tuple[str, str]] = frozenset()  # (muscle, side) ROIs a reviewer rejected
    profile: ScanProfile | None = None  # the protocol profile it was measured with


def choose(facts: list[VisitFacts], atlas_id: str) -> tuple[list[VisitFacts], list[str]]:
    """The visits a site atlas is built from, and why each other one is left out."""
    chosen, left_out = [], []
    for f in facts:
        if not f.accepted:
            left_out.append(f"{f.name}: not accepted by a reviewer")
        elif f.atlas_ids != {atlas_id}:
            left_out.append(f"{f.name}: measured with {', '.join(sorted(f.atlas_ids)) or 'no atlas'}, not {atlas_id} "
                            "(process it again first)")
        elif f.corrections_applied and not f.reviewed_labels:
            left_out.append(f"{f.name}: its corrections were applied before its last processing; review it again")
        elif not (f.reviewed_labels or f.automatic_labels):
            left_out.append(f"{f.name}: no labels in its QC folder")
        else:
            chosen.append(f)
    return chosen, left_out


def visit_facts(s: Session, qc_dir: Path) -> list[VisitFacts]:
    facts = []
    rows = s.execute(select(m.Visit.id, m.Subject.subject_id, m.Visit.label, m.Visit.profile).join(m.Subject)
                     .where(m.Visit.state == m.VisitState.PROCESSED).order_by(m.Visit.id)).all()
    for visit_id, subject_id, label, profile in rows:
        atlas_ids = frozenset(a for a in s.scalars(
            select(m.Measurement.atlas_id).where(m.Measurement.visit_fk == visit_id,
                                                 m.Measurement.source == m.MeasurementSource.AUTOMATIC).distinct())
                              if a is not None)
        applied = len(s.scalars(select(m.Correction.id).where(m.Correction.visit_fk == visit_id,
                                                              m.Correction.state == m.CorrectionState.APPLIED)).all())
        folder = qc_dir / f"visit-{visit_id}"
        review = visit_review(s, visit_id)
        facts.append(VisitFacts(visit_id=visit_id, name=f"{subject_id} {label}",
                                accepted=review.verdict is ReviewVerdict.ACCEPTED,
                                atlas_ids=atlas_ids, corrections_applied=applied,
                                reviewed_labels=(folder / REVIEWED_LABELS).is_file(),
                                automatic_labels=(folder / SUBJECT_LABELS).is_file(),
                                rejected=frozenset(review.rejected), profile=profile))
    return facts


def build_from_visits(settings: Settings, sessions: sessionmaker[Session], store: FileStore, out: Path,
                      atlas_id: str, *, minimum: int = 3, progress: Callable[[str], None] | None = None
                      ) -> tuple[Path, list[str]]:
    """Build a site atlas from the reviewed visits into ``out`` (see the module docstring); returns the folder and
    the visits left out with why. Raises :class:`SiteAtlasError` with fewer than ``minimum`` usable visits."""
    import SimpleITK as sitk

    from quant.atlas_build import Subject, build_and_save
    from quant.pipeline import registration_image
    from quant.visit_io import load_visit

    if not ATLAS_ID.fullmatch(atlas_id):
        raise SiteAtlasError(f"atlas id {atlas_id!r}: letters, digits, '_', '.', '-' (at most 64), not starting "
                             "with a symbol")
    say = progress or (lambda _step: None)
    with sessions() as s:
        in_use = atlas_in_use(settings.atlas, current_pin(s))
        chosen, left_out = choose(visit_facts(s, settings.quant.qc_dir), in_use.id)
    if len(chosen) < minimum:
        raise SiteAtlasError(f"{len(chosen)} reviewed visit(s) measured with {in_use.id} can be used, at least "
                             f"{minimum} are needed" + "".join(f"\n  {why}" for why in left_out))
    by_key = {(lab.key, lab.side): lab.value for lab in in_use.table}
    subjects = []
    for f in chosen:
        say(f"reading {f.name}")
        unusable = {by_key[k] for k in [*f.rejected, *not_covered(f.profile)] if k in by_key}
        with sessions() as s:
            visit_input = load_visit(s, store, f.visit_id, t2_te_ms=settings.protocol.t2_te_ms)
        t2, _ = registration_image([v.image for v in visit_input.t2], settings.quant.registration_mm)
        folder = settings.quant.qc_dir / f"visit-{f.visit_id}"
        labels_file = folder / (REVIEWED_LABELS if f.reviewed_labels else SUBJECT_LABELS)
        labels = sitk.Cast(sitk.ReadImage(str(labels_file)), sitk.sitkUInt8)
        subjects.append(Subject(name=f.name, t2=t2, labels=labels, unusable=frozenset(unusable),
                                source={"visit_id": f.visit_id, "labels": labels_file.name,
                                        "corrections": f.corrections_applied, "rejected": sorted(map(list, f.rejected))}))
    description = (f"Site atlas from {len(subjects)} reviewed visits of this node (accepted; corrected ROIs as the "
                   f"reviewers sent them; rejected ROIs never vote), labels first propagated with {in_use.id}")
    path = build_and_save(subjects, in_use.table, out, atlas_id, description, params=settings.quant.params(),
                          source={"visits": [f.visit_id for f in chosen], "from_atlas": in_use.id,
                                  "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "left_out": left_out},
                          progress=progress)
    return path, left_out

"""The nightly cohort report: which visits are complete, whether anything changed, one dated folder per run.

A visit is complete when what ``[report] require`` lists is in: processed imaging (visit
state ``processed``), imported clinical and electrophysiology observations. The statistics
run over complete visits only; incomplete ones are listed in the report. A run happens when
the inputs' digest differs from the last successful run (or when forced), is recorded in
``stats_runs``, writes into a temporary folder renamed into place when everything succeeded,
so a failed run leaves the previous report untouched and records its error.
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.settings import Settings
from node.work.results import publish
from node.work.review import rejected_rois
from stats import tables
from stats.cohort import atlas_mix, cohort_from_db
from stats.report import ReportInputs, write_report
from stats.report_dicom import encapsulated_pdf
from stats.run import cohort_digest, write_run
from storage import models as m
from storage.catalogue import ScanProfile, not_covered
from storage.database import make_engine, session_factory, transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)


def visit_completeness(s: Session, require: Collection[str]) -> tuple[set[int], list[dict[str, str]]]:
    """(ids of complete visits, rows describing what each incomplete visit lacks)."""
    sources = {
        (vid, src.value)
        for vid, src in s.execute(select(m.Observation.visit_fk, m.Observation.source).distinct())
    }
    complete, incomplete = set(), []
    for visit, subject_id in s.execute(select(m.Visit, m.Subject.subject_id).join(m.Subject).order_by(
            m.Subject.subject_id, m.Visit.visit_date)):
        missing = []
        if "imaging" in require and visit.state is not m.VisitState.PROCESSED:
            missing.append(f"imaging ({visit.state.value})")
        for source in ("clinical", "ephys"):
            if source in require and (visit.id, source) not in sources:
                missing.append(source)
        if missing:
            incomplete.append({"subject": subject_id, "visit": visit.label, "missing": ", ".join(missing)})
        else:
            complete.add(visit.id)
    return complete, incomplete


def processing_status(s: Session, incomplete: int) -> dict[str, int]:
    """What the report says of processing: visits by state, how many were measured with a partial profile and how
    many with a synthetic atlas."""
    counts = dict(s.execute(select(m.Visit.state, func.count()).group_by(m.Visit.state)).all())
    status = {"received (visits)": sum(counts.values()), "processed": counts.get(m.VisitState.PROCESSED, 0),
              "failed": counts.get(m.VisitState.FAILED, 0),
              "waiting or processing": sum(v for k, v in counts.items()
                                           if k not in (m.VisitState.PROCESSED, m.VisitState.FAILED)),
              "incomplete for the statistics": incomplete}
    partial = s.execute(select(m.Visit.profile, func.count())
                        .where(m.Visit.state == m.VisitState.PROCESSED, m.Visit.profile.is_not(None),
                               m.Visit.profile != ScanProfile.WHOLE_BODY).group_by(m.Visit.profile)).all()
    for profile, n in sorted((p, n) for p, n in partial if p is not None):  # their other muscles are missing from
        # the tables by design, not by loss
        uncovered = sorted({muscle for muscle, _ in not_covered(profile)})
        status[f"measured with profile {profile.value} ({len(uncovered)} muscles not covered: "
               f"{', '.join(uncovered)})"] = n
    synthetic = s.scalar(select(func.count()).select_from(m.Visit).where(m.Visit.state == m.VisitState.PROCESSED,
                                                                          m.Visit.atlas_synthetic.is_(True))) or 0
    if synthetic:
        status["measured with a synthetic atlas (phantom subjects, not real anatomy: not study values)"] = synthetic
    return status


def qc_entries(s: Session, qc_root: Path, report_dir: Path) -> list[dict[str, Any]]:
    """QC pictures of every processed visit, copied into ``report_dir/qc`` so the report folder is
    self-contained: thumbnail bytes to embed, links to the full mosaics, QC flag counts."""
    entries = []
    rows = s.execute(select(m.Visit.id, m.Visit.label, m.Subject.subject_id).join(m.Subject)
                     .where(m.Visit.state == m.VisitState.PROCESSED).order_by(m.Subject.subject_id, m.Visit.id))
    for visit_id, label, subject_id in rows:
        source = qc_root / f"visit-{visit_id}"
        if not (source / "thumbnail.png").is_file():
            continue
        links = {}
        for name, file in (("T2", "t2_rois.png"), ("DWI", "dwi_rois.png")):
            if (source / file).is_file():
                target = report_dir / "qc" / f"{subject_id}-{label}-{file}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / file, target)
                links[name] = f"qc/{target.name}"
        flags: dict[str, int] = {}
        for (qc_flags,) in s.execute(select(m.Measurement.qc_flags).where(m.Measurement.visit_fk == visit_id)):
            for flag in qc_flags or []:
                flags[flag] = flags.get(flag, 0) + 1
        entries.append({"subject": subject_id, "visit": label, "thumbnail": (source / "thumbnail.png").read_bytes(),
                        "links": links, "flags": ", ".join(f"{k.replace('_', ' ')}: {n}" for k, n in sorted(flags.items()))})
    return entries


@dataclass(frozen=True, kw_only=True)
class ReviewInputs:
    """Which reviewed inputs a report run used, and the counts it states."""

    use: str  # "all" or "reviewed"
    used: bool
    rejected_rois: set[tuple[int, str, str]]
    rejected_visits: set[int]
    reviewed_visits: int
    accepted_visits: int
    roi_reasons: dict[str, int]
    corrected_rois: int  # muscle × sides whose corrected value (a person's segmentation) replaced the automatic

    def summary(self) -> dict[str, Any]:
        return {"use": self.use, "visits_reviewed": self.reviewed_visits, "visits_accepted": self.accepted_visits,
                "visits_rejected": len(self.rejected_visits), "rois_rejected": len(self.rejected_rois),
                "rois_rejected_by_reason": self.roi_reasons, "rois_corrected": self.corrected_rois}


def review_inputs(s: Session, use: str, complete: set[int]) -> ReviewInputs:
    """``[report] use``: "auto" is "reviewed" once any visit has a review decision, else "all"."""
    reviews = [r for r in s.scalars(select(m.Review).order_by(m.Review.id)) if r.visit_fk in complete]
    chosen = use if use != "auto" else ("reviewed" if reviews else "all")
    rois, visits = rejected_rois(s)
    rois = {r for r in rois if r[0] in complete}
    reasons: dict[str, int] = {}
    for r in reviews:
        if r.muscle is not None and r.reason is not None and (r.visit_fk, r.muscle, r.side.value if r.side else "") in rois:
            reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
    whole = {r.visit_fk: r.verdict for r in reviews if r.muscle is None}
    corrected = {(x.visit_fk, x.muscle, x.side) for x in s.scalars(
        select(m.Measurement).where(m.Measurement.source == m.MeasurementSource.CORRECTED,
                                    m.Measurement.visit_fk.in_(complete)))}
    return ReviewInputs(use=chosen, used=chosen == "reviewed", rejected_rois=rois, rejected_visits=visits & complete,
                        reviewed_visits=len({r.visit_fk for r in reviews}),
                        accepted_visits=sum(1 for v in whole.values() if v is m.ReviewVerdict.ACCEPTED),
                        roi_reasons=reasons, corrected_rois=len(corrected))


def run_report(settings: Settings, *, force: bool = False) -> m.StatsRun | None:
    """Run the statistics and the report if the complete visits changed (or ``force``); None when skipped."""
    from node.work.atlas_in_use import atlas_id_in_use  # reads atlas.json; SimpleITK with it

    engine = make_engine(settings.storage.database_url)
    sessions = session_factory(engine)
    visits = [w.label for w in settings.visits.windows]
    with sessions() as s:
        complete, incomplete = visit_completeness(s, settings.report.require)
        review = review_inputs(s, settings.report.use, complete)
        cohort = cohort_from_db(s, visits, complete, rejected_rois=review.rejected_rois if review.used else None,
                                rejected_visits=review.rejected_visits if review.used else None)
        status = processing_status(s, len(incomplete))
        # the atlas the study is measured with: then every visit with measurements counts, complete or not (a visit
        # queued to be processed again with it is not complete, and still holds the old atlas's values)
        in_use = atlas_id_in_use(s, settings.atlas)
        mixed = atlas_mix(s, None, in_use) if in_use else atlas_mix(s, complete)
        last = s.scalars(select(m.StatsRun).where(m.StatsRun.state == m.RunState.DONE)
                         .order_by(m.StatsRun.id.desc())).first()
        cutoff = s.scalar(select(func.max(m.Visit.visit_date)).where(m.Visit.id.in_(complete))) if complete else None
    digest = cohort_digest(cohort)
    if mixed is not None:  # recorded as a failed run: the console's reports page says what waits
        log.error("cohort report not run: %s", mixed)
        with transaction(sessions) as s:
            row = m.StatsRun(state=m.RunState.FAILED, started_at=datetime.now(UTC), finished_at=datetime.now(UTC),
                             input_digest=digest, forced=force, error=f"not run: {mixed}"[:4000])
            s.add(row)
        return row
    if not force and last is not None and last.input_digest == digest:
        log.info("cohort report: nothing changed since run %d (%s); skipped", last.id, digest[:12])
        return None
    if cohort.observations.empty:
        log.info("cohort report: no complete visits yet (%d incomplete); skipped", len(incomplete))
        return None
    started = datetime.now(UTC)
    with transaction(sessions) as s:
        run = m.StatsRun(state=m.RunState.RUNNING, started_at=started, input_digest=digest, forced=force)
        s.add(run)
        s.flush()
        run_id = run.id
    folder = Path(settings.report.out) / f"{started:%Y%m%d-%H%M%S}-run{run_id}"
    partial = folder.with_name(folder.name + ".partial")
    try:
        result = write_run(cohort, partial, source="database (complete visits)")
        obs = tables.add_composites(tables.pool_tested_side(cohort.observations), cohort.subjects)
        meta = json.loads((partial / "run.json").read_text())
        meta["review"] = review.summary()
        (partial / "run.json").write_text(json.dumps(meta, indent=2, default=str))
        with sessions() as s:
            qc = qc_entries(s, settings.quant.qc_dir, partial)
        write_report(result, obs, cohort.subjects,
                     ReportInputs(run=meta, cutoff=cutoff.isoformat() if cutoff else "-", status=status, incomplete=incomplete, qc=qc), partial)
        partial.rename(folder)
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        error = "".join(traceback.format_exception_only(exc)).strip()
        log.exception("cohort report run %d failed", run_id)
        with transaction(sessions) as s:
            row = s.get_one(m.StatsRun, run_id)
            row.state, row.error, row.finished_at = m.RunState.FAILED, error[:4000], datetime.now(UTC)
        return row
    with transaction(sessions) as s:
        row = s.get_one(m.StatsRun, run_id)
        row.state, row.output_dir, row.finished_at = m.RunState.DONE, str(folder), datetime.now(UTC)
    log.info("cohort report run %d written to %s", run_id, folder)
    if settings.report.send_pdf_to_pacs:
        send_pdf(settings, sessions, folder / "report.pdf", run_id, started)
    return row


def send_pdf(settings: Settings, sessions: sessionmaker[Session], pdf_path: Path, run_id: int,
             when: datetime) -> int | None:
    """Store the report PDF as Encapsulated PDF (Q/R serves it) and queue it for every [forward] destination;
    its instance id, or None (logged) when it could not be."""
    ds = encapsulated_pdf(pdf_path.read_bytes(), f"myonode cohort report {when:%Y-%m-%d}", settings.node.ae_title,
                          when, run_id)
    try:
        (stored,) = publish(settings, sessions, FileStore(settings.storage.root), None, [("report_pdf", ds)])
    except Exception as exc:  # the report is written; only its copy for PACS is missing, and the log says why
        log.error("report PDF of run %d not stored: %s", run_id, exc)
        return None
    return stored.instance_id

"""The console's pages: server-rendered (Jinja2), one handler per page, actions through the node's own code.

Every action button posts a form (with the session's CSRF token) to a route that does what the
CLI does — ``JobQueue.retry`` as ``myonode jobs retry``, ``outbox.retry`` as ``myonode outbox
retry``, :func:`link_patient_id` with the rule of ``myonode import subjects`` — writes its audit
record in the same transaction, and redirects back (post/redirect/get).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from node import __version__
from node.intake.completeness import decide, exam_gaps
from node.intake.overview import node_status, received_between
from node.intake.visits import assign_study
from node.web.access import (
    Access,
    Forbidden,
    RouteSpec,
    check_csrf,
    client_address,
    csrf_token,
    sign_in,
    web_context,
)
from node.web.accounts import audit, end_sessions
from node.web.throttle import Busy, Throttled
from node.work.exams import exam_facts
from node.work.jobs import SIGN_VISIT, target_of_visit, visit_of_target
from node.work.outbox import retry as retry_outbox
from node.work.review import ReviewError, decide_visit, reject_roi, visit_review
from stats.importer import InputError, link_patient_id
from storage import models as m
from storage.catalogue import MUSCLE_BY_KEY, not_covered

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
VIEWER, OPERATOR = Access(role=m.Role.VIEWER), Access(role=m.Role.OPERATOR)
QC_PICTURES = ("t2_rois.png", "dwi_rois.png", "thumbnail.png")


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    user = request.state.user
    base = {"user": user, "csrf": csrf_token(request) if user else "", "version": __version__,
            "root": request.scope.get("root_path", ""), "ae_title": web_context(request).settings.node.ae_title,
            "message": request.query_params.get("message")}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def _back(request: Request, path: str, message: str | None = None) -> RedirectResponse:
    suffix = f"?message={quote(message)}" if message else ""
    return RedirectResponse(f"{request.scope.get('root_path', '')}{path}{suffix}", status_code=303)


async def _read(request: Request, work: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with web_context(request).sessions() as s:
            return work(s)
    return await run_in_threadpool(run)


def _int(request: Request, name: str) -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        raise LookupError(f"{name} must be a number") from None


# --- sign-in -----------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=request.query_params.get("next", "/"), error=None,
                  login_csrf=csrf_token(request))


async def login(request: Request) -> Response:
    """Sign in with the form: this console's own form (its CSRF token, its Origin), at most so many failures
    per client and account (429 then), a session that names the account's session generation."""
    ctx = web_context(request)
    form = await request.form()
    name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))[:1024]
    target = str(form.get("next", "/"))
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    try:
        await check_csrf(request)
    except Forbidden:
        return render(request, "login.html", next=target, login_csrf=csrf_token(request), status_code=403,
                      error="the sign-in form has expired or came from another site: sign in again here")

    def check() -> m.User | None:
        user = sign_in(ctx, request, name, password, via="form", refused="login refused")
        if user is not None:
            with ctx.sessions.begin() as s:
                audit(s, actor=name, action="login", remote=client_address(request))
        return user

    try:
        user = await run_in_threadpool(check)
    except Throttled as exc:
        response = render(request, "login.html", next=target, login_csrf=csrf_token(request), status_code=429,
                          error=str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except Busy as exc:
        return render(request, "login.html", next=target, login_csrf=csrf_token(request), status_code=503,
                      error=str(exc))
    if user is None:
        return render(request, "login.html", next=target, error="wrong account name or password",
                      login_csrf=csrf_token(request), status_code=401)
    request.session.clear()
    request.session["user"] = user.name
    request.session["generation"] = user.session_generation
    csrf_token(request)
    return RedirectResponse(f"{request.scope.get('root_path', '')}{target}", status_code=303)


async def logout(request: Request) -> Response:
    """Sign out: every session of the account ends (this cookie and any other), not only this browser's."""
    def record() -> None:
        with web_context(request).sessions.begin() as s:
            end_sessions(s, request.state.user.id)
            audit(s, actor=request.state.user.name, action="logout", remote=client_address(request))
    await run_in_threadpool(record)
    request.session.clear()
    return _back(request, "/login")


# --- dashboard ---------------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    ctx = web_context(request)

    def work(s: Session) -> dict[str, Any]:
        now = datetime.now(UTC)
        today = datetime(now.year, now.month, now.day, tzinfo=UTC)
        week = today - timedelta(days=today.weekday())

        oldest = s.scalar(select(func.min(m.OutboxItem.created_at)).where(m.OutboxItem.state == m.OutboxState.PENDING))
        last_run = s.scalars(select(m.StatsRun).order_by(m.StatsRun.started_at.desc()).limit(1)).one_or_none()
        return {"status": node_status(s, limit=10), "today": received_between(s, today, now),
                "week": received_between(s, week, now),
                "oldest_pending": oldest, "last_run": last_run}

    data = await _read(request, work)
    disk = shutil.disk_usage(ctx.store.root)
    journal = ctx.receiver.journal
    return render(request, "dashboard.html", **data, disk_free_gb=disk.free / 1e9, disk_total_gb=disk.total / 1e9,
                  journal_pending=len(journal.pending()), journal_failed=len(journal.failures()),
                  refused=list(reversed(ctx.refused[-20:])), active=ctx.active_associations())


# --- studies and completeness ------------------------------------------------------------


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


async def studies(request: Request) -> Response:
    q = request.query_params
    patient, description = q.get("patient", "").strip(), q.get("description", "").strip()
    since, until = _date(q.get("from")), _date(q.get("to"))

    def work(s: Session) -> dict[str, Any]:
        counts = (select(m.Series.study_fk, func.count(func.distinct(m.Series.id)).label("series"),
                         func.sum(m.Series.n_instances).label("instances"),
                         func.max(m.Series.last_received_at).label("last"))
                  .group_by(m.Series.study_fk).subquery())
        query = (select(m.Study, m.Patient, m.Visit, counts.c.series, counts.c.instances, counts.c.last)
                 .join(m.Patient, m.Study.patient_fk == m.Patient.id)
                 .join(counts, counts.c.study_fk == m.Study.id, isouter=True)
                 .join(m.Visit, m.Study.visit_fk == m.Visit.id, isouter=True))
        if patient:
            like = f"%{patient.lower()}%"
            query = query.where(or_(func.lower(m.Patient.patient_id).like(like),
                                    func.lower(m.Patient.patient_name).like(like)))
        if description:
            query = query.where(func.lower(m.Study.study_description).like(f"%{description.lower()}%"))
        if since:
            query = query.where(m.Study.study_date >= since)
        if until:
            query = query.where(m.Study.study_date <= until)
        rows = s.execute(query.order_by(counts.c.last.desc().nulls_last()).limit(200)).all()
        return {"rows": rows}

    data = await _read(request, work)
    return render(request, "studies.html", **data, patient=patient, description=description,
                  since=q.get("from", ""), until=q.get("to", ""))


async def study(request: Request) -> Response:
    ctx = web_context(request)
    study_id = _int(request, "study_id")

    def work(s: Session) -> dict[str, Any]:
        row = s.get(m.Study, study_id)
        if row is None:
            raise LookupError(f"no study {study_id}")
        series = list(s.scalars(select(m.Series).where(m.Series.study_fk == study_id).order_by(m.Series.series_number)))
        stations = dict(s.execute(select(m.Instance.series_fk, func.count(func.distinct(m.Instance.station_key)))
                                  .where(m.Instance.series_fk.in_([x.id for x in series]))
                                  .group_by(m.Instance.series_fk)).all())
        facts, first, last = exam_facts(s, study_id=study_id)
        protocol = ctx.settings.protocol
        now = datetime.now(UTC)
        gaps = exam_gaps(facts, protocol)
        decision = decide(facts, protocol, now, first, last) if first and last else None
        until_stable = max(0.0, protocol.stable_age_s - (now - last).total_seconds()) if last else None
        until_deadline = max(0.0, protocol.incomplete_deadline_s - (now - first).total_seconds()) if first else None
        return {"study": row, "patient": row.patient, "visit": row.visit, "series": series, "stations": stations,
                "gaps": gaps, "decision": decision, "until_stable": until_stable, "until_deadline": until_deadline,
                "protocol": protocol}

    try:
        data = await _read(request, work)
    except LookupError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return render(request, "study.html", **data)


# --- visits ------------------------------------------------------------------------------


async def visits(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        rows = s.execute(select(m.Visit, m.Subject).join(m.Subject).order_by(m.Visit.updated_at.desc()).limit(500)).all()
        return {"rows": rows}
    return render(request, "visits.html", **(await _read(request, work)))


async def visit(request: Request) -> Response:
    ctx = web_context(request)
    visit_id = _int(request, "visit_id")

    def work(s: Session) -> dict[str, Any]:
        row = s.get(m.Visit, visit_id)
        if row is None:
            raise LookupError(f"no visit {visit_id}")
        measurements = list(s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id)
                                      .order_by(m.Measurement.modality, m.Measurement.muscle, m.Measurement.side)))
        results = s.execute(
            select(m.ResultObject, m.Study.study_instance_uid)
            .join(m.Instance, m.ResultObject.instance_fk == m.Instance.id, isouter=True)
            .join(m.Series, m.Instance.series_fk == m.Series.id, isouter=True)
            .join(m.Study, m.Series.study_fk == m.Study.id, isouter=True)
            .where(m.ResultObject.visit_fk == visit_id).order_by(m.ResultObject.created_at.desc())).all()
        jobs = list(s.scalars(select(m.Job).where(m.Job.target == target_of_visit(visit_id)).order_by(m.Job.id.desc())))
        decisions = list(s.scalars(select(m.Review).where(m.Review.visit_fk == visit_id).order_by(m.Review.id)))
        corrections = list(s.scalars(select(m.Correction).where(m.Correction.visit_fk == visit_id)
                                     .order_by(m.Correction.id)))
        return {"visit": row, "subject": row.subject, "studies": list(row.studies), "measurements": measurements,
                "results": results, "jobs": jobs, "review": visit_review(s, visit_id), "decisions": decisions,
                "corrections": corrections,
                "rois": sorted({(x.muscle, x.side.value) for x in measurements}),
                "not_covered": not_covered(row.profile) if row.state is m.VisitState.PROCESSED else []}

    try:
        data = await _read(request, work)
    except LookupError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    qc = Path(ctx.settings.quant.qc_dir) / f"visit-{visit_id}"
    pictures = [name for name in QC_PICTURES if (qc / name).is_file()]
    return render(request, "visit.html", **data, pictures=pictures, muscles=MUSCLE_BY_KEY,
                  reasons=[r.value for r in m.RejectReason])


async def visit_viewer(request: Request) -> Response:
    """The visit in the OHIF viewer (``/viewer``): its studies, its newest SEG overlaid on the stitched T2, and the
    measurements in effect listed beside it (why beside: the template's text)."""
    visit_id = _int(request, "visit_id")

    def work(s: Session) -> dict[str, Any]:
        row = s.get(m.Visit, visit_id)
        if row is None:
            raise LookupError(f"no visit {visit_id}")
        measurements = m.in_effect(s.scalars(
            select(m.Measurement).where(m.Measurement.visit_fk == visit_id)
            .order_by(m.Measurement.muscle, m.Measurement.side, m.Measurement.modality)))
        seg_series = s.scalars(select(m.ResultObject.series_instance_uid)
                               .where(m.ResultObject.visit_fk == visit_id, m.ResultObject.kind == m.ResultKind.SEG)
                               .order_by(m.ResultObject.created_at.desc(), m.ResultObject.id.desc())).first()
        uids = [st.study_instance_uid for st in row.studies]
        if not uids:
            raise LookupError(f"visit {visit_id} has no study yet")
        query = "StudyInstanceUIDs=" + quote(",".join(uids), safe=",")
        if seg_series:
            query += "&initialSeriesInstanceUID=" + quote(seg_series)
        return {"visit": row, "subject": row.subject, "measurements": measurements,
                "review": visit_review(s, visit_id), "viewer_src": f"{request.scope.get('root_path', '')}/viewer/viewer?{query}"}

    try:
        data = await _read(request, work)
    except LookupError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return render(request, "visit_viewer.html", **data, muscles=MUSCLE_BY_KEY)


async def _review(request: Request, decide: Callable[[Session, int, Any], str]) -> Response:
    """A review action on a visit: the decision and its audit record in one transaction, then back to the visit."""
    ctx = web_context(request)
    visit_id = _int(request, "visit_id")
    form = await request.form()

    def act() -> str:
        try:
            with ctx.sessions.begin() as s:
                return decide(s, visit_id, form)
        except (ReviewError, ValueError) as exc:
            return f"not done: {exc}"

    return _back(request, f"/visits/{visit_id}", await run_in_threadpool(act))


def _reason(form: Any) -> m.RejectReason:
    try:
        return m.RejectReason(str(form.get("reason", "")))
    except ValueError:
        raise ReviewError(f"reason must be one of {', '.join(r.value for r in m.RejectReason)}") from None


async def review_roi(request: Request) -> Response:
    def decide(s: Session, visit_id: int, form: Any) -> str:
        muscle, _, side = str(form.get("roi", "")).partition("/")
        review = reject_roi(s, visit_id=visit_id, muscle=muscle, side=side, reason=_reason(form),
                            note=str(form.get("note", "")), reviewer=request.state.user.name)
        audit(s, actor=request.state.user.name, action="roi rejected", target=f"visit {visit_id} {muscle} {side}",
              detail=review.reason.value if review.reason else None, remote=client_address(request))
        return f"{muscle} {side} rejected ({review.reason.value if review.reason else ''})"
    return await _review(request, decide)


async def review_accept(request: Request) -> Response:
    ctx = web_context(request)

    def decide(s: Session, visit_id: int, form: Any) -> str:
        decide_visit(s, visit_id=visit_id, verdict=m.ReviewVerdict.ACCEPTED, reason=None, note=None,
                     reviewer=request.state.user.name, organisation=ctx.settings.review.organisation or None)
        job = ctx.jobs.create(s, SIGN_VISIT, target_of_visit(visit_id))
        audit(s, actor=request.state.user.name, action="visit accepted", target=f"visit {visit_id}",
              detail=f"sign job {job.id}", remote=client_address(request))
        s.flush()
        request.state.dispatch = job.id
        return f"visit accepted; the verified SR is being written (job {job.id})"

    response = await _review(request, decide)
    if getattr(request.state, "dispatch", None):
        await run_in_threadpool(ctx.jobs.dispatch, request.state.dispatch)  # after the commit: the job row exists
    return response


async def review_reject(request: Request) -> Response:
    def decide(s: Session, visit_id: int, form: Any) -> str:
        review = decide_visit(s, visit_id=visit_id, verdict=m.ReviewVerdict.REJECTED, reason=_reason(form),
                              note=str(form.get("note", "")), reviewer=request.state.user.name, organisation=None)
        audit(s, actor=request.state.user.name, action="visit rejected", target=f"visit {visit_id}",
              detail=review.reason.value if review.reason else None, remote=client_address(request))
        return "visit rejected: its imaging is left out of the statistics"
    return await _review(request, decide)


async def visit_picture(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in QC_PICTURES:  # a fixed list: no path from the request reaches the file system
        return PlainTextResponse("no such picture", status_code=404)
    path = Path(web_context(request).settings.quant.qc_dir) / f"visit-{_int(request, 'visit_id')}" / name
    if not path.is_file():
        return PlainTextResponse("no such picture", status_code=404)
    return FileResponse(path, media_type="image/png")


# --- jobs and outbox ---------------------------------------------------------------------


async def jobs(request: Request) -> Response:
    state = request.query_params.get("state")

    def work(s: Session) -> dict[str, Any]:
        query = select(m.Job).order_by(m.Job.id.desc()).limit(300)
        if state in {x.value for x in m.JobState}:
            query = query.where(m.Job.state == m.JobState(state))
        rows = list(s.scalars(query))
        return {"rows": rows, "visits": {j.id: visit_of_target(j.target) for j in rows}}

    return render(request, "jobs.html", **(await _read(request, work)), state=state or "",
                  states=[x.value for x in m.JobState], message=request.query_params.get("message"))


async def job_retry(request: Request) -> Response:
    ctx = web_context(request)
    job_id = _int(request, "job_id")

    def act() -> str:
        try:
            ctx.jobs.retry(job_id)  # what `myonode jobs retry` does
        except (LookupError, ValueError) as exc:
            return str(exc)
        with ctx.sessions.begin() as s:
            audit(s, actor=request.state.user.name, action="job retry", target=f"job {job_id}",
                  remote=client_address(request))
        return f"job {job_id} queued again"

    return _back(request, "/jobs", await run_in_threadpool(act))


async def outbox(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        rows = s.execute(select(m.OutboxItem, m.Instance.sop_instance_uid).join(m.Instance)
                         .order_by(m.OutboxItem.id.desc()).limit(300)).all()
        depth = dict(s.execute(select(m.OutboxItem.state, func.count()).group_by(m.OutboxItem.state)).all())
        return {"rows": rows, "depth": depth}
    return render(request, "outbox.html", **(await _read(request, work)), message=request.query_params.get("message"))


async def outbox_retry(request: Request) -> Response:
    ctx = web_context(request)
    item = request.path_params.get("item_id")
    ids = None if item is None else [_int(request, "item_id")]

    def act() -> str:
        with ctx.sessions.begin() as s:
            n = retry_outbox(s, ids)  # what `myonode outbox retry` does
            audit(s, actor=request.state.user.name, action="outbox retry",
                  target="failed items" if ids is None else f"outbox item {ids[0]}", detail=f"{n} queued again",
                  remote=client_address(request))
        return f"{n} outbox item(s) queued again"

    return _back(request, "/outbox", await run_in_threadpool(act))


# --- unknown patients --------------------------------------------------------------------


async def patients(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        known = select(m.SubjectPatientId.patient_id)
        rows = s.execute(select(m.Patient, func.count(m.Study.id)).join(m.Study, isouter=True)
                         .where(m.Patient.patient_id.not_in(known)).group_by(m.Patient.id)
                         .order_by(m.Patient.patient_id)).all()
        subjects = list(s.scalars(select(m.Subject.subject_id).order_by(m.Subject.subject_id)))
        return {"rows": rows, "subjects": subjects}
    return render(request, "patients.html", **(await _read(request, work)),
                  message=request.query_params.get("message"))


async def patient_assign(request: Request) -> Response:
    ctx = web_context(request)
    patient_pk = _int(request, "patient_id")
    subject_id = str((await request.form()).get("subject_id", "")).strip()

    def act() -> str:
        with ctx.sessions.begin() as s:
            patient = s.get(m.Patient, patient_pk)
            if patient is None:
                return f"no patient {patient_pk}"
            try:
                link_patient_id(s, subject_id=subject_id, patient_id=patient.patient_id)
            except InputError as exc:
                return str(exc)
            assigned = [a for a in (assign_study(s, st, ctx.settings.visits) for st in patient.studies) if a]
            audit(s, actor=request.state.user.name, action="patient assigned", target=f"patient {patient.patient_id}",
                  detail=f"subject {subject_id}; {len(assigned)} study(ies) assigned to visits",
                  remote=client_address(request))
            return (f"Patient ID {patient.patient_id} now belongs to subject {subject_id}; "
                    f"{len(assigned)} of its studies assigned to a visit")

    return _back(request, "/patients", await run_in_threadpool(act))


# --- reports, settings, audit ------------------------------------------------------------


async def reports(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        runs = list(s.scalars(select(m.StatsRun).order_by(m.StatsRun.started_at.desc()).limit(100)))
        files = {r.id: sorted(p.name for p in Path(r.output_dir).glob("report.*")) if r.output_dir and
                 Path(r.output_dir).is_dir() else [] for r in runs}
        return {"runs": runs, "files": files}
    return render(request, "reports.html", **(await _read(request, work)))


REPORT_FILES = {"report.html": "text/html", "report.pdf": "application/pdf"}


async def report_file(request: Request) -> Response:
    run_id, name = _int(request, "run_id"), request.path_params["name"]
    if name not in REPORT_FILES:
        return PlainTextResponse("no such report file", status_code=404)

    def find(s: Session) -> dict[str, Any]:
        run = s.get(m.StatsRun, run_id)
        return {"dir": run.output_dir if run else None}

    folder = (await _read(request, find))["dir"]
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        return PlainTextResponse("no such report file", status_code=404)
    return FileResponse(path, media_type=REPORT_FILES[name])


async def settings_page(request: Request) -> Response:
    import json

    from node.work.atlas_in_use import current_pin, manifest_in_use

    ctx = web_context(request)

    def work(s: Session) -> dict[str, Any]:
        pin = current_pin(s)
        path, manifest, error = manifest_in_use(ctx.settings.atlas, pin)
        by_atlas = dict(s.execute(select(m.Measurement.atlas_id, func.count(func.distinct(m.Measurement.visit_fk)))
                                  .where(m.Measurement.source == m.MeasurementSource.AUTOMATIC)
                                  .group_by(m.Measurement.atlas_id)).all())
        measured = by_atlas.pop(manifest.id, 0) if manifest else 0
        return {"atlas": manifest, "atlas_error": error, "atlas_path": path, "pin": pin, "measured_with": measured,
                "waiting": sum(n for atlas_id, n in by_atlas.items() if atlas_id is not None),
                "site_atlases": site_atlases(ctx.settings.atlas.site_dir), "site_dir": ctx.settings.atlas.site_dir}
    return render(request, "settings.html", settings=json.dumps(ctx.settings.masked(), indent=2),
                  message=request.query_params.get("message"), **(await _read(request, work)))


async def atlas_build(request: Request) -> Response:
    """Queue a ``build_site_atlas`` job (one attempt: too few reviewed visits fails it, saying which and why)."""
    from node.work.jobs import BUILD_SITE_ATLAS, target_of_atlas
    from node.work.site_atlas import ATLAS_ID

    ctx = web_context(request)
    atlas_id = str((await request.form()).get("atlas_id", "")).strip()
    if not ATLAS_ID.fullmatch(atlas_id):
        return _back(request, "/settings", f"not done: atlas id {atlas_id!r}: letters, digits, '_', '.', '-'")
    if (ctx.settings.atlas.site_dir / atlas_id).exists():
        return _back(request, "/settings", f"not done: {atlas_id} exists already in {ctx.settings.atlas.site_dir}")

    def act() -> int:
        with ctx.sessions.begin() as s:
            job = ctx.jobs.create(s, BUILD_SITE_ATLAS, target_of_atlas(atlas_id), max_attempts=1)
            audit(s, actor=request.state.user.name, action="site atlas build", target=f"atlas {atlas_id}",
                  detail=f"job {job.id}", remote=client_address(request))
            job_id = job.id  # create() flushed: the row has its id
        ctx.jobs.dispatch(job_id)  # after the commit: the job row exists
        return job_id

    job_id = await run_in_threadpool(act)
    return _back(request, "/settings", f"building site atlas {atlas_id} from the reviewed visits (job {job_id})")


async def atlas_use(request: Request) -> Response:
    """Pin a site atlas of ``[atlas] site_dir`` for the study and queue every visit measured with another."""
    from node.work.atlas_in_use import pin_atlas
    from node.work.jobs import PROCESS_VISIT
    from node.work.site_atlas import ATLAS_ID
    from quant.atlas import AtlasError

    ctx = web_context(request)
    atlas_id = str((await request.form()).get("atlas_id", "")).strip()
    folder = ctx.settings.atlas.site_dir / atlas_id
    if not ATLAS_ID.fullmatch(atlas_id) or not (folder / "atlas.json").is_file():
        return _back(request, "/settings", f"not done: no site atlas {atlas_id!r} in {ctx.settings.atlas.site_dir}")

    def act() -> str:
        created: list[int] = []
        try:
            with ctx.sessions.begin() as s:
                pinned = pin_atlas(s, folder, request.state.user.name, lambda s, visit_id: created.append(
                    ctx.jobs.create(s, PROCESS_VISIT, target_of_visit(visit_id)).id))
                audit(s, actor=request.state.user.name, action="atlas use", target=f"atlas {pinned.atlas_id}",
                      detail=f"{len(pinned.queued)} visit(s) queued", remote=client_address(request))
        except AtlasError as exc:
            return f"not done: {exc}"
        for job_id in created:
            ctx.jobs.dispatch(job_id)
        return f"the study is measured with {pinned.atlas_id}; {len(pinned.queued)} visit(s) queued to be processed again"

    return _back(request, "/settings", await run_in_threadpool(act))


def site_atlases(folder: Path) -> list[Any]:
    """The atlases in ``[atlas] site_dir`` (one folder each), by id; a folder that is no atlas is left out."""
    from quant.atlas import AtlasError, read_manifest

    found = []
    if folder.is_dir():
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                found.append(read_manifest(path))
            except AtlasError:
                continue
    return found


async def corrections(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        rows = s.execute(select(m.Correction, m.Instance.sop_instance_uid).join(m.Instance)
                         .order_by(m.Correction.id.desc()).limit(300)).all()
        return {"rows": rows}
    return render(request, "corrections.html", **(await _read(request, work)))


async def audit_page(request: Request) -> Response:
    def work(s: Session) -> dict[str, Any]:
        return {"events": list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.id.desc()).limit(500)))}
    return render(request, "audit.html", **(await _read(request, work)))


ROUTES: list[RouteSpec] = [
    ("/login", login_form, ["GET"], Access(role=None)),
    ("/login", login, ["POST"], Access(role=None)),
    ("/logout", logout, ["POST"], VIEWER),
    ("/", dashboard, ["GET"], VIEWER),
    ("/studies", studies, ["GET"], VIEWER),
    ("/studies/{study_id:int}", study, ["GET"], VIEWER),
    ("/visits", visits, ["GET"], VIEWER),
    ("/visits/{visit_id:int}", visit, ["GET"], VIEWER),
    ("/visits/{visit_id:int}/viewer", visit_viewer, ["GET"], VIEWER),
    ("/visits/{visit_id:int}/qc/{name}", visit_picture, ["GET"], VIEWER),
    ("/visits/{visit_id:int}/review/roi", review_roi, ["POST"], OPERATOR),
    ("/visits/{visit_id:int}/review/accept", review_accept, ["POST"], OPERATOR),
    ("/visits/{visit_id:int}/review/reject", review_reject, ["POST"], OPERATOR),
    ("/jobs", jobs, ["GET"], VIEWER),
    ("/jobs/{job_id:int}/retry", job_retry, ["POST"], OPERATOR),
    ("/outbox", outbox, ["GET"], VIEWER),
    ("/outbox/retry", outbox_retry, ["POST"], OPERATOR),
    ("/outbox/{item_id:int}/retry", outbox_retry, ["POST"], OPERATOR),
    ("/patients", patients, ["GET"], VIEWER),
    ("/patients/{patient_id:int}/assign", patient_assign, ["POST"], OPERATOR),
    ("/reports", reports, ["GET"], VIEWER),
    ("/reports/{run_id:int}/{name}", report_file, ["GET"], VIEWER),
    ("/settings", settings_page, ["GET"], VIEWER),
    ("/settings/atlas/build", atlas_build, ["POST"], OPERATOR),
    ("/settings/atlas/use", atlas_use, ["POST"], OPERATOR),
    ("/corrections", corrections, ["GET"], VIEWER),
    ("/audit", audit_page, ["GET"], VIEWER),
]

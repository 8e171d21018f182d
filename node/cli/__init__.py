"""The ``myonode`` command line (Typer). Each command is a thin layer over a package function."""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from node import __version__
from node.cli.common import ConfigOption, console, err_console, masked_db, print_listing, sessions_of, settings_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(
    help="myonode: scanner-side DICOM processing node for whole-body muscle MRI.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store: migrations and status.", no_args_is_help=True)
app.add_typer(config_app, name="config")
jobs_app = typer.Typer(help="Processing jobs: list and retry.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
outbox_app = typer.Typer(help="Results waiting to be forwarded to PACS.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(outbox_app, name="outbox")
users_app = typer.Typer(help="Accounts of the web console and DICOMweb (roles viewer, operator).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")
stats_app = typer.Typer(help="Cohort statistics: the paper's Tables 1-5, predictors, MRC tests.", no_args_is_help=True)
app.add_typer(stats_app, name="stats")
report_app = typer.Typer(help="The cohort report: run it now, list past runs.", no_args_is_help=True)
app.add_typer(report_app, name="report")
import_app = typer.Typer(help="Import the study team's spreadsheets (one transaction per file).", no_args_is_help=True)
app.add_typer(import_app, name="import")

from node.cli.imaging import _check_size, atlas_app, phantom_app, process  # noqa: E402

app.add_typer(phantom_app, name="phantom")
app.add_typer(atlas_app, name="atlas")
app.command("process")(process)

@app.command()
def version() -> None:
    """Print the myonode version."""
    console.print(f"myonode {__version__}")


@config_app.command("check")
def config_check(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the effective settings as JSON")] = False,
) -> None:
    """Validate the settings file (with environment overrides) and print the effective settings, secrets masked."""
    settings = settings_of(config)
    data = settings.masked()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(f"[green]settings OK[/]: {settings.source}", highlight=False)
    for section, values in data.items():
        console.print(f"\n[bold]\\[{section}][/]")
        for key, value in values.items():
            console.print(f"[cyan]{key}[/] = {json.dumps(value)}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or upgrade the database to the newest schema."""
    from storage.database import make_engine
    from storage.migrate import current_revision, upgrade

    settings = settings_of(config)
    engine = make_engine(settings.storage.database_url)
    before = current_revision(engine)
    after = upgrade(engine)
    console.print(f"database {masked_db(settings)}: {before or 'empty'} -> {after}", highlight=False)


@db_app.command("status")
def db_status(config: ConfigOption = None) -> None:
    """Show the schema revision and how many rows each table holds."""
    from sqlalchemy import func, inspect, select

    from storage.database import make_engine
    from storage.migrate import current_revision, head_revision
    from storage.models import Base

    settings = settings_of(config)
    engine = make_engine(settings.storage.database_url)
    current, head = current_revision(engine), head_revision()
    state = "up to date" if current == head else "needs `myonode db upgrade`"
    console.print(f"database {masked_db(settings)}", highlight=False)
    console.print(f"schema revision {current or 'none (empty)'}, newest {head}: {state}")
    if current is None:
        raise typer.Exit(1)
    present = set(inspect(engine).get_table_names())
    table = Table("table", "rows")
    with engine.connect() as conn:
        for name, tbl in Base.metadata.tables.items():
            rows = conn.execute(select(func.count()).select_from(tbl)).scalar_one() if name in present else "missing"
            table.add_row(name, str(rows))
    console.print(table)
    if current != head:
        raise typer.Exit(1)


def _configure_logging(level: str) -> None:
    """The log format of `serve` and `worker`; pynetdicom (every PDU) and highdicom (every attribute it copies)
    speak at WARNING and up, whatever the level asked for."""
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("pynetdicom", "highdicom"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


@app.command()
def serve(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run the DICOM node (listener, storage, index) until stopped with Ctrl-C or SIGTERM."""
    from node.demo.fallback_atlas import with_default_atlas
    from node.service import serve_forever

    settings = settings_of(config)
    _configure_logging(log_level)
    serve_forever(with_default_atlas(settings))


@app.command()
def web(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Serve the web console, DICOMweb and /metrics alone, on the node's database and store ([web] settings)."""
    from node.service import web_forever

    settings = settings_of(config)
    _configure_logging(log_level)
    web_forever(settings)


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


def _account_session(config: Path | None) -> AbstractContextManager[Session]:
    from storage.database import make_engine, session_factory, transaction
    from storage.migrate import upgrade

    engine = make_engine(settings_of(config).storage.database_url)
    upgrade(engine)
    return transaction(session_factory(engine))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="account name")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (also retries, assigns, stores)")] = "viewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    config: ConfigOption = None,
) -> None:
    """Add an account (the password is asked for twice unless --password-stdin)."""
    from node.web.accounts import AccountError, add_user, audit
    from storage import models as m

    try:
        chosen = m.Role(role)
    except ValueError:
        err_console.print(f"error: role {role!r}: use viewer or operator", markup=False)
        raise typer.Exit(2) from None
    password = _password(password_stdin)
    try:
        with _account_session(config) as s:
            add_user(s, name=name, password=password, role=chosen)
            audit(s, actor=f"cli:{getpass.getuser()}", action="account added", target=name, detail=chosen.value)
    except AccountError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(f"account {name} ({chosen.value}) added")


@users_app.command("password")
def users_password(
    name: Annotated[str, typer.Argument(help="account name")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    config: ConfigOption = None,
) -> None:
    """Set an account's password."""
    from node.web.accounts import AccountError, audit, set_password

    password = _password(password_stdin)
    try:
        with _account_session(config) as s:
            set_password(s, name=name, password=password)
            audit(s, actor=f"cli:{getpass.getuser()}", action="password set", target=name)
    except AccountError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(f"password of {name} set")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="account name")], config: ConfigOption = None) -> None:
    """Disable an account (it can no longer sign in; its audit records stay)."""
    from node.web.accounts import AccountError, audit, disable

    try:
        with _account_session(config) as s:
            disable(s, name)
            audit(s, actor=f"cli:{getpass.getuser()}", action="account disabled", target=name)
    except AccountError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(f"account {name} disabled")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """The accounts, their roles and last sign-in."""
    from sqlalchemy import select

    from storage import models as m

    print_listing(config, ("account", "role", "disabled", "created", "last sign-in"), lambda s: (
        (u.name, u.role.value, "yes" if u.disabled else "", u.created_at.strftime("%Y-%m-%d"),
         u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-")
        for u in s.scalars(select(m.User).order_by(m.User.name))))


@app.command()
def listen(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Accept associations on serve's port beside it (serve starts these when [node] listener_processes > 1)."""
    from node.service import listen_forever

    settings = settings_of(config)
    _configure_logging(log_level)
    try:
        listen_forever(settings)
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command()
def worker(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run job consumers: on the Redis queue (any number of machines) or the SQLite queue (the node's host)."""
    from node.demo.fallback_atlas import with_default_atlas
    from node.service import work_forever

    settings = settings_of(config)
    _configure_logging(log_level)
    try:
        work_forever(with_default_atlas(settings))
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@jobs_app.command("list")
def jobs_list(
    config: ConfigOption = None,
    state: Annotated[str | None, typer.Option(help="queued, running, done or failed")] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """Show jobs: kind, target, state, attempts, worker, last error."""
    from sqlalchemy import select

    from storage import models as m

    q = select(m.Job).order_by(m.Job.id.desc()).limit(limit)
    if state:
        q = q.where(m.Job.state == m.JobState(state))
    print_listing(config, ("id", "kind", "target", "state", "attempts", "worker", "updated", "last error"), lambda s: (
        (str(job.id), job.kind, job.target, job.state.value, f"{job.attempts}/{job.max_attempts}",
         job.lease_owner or "-", job.updated_at.strftime("%Y-%m-%d %H:%M:%S"), job.last_error or "")
        for job in s.scalars(q)))


@jobs_app.command("retry")
def jobs_retry(job_id: Annotated[int, typer.Argument(help="job id")], config: ConfigOption = None) -> None:
    """Queue a job again with its attempts reset (e.g. after fixing what made it fail)."""
    from node.service import open_jobs

    _, jobs = open_jobs(settings_of(config))
    try:
        jobs.retry(job_id)
    except (LookupError, ValueError) as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(f"job {job_id} queued again")


@app.command()
def echo(
    peer: Annotated[str, typer.Argument(help="AE@host:port, e.g. PACS@10.0.0.20:104")],
    calling_ae: Annotated[str, typer.Option("--calling-ae", help="our AE title for this check")] = "MYONODE",
    timeout: Annotated[float, typer.Option(help="seconds")] = 10.0,
) -> None:
    """Check a DICOM peer with C-ECHO; exit status 0 when it answers Success."""
    from node.dimse.scu import echo as c_echo
    from node.dimse.scu import parse_peer

    try:
        ae_title, host, port = parse_peer(peer)
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    ok, message = c_echo(ae_title, host, port, calling_ae=calling_ae, timeout=timeout)
    (console if ok else err_console).print(message, markup=False, highlight=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def status(config: ConfigOption = None, limit: Annotated[int, typer.Option(help="studies to list")] = 50) -> None:
    """What was received, what is pending, processing, done or failed; patients not mapped to a subject."""
    from sqlalchemy import select

    from node.intake.overview import node_status
    from storage import models as m
    from storage.journal import Journal

    settings = settings_of(config)
    with sessions_of(settings)() as session:
        st = node_status(session, limit)
    console.print(
        f"{st.instances} instances stored ({st.bytes_stored / 1e6:.1f} MB), {st.conflicts} re-sent with new content"
    )
    table = Table("patient", "subject", "visit", "state", "study date", "series (T2/DWI)", "instances", "last received")
    for line in st.studies:
        table.add_row(
            line.patient_id, line.subject or "-", line.visit or "-", line.visit_state or "-", line.study_date,
            f"{line.series} ({line.t2_series}/{line.dwi_series})", str(line.instances),
            line.last_received_at.strftime("%Y-%m-%d %H:%M:%S") if line.last_received_at else "-",
        )
    console.print(table)
    jobs = ", ".join(f"{k.value} {v}" for k, v in sorted(st.jobs.items())) or "none"
    outbox = ", ".join(f"{k.value} {v}" for k, v in sorted(st.outbox.items())) or "empty"
    kinds = ", ".join(f"{k.value} {n} series / {i} instances" for k, (n, i) in sorted(st.kinds.items())) or "none"
    console.print(f"jobs: {jobs}\noutbox: {outbox}\nby classification: {kinds}", highlight=False)
    if st.other_classes:
        console.print("other (stored, served, never processed): "
                      + ", ".join(f"{name} {n}" for name, n in st.other_classes.items()), highlight=False)
    if st.unknown_patients:
        console.print(f"patients not mapped to a study subject: {', '.join(st.unknown_patients)}", highlight=False)
    with sessions_of(settings)() as session:
        corrections = [(c.id, c.state, c.reason) for c in session.scalars(select(m.Correction).order_by(m.Correction.id))]
    if corrections:
        console.print("corrections sent back: " + ", ".join(
            f"{state.value} {sum(1 for _, st, _ in corrections if st is state)}" for state in m.CorrectionState
            if any(st is state for _, st, _ in corrections)), highlight=False)
        for cid, state, reason in corrections:
            if state is m.CorrectionState.REFUSED:
                console.print(f"  correction {cid} refused: {reason}", highlight=False)
    journal = Journal(settings.storage.root)
    pending, failures = len(journal.pending()), journal.failures()
    console.print(f"journal: {pending} received, not yet indexed; {len(failures)} set aside", highlight=False)
    for path, reason in failures:
        console.print(f"  set aside: {path}: {reason}", highlight=False)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option(help="where the demo keeps its settings, database and files")] = Path("var/demo"),
    size: Annotated[str, typer.Option(envvar="DEMO_SIZE", help="phantom size: small or full")] = "small",
    subjects: Annotated[int, typer.Option(envvar="DEMO_SUBJECTS", help="cohort size (60 % patients)")] = 10,
) -> None:
    """The whole story: phantom scanner → node → quantification → PACS → cohort report (see node/demo.py)."""
    from node.demo.scenario import DemoError, run_demo

    patients = max(1, round(subjects * 0.6)) if subjects != 51 else 29
    try:
        run_demo(folder.resolve(), console, size=_check_size(size), patients=patients,
                 controls=max(1, subjects - patients))
    except DemoError as exc:
        err_console.print(f"demo failed: {exc}", markup=False)
        raise typer.Exit(1) from None


@outbox_app.command("list")
def outbox_list(
    config: ConfigOption = None,
    state: Annotated[str | None, typer.Option(help="pending, sent or failed")] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """Show outbox items: destination, instance, state, attempts, next try, last error."""
    from sqlalchemy import select

    from storage import models as m

    q = select(m.OutboxItem, m.Instance.sop_instance_uid).join(m.Instance).order_by(m.OutboxItem.id.desc()).limit(limit)
    if state:
        q = q.where(m.OutboxItem.state == m.OutboxState(state))
    print_listing(config, ("id", "destination", "SOP instance", "state", "attempts", "next try", "last error"),
                  lambda s: ((str(item.id), item.destination, sop, item.state.value, str(item.attempts),
                              item.next_try_at.strftime("%Y-%m-%d %H:%M:%S") if item.state.value == "pending" else "-",
                              item.last_error or "") for item, sop in s.execute(q)))


@outbox_app.command("retry")
def outbox_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="item ids (default: every failed item)")] = None,
    config: ConfigOption = None,
) -> None:
    """Make failed items (or the given ones) due again, with their attempts reset."""
    from node.work.outbox import retry
    from storage.database import transaction

    settings = settings_of(config)
    with transaction(sessions_of(settings)) as s:
        n = retry(s, ids)
    console.print(f"{n} outbox item(s) queued again")


@stats_app.command("run")
def stats_run(
    out: Annotated[Path, typer.Option("--out", help="folder for the CSV files and run.json")],
    subjects: Annotated[Path | None, typer.Option("--subjects", help="subjects.csv (with --observations)")] = None,
    observations: Annotated[Path | None, typer.Option("--observations", help="observations.csv")] = None,
    config: ConfigOption = None,
) -> None:
    """Compute every table from CSV files, or from the database when no files are given."""
    from stats.inputs import InputError, read_cohort
    from stats.run import write_run

    settings = settings_of(config)
    visits = [w.label for w in settings.visits.windows]
    if (subjects is None) != (observations is None):
        err_console.print("error: give both --subjects and --observations, or neither", markup=False)
        raise typer.Exit(2)
    if subjects is not None and observations is not None:
        try:
            cohort = read_cohort(subjects, observations, visits)
        except InputError as exc:
            err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        source = f"{subjects}, {observations}"
    else:
        from node.work.atlas_in_use import atlas_id_in_use
        from stats.cohort import atlas_mix, cohort_from_db

        with sessions_of(settings)() as s:
            mixed = atlas_mix(s, None, atlas_id_in_use(s, settings.atlas))
            cohort = cohort_from_db(s, visits)
        if mixed is not None:
            err_console.print(f"error: {mixed}", markup=False, soft_wrap=True)
            raise typer.Exit(2)
        source = masked_db(settings)
    result = write_run(cohort, out, source)
    console.print(f"wrote {len(result.frames)} tables to {out} ({len(result.warnings)} warning(s), see run.json)",
                  highlight=False)


def _import(kind: str, path: Path, config: Path | None) -> None:
    from stats.importer import import_observations, import_subjects
    from stats.inputs import InputError
    from storage.database import make_engine, session_factory, transaction
    from storage.migrate import upgrade

    settings = settings_of(config)
    engine = make_engine(settings.storage.database_url)
    upgrade(engine)
    visits = [w.label for w in settings.visits.windows]
    try:
        with transaction(session_factory(engine)) as s:
            summary = (import_subjects(s, path) if kind == "subjects"
                       else import_observations(s, path, kind, visits))  # type: ignore[arg-type]
    except InputError as exc:
        err_console.print(f"error: {exc}\nnothing was imported", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"{path}: {summary}", highlight=False)


@import_app.command("subjects")
def import_subjects_cmd(file: Annotated[Path, typer.Argument(help="subjects.csv")], config: ConfigOption = None) -> None:
    """subject_id, group, sex, age, onset_site, onset_side, diagnosis[, patient_ids (;-separated DICOM Patient IDs)]."""
    _import("subjects", file, config)


@import_app.command("clinical")
def import_clinical_cmd(file: Annotated[Path, typer.Argument(help="tidy or one-row-per-visit CSV")],
                        config: ConfigOption = None) -> None:
    """ALSFRS-R, MRC, MRC_sum, dynamometry, weight (tidy long form or one row per visit)."""
    _import("clinical", file, config)


@import_app.command("ephys")
def import_ephys_cmd(file: Annotated[Path, typer.Argument(help="tidy or one-row-per-visit CSV")],
                     config: ConfigOption = None) -> None:
    """MUNIX, MUSIX, CMAP per muscle and side (tidy long form or one row per visit)."""
    _import("ephys", file, config)


@report_app.command("run")
def report_run(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option("--force", help="run even if no complete visit changed")] = False,
) -> None:
    """Run the cohort statistics and report now (over complete visits only)."""
    from node.work.reports import run_report
    from storage.database import make_engine
    from storage.migrate import upgrade

    settings = settings_of(config)
    upgrade(make_engine(settings.storage.database_url))
    row = run_report(settings, force=force)
    if row is None:
        console.print("nothing to do: no complete visit changed since the last report (use --force to run anyway)")
    elif row.state.value == "failed":
        err_console.print(f"report run {row.id} failed: {row.error}", markup=False)
        raise typer.Exit(1)
    else:
        console.print(f"report run {row.id}: {row.output_dir}/report.html (and report.pdf, tables, run.json)",
                      highlight=False)


@report_app.command("list")
def report_list(config: ConfigOption = None, limit: Annotated[int, typer.Option()] = 20) -> None:
    """Past report runs: when, state, inputs digest, folder."""
    from sqlalchemy import select

    from storage import models as m

    print_listing(config, ("id", "started", "state", "forced", "inputs", "folder / error"), lambda s: (
        (str(run.id), run.started_at.strftime("%Y-%m-%d %H:%M:%S"), run.state.value, "yes" if run.forced else "",
         run.input_digest[:12], run.output_dir or run.error or "")
        for run in s.scalars(select(m.StatsRun).order_by(m.StatsRun.id.desc()).limit(limit))))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

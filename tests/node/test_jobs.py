"""Durable jobs on both queue backends: SQLite (in-process consumers) and the real Redis server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from node.settings import load_settings
from node.work.jobs import JobContext, JobQueue
from storage import models as m
from storage.database import make_engine, session_factory, transaction
from storage.filestore import FileStore
from storage.migrate import upgrade


@pytest.fixture(params=["sqlite", "redis"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path):
    queues: list[JobQueue] = []

    def make(handlers: dict[str, Callable[[JobContext, str], None]]) -> JobQueue:
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            queue = f'backend = "redis"\nurl = "{url}"\nname = "myonode-test-{uuid.uuid4().hex}"\n'
        else:
            queue = 'backend = "sqlite"\nurl = "sqlite:///queue.db"\n'
        (tmp_path / "settings.toml").write_text(
            f'[storage]\nroot = "store"\ndatabase_url = "sqlite:///db.sqlite"\n[queue]\n{queue}workers = 2\n')
        settings = load_settings(tmp_path / "settings.toml", environ={})
        engine = make_engine(settings.storage.database_url)
        upgrade(engine)
        jq = JobQueue(JobContext(settings=settings, sessions=session_factory(engine), store=FileStore(settings.storage.root)), handlers)
        jq.huey.flush()  # a clean queue
        queues.append(jq)
        return jq

    yield make
    for jq in queues:
        jq.stop_consumers()
        jq.huey.flush()


def wait_state(jq: JobQueue, job_id: int, state: m.JobState, timeout: float = 30) -> m.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with jq.ctx.sessions() as s:
            job = s.get(m.Job, job_id)
            if job is not None and job.state is state:
                return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {state}")


def test_job_runs_once_and_is_recorded(make_queue) -> None:
    """A dispatched job runs in a consumer, exactly once even when dispatched twice; the row says done."""
    calls: list[str] = []
    jq = make_queue({"probe": lambda ctx, target: calls.append(target)})
    jq.start_consumers(2)
    job_id = jq.submit("probe", "visit:7")
    jq.dispatch(job_id)  # a duplicate dispatch (e.g. recovery racing the original)
    job = wait_state(jq, job_id, m.JobState.DONE)
    time.sleep(0.5)
    assert calls == ["visit:7"]
    assert job.attempts == 1 and job.finished_at is not None and job.lease_owner is None


def test_failing_job_retried_then_failed_with_error(make_queue, monkeypatch) -> None:
    monkeypatch.setattr("node.work.jobs.RETRY_DELAY_S", 0.05)

    def broken(ctx: JobContext, target: str) -> None:
        raise RuntimeError(f"cannot read series for {target}")

    jq = make_queue({"probe": broken})
    jq.start_consumers(1)
    job_id = jq.submit("probe", "visit:3", max_attempts=2)
    job = wait_state(jq, job_id, m.JobState.FAILED)
    assert job.attempts == 2 and "RuntimeError: cannot read series for visit:3" in job.last_error
    # Retried by hand (myonode jobs retry) after the cause is fixed:
    jq.handlers["probe"] = lambda ctx, target: None
    jq.retry(job_id)
    assert wait_state(jq, job_id, m.JobState.DONE).attempts == 1


def test_job_of_dead_worker_is_recovered(make_queue) -> None:
    """A job left 'running' by a worker that died is queued again on start and completes."""
    calls: list[str] = []
    jq = make_queue({"probe": lambda ctx, target: calls.append(target)})
    with transaction(jq.ctx.sessions) as s:
        job = m.Job(kind="probe", target="visit:1", state=m.JobState.RUNNING, attempts=1,
                    lease_owner=f"{__import__('socket').gethostname()}:999999")
        s.add(job)
        s.flush()
        job_id = job.id
    jq.start_consumers(1)
    assert jq.recover() == [job_id]
    wait_state(jq, job_id, m.JobState.DONE)
    assert calls == ["visit:1"]


def test_cohort_report_is_scheduled_by_the_settings_cron(tmp_path: Path) -> None:
    """The [schedule] cron expression drives the Huey periodic task that runs the report."""
    from datetime import datetime

    (tmp_path / "settings.toml").write_text('[storage]\ndatabase_url = "sqlite:///db.sqlite"\n'
                                            '[schedule]\ncohort_report = "15 3 * * 1-5"\n')
    settings = load_settings(tmp_path / "settings.toml", environ={})
    engine = make_engine(settings.storage.database_url)
    jq = JobQueue(JobContext(settings=settings, sessions=session_factory(engine), store=FileStore(settings.storage.root)))
    def due(when: datetime) -> bool:
        return any(task.name == "myonode.cohort_report" for task in jq.huey.read_periodic(when))

    assert due(datetime(2026, 11, 24, 3, 15))  # a Tuesday
    assert not due(datetime(2026, 11, 24, 3, 16)) and not due(datetime(2026, 11, 22, 3, 15))  # Sunday


def test_serve_runs_jobs_in_its_worker_processes_and_stops_them(running_node) -> None:
    """[queue] processes: with no consumer thread in the node, a job still runs — in a `myonode worker` process
    the node started — and stopping the node stops that process."""
    import time

    from sqlalchemy import select

    from node.work.jobs import PROCESS_VISIT, target_of_visit
    from storage import models as m

    node = running_node(queue='backend = "sqlite"\nurl = "sqlite:///queue.db"\nworkers = 0\nprocesses = 1\n')
    assert len(node.worker_processes.processes) == 1
    job_id = node.jobs.submit(PROCESS_VISIT, target_of_visit(999), max_attempts=1)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        node.settle()
        with node.sessions() as s:
            job = s.scalars(select(m.Job).where(m.Job.id == job_id)).one()
        if job.state is m.JobState.FAILED:
            break
        time.sleep(0.2)
    assert job.state is m.JobState.FAILED and "visit 999 does not exist" in (job.last_error or "")
    worker = node.worker_processes.processes[0]
    node.stop()
    assert worker.poll() is not None


def test_a_worker_process_that_dies_is_started_again(running_node) -> None:
    """A killed `myonode worker` (out of memory, a crash) is replaced, and jobs still run."""
    import signal
    import time

    from sqlalchemy import select

    from node.work.jobs import PROCESS_VISIT, target_of_visit
    from storage import models as m

    node = running_node(queue='backend = "sqlite"\nurl = "sqlite:///queue.db"\nworkers = 0\nprocesses = 1\n')
    supervisor = node.worker_processes
    supervisor.restart_after_s = 0.5
    first = supervisor.processes[0]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    deadline = time.monotonic() + 30
    while supervisor.processes[0] is first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert supervisor.processes[0] is not first and supervisor.restarts == 1
    job_id = node.jobs.submit(PROCESS_VISIT, target_of_visit(998), max_attempts=1)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        node.settle()
        with node.sessions() as s:
            state = s.scalars(select(m.Job.state).where(m.Job.id == job_id)).one()
        if state is m.JobState.FAILED:
            break
        time.sleep(0.2)
    assert state is m.JobState.FAILED  # run (and failed: visit 998 does not exist) by the new worker

"""The installed `myonode` command: version, config check, db upgrade/status, on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from storage.migrate import head_revision

REPO = Path(__file__).resolve().parents[2]
MYONODE = shutil.which("myonode", path=str(Path(os.sys.executable).parent)) or "myonode"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    return subprocess.run([MYONODE, *args], capture_output=True, text=True, env={**base, **(env or {})}, cwd=cwd, check=False)


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    shutil.copy(REPO / "settings.toml", path)
    return path


def test_help_lists_only_working_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("version", "config", "db", "serve", "worker", "status", "echo", "jobs", "outbox", "demo"):
        assert command in out.stdout


def test_version() -> None:
    out = run("version")
    assert out.returncode == 0 and out.stdout.startswith("myonode 0.")


def test_config_check_prints_effective_settings(settings_file: Path) -> None:
    """config check validates, applies environment overrides and masks passwords."""
    env = {"MYONODE_NODE__PORT": "11113", "MYONODE_STORAGE__DATABASE_URL": "postgresql+psycopg://u:hunter2@db/x"}
    out = run("config", "check", "--config", str(settings_file), "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["node"]["port"] == 11113
    assert data["storage"]["database_url"] == "postgresql+psycopg://u:***@db/x"
    assert data["storage"]["root"] == str(settings_file.parent / "var" / "store")
    human = run("config", "check", "--config", str(settings_file), env=env)
    assert "settings OK" in human.stdout and "hunter2" not in human.stdout


def test_config_check_finds_settings_via_environment(settings_file: Path, tmp_path: Path) -> None:
    out = run("config", "check", env={"MYONODE_CONFIG": str(settings_file)}, cwd=Path("/"))
    assert out.returncode == 0 and str(settings_file) in out.stdout


def test_config_check_bad_value_exits_2_naming_key_and_file(settings_file: Path) -> None:
    settings_file.write_text(settings_file.read_text().replace("max_associations = 8", "max_associations = 0"))
    out = run("config", "check", "--config", str(settings_file))
    assert out.returncode == 2
    assert f"{settings_file}: [node] max_associations: Input should be greater than or equal to 1" in out.stderr


def test_db_upgrade_then_status(settings_file: Path) -> None:
    """db status reports an empty database as needing upgrade; after upgrade it lists every table."""
    before = run("db", "status", "--config", str(settings_file))
    assert before.returncode == 1 and "none (empty)" in before.stdout
    up = run("db", "upgrade", "--config", str(settings_file))
    assert up.returncode == 0 and f"empty -> {head_revision()}" in up.stdout
    assert (settings_file.parent / "var" / "myonode.db").is_file()
    status = run("db", "status", "--config", str(settings_file))
    assert status.returncode == 0 and "up to date" in status.stdout
    for table in ("instances", "measurements", "outbox", "stats_runs"):
        assert table in status.stdout


def test_status_jobs_outbox_on_empty_node(settings_file: Path) -> None:
    """The operator commands work on a fresh database and say so plainly."""
    assert run("db", "upgrade", "--config", str(settings_file)).returncode == 0
    status = run("status", "--config", str(settings_file))
    assert status.returncode == 0 and "0 instances stored" in status.stdout and "jobs: none" in status.stdout
    assert "journal: 0 received, not yet indexed; 0 set aside" in status.stdout
    jobs = run("jobs", "list", "--config", str(settings_file))
    assert jobs.returncode == 0 and "kind" in jobs.stdout
    missing = run("jobs", "retry", "42", "--config", str(settings_file))
    assert missing.returncode == 1 and "job 42 does not exist" in missing.stderr
    retry = run("outbox", "retry", "--config", str(settings_file))
    assert retry.returncode == 0 and "0 outbox item(s) queued again" in retry.stdout


def test_echo_command_reports_unreachable_peer() -> None:
    out = run("echo", "PACS@127.0.0.1:1", "--timeout", "2")
    assert out.returncode == 1 and "PACS@127.0.0.1:1" in out.stderr
    bad = run("echo", "not-a-peer")
    assert bad.returncode == 2 and "AE@host:port" in bad.stderr


def test_worker_on_the_sqlite_queue_starts_and_stops_on_sigterm(settings_file: Path) -> None:
    """`myonode worker` consumes the node's own SQLite queue (serve starts it so, [queue] processes) and ends at
    once on SIGTERM, the signal serve stops it with."""
    import signal
    import time

    assert run("db", "upgrade", "--config", str(settings_file)).returncode == 0
    base = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    proc = subprocess.Popen([MYONODE, "worker", "--config", str(settings_file)], stderr=subprocess.PIPE, text=True,
                            env=base, cwd=settings_file.parent)
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "periodic tasks are" not in seen.lower() and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stderr.readline()
        assert "consumer started with 1 thread" in seen.lower(), seen
        time.sleep(1.0)  # Huey installs its signal handlers just after logging its start
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_status_lists_what_is_not_processed_by_kind_and_sop_class(node, tmp_path: Path) -> None:
    """A CT image and an RT plan from other vendors (pydicom's test files) are stored and counted as other."""
    import pydicom

    from tests.support.dcmtk import dcmtk

    files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("CT_small.dcm", "rtplan.dcm"):
        sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                     str(files / name))
        assert sent.returncode == 0, sent.stdout
    status = run("status", "--config", str(node.settings.source))
    assert status.returncode == 0, status.stderr
    assert "other 2 series / 2 instances" in status.stdout
    assert "CT Image Storage 1" in status.stdout and "RT Plan Storage 1" in status.stdout


def test_users_add_list_disable_and_the_console_alone_signs_them_in(settings_file: Path) -> None:
    """`myonode users` manages accounts (a short password or a bad role is refused); `myonode web` serves the
    console on its own, and a disabled account can no longer sign in."""
    import time

    import httpx

    from node.demo.ports import free_port
    from tests.support.console import post_login

    port = free_port()
    settings_file.write_text(settings_file.read_text().replace("port = 8080", f"port = {port}"))
    cfg = ("--config", str(settings_file))
    short = subprocess.run([MYONODE, "users", "add", "ana", "--role", "operator", "--password-stdin", *cfg],
                           input="short\n", capture_output=True, text=True, check=False)
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    bad_role = run("users", "add", "ana", "--role", "admin", "--password-stdin", *cfg)
    assert bad_role.returncode == 2 and "use viewer or operator" in bad_role.stderr
    added = subprocess.run([MYONODE, "users", "add", "ana", "--role", "operator", "--password-stdin", *cfg],
                           input="a good long password\n", capture_output=True, text=True, check=False)
    assert added.returncode == 0 and "account ana (operator) added" in added.stdout
    again = subprocess.run([MYONODE, "users", "add", "ana", "--password-stdin", *cfg], input="another password\n",
                           capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "exists already" in again.stderr
    listing = run("users", "list", *cfg)
    assert listing.returncode == 0 and "ana" in listing.stdout and "operator" in listing.stdout

    web = subprocess.Popen([MYONODE, "web", *cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and web.poll() is None, "myonode web did not start"
                time.sleep(0.2)
        browser = httpx.Client(base_url=f"http://127.0.0.1:{port}")
        assert post_login(browser, "ana", "a good long password").status_code == 303
        assert browser.get("/audit").status_code == 200
        assert run("users", "disable", "ana", *cfg).returncode == 0
        assert browser.get("/audit", follow_redirects=False).status_code == 303  # its session ended at once
        refused = post_login(httpx.Client(base_url=f"http://127.0.0.1:{port}"), "ana", "a good long password")
        assert refused.status_code == 401
    finally:
        web.terminate()
        web.wait(timeout=30)

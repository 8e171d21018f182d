"""The cohort report from the database: runs once per change, dated folders, HTML in Chromium, PDF to PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from node.settings import load_settings
from node.work.reports import run_report
from phantom.cohort_model import simulate_cohort
from storage import models as m
from storage.database import make_engine, session_factory, transaction
from storage.migrate import upgrade
from tests.support.load_db import load_cohort

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path):
    (tmp_path / "settings.toml").write_text('[storage]\ndatabase_url = "sqlite:///db.sqlite"\nroot = "store"\n'
                                            '[report]\nout = "reports"\n')
    st = load_settings(tmp_path / "settings.toml", environ={})
    engine = make_engine(st.storage.database_url)
    upgrade(engine)
    sim = simulate_cohort(seed=4, patients=12, controls=8)
    with transaction(session_factory(engine)) as s:
        load_cohort(s, sim.subjects, sim.observations, skip_ephys={("P001", "m4")})
    return st


def runs(settings) -> list[m.StatsRun]:
    with session_factory(make_engine(settings.storage.database_url))() as s:
        return list(s.scalars(select(m.StatsRun).order_by(m.StatsRun.id)))


def test_report_runs_once_per_change_and_lists_incomplete_visits(settings) -> None:
    first = run_report(settings)
    assert first is not None and first.state is m.RunState.DONE
    folder = Path(first.output_dir)
    for name in ("report.html", "report.pdf", "table1.csv", "table5.csv", "predictors.csv", "run.json"):
        assert (folder / name).is_file(), name
    html = (folder / "report.html").read_text()
    assert "Table 1" in html and "Figure 3" in html and "data:image/png;base64," in html
    assert "P001" in html and "ephys" in html  # the incomplete visit is listed with what it lacks
    assert run_report(settings) is None  # nothing changed: no second run
    forced = run_report(settings, force=True)
    assert forced is not None and forced.id == first.id + 1 and Path(forced.output_dir) != folder
    assert [r.state for r in runs(settings)] == [m.RunState.DONE, m.RunState.DONE]


def test_a_cohort_measured_with_two_atlases_is_not_reported_and_the_failed_run_says_which_visits_wait(
        settings) -> None:
    good = run_report(settings)
    engine = make_engine(settings.storage.database_url)
    with transaction(session_factory(engine)) as s:
        rows = list(s.scalars(select(m.Measurement)))
        visit = rows[0].visit_fk
        for row in rows:
            row.atlas_id = "site-atlas-1" if row.visit_fk == visit else "site-atlas-2"
    failed = run_report(settings, force=True)
    assert failed is not None and failed.state is m.RunState.FAILED
    assert failed.error.startswith("not run: the measurements come from 2 atlases") and "site-atlas-1" in failed.error
    assert sorted(p.name for p in Path(settings.report.out).iterdir()) == [Path(good.output_dir).name]


def test_failed_run_keeps_previous_report(settings, monkeypatch) -> None:
    good = run_report(settings)
    monkeypatch.setattr("node.work.reports.write_report", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    failed = run_report(settings, force=True)
    assert failed.state is m.RunState.FAILED and "RuntimeError: disk full" in failed.error
    assert (Path(good.output_dir) / "report.html").is_file()
    assert sorted(p.name for p in Path(settings.report.out).iterdir()) == [Path(good.output_dir).name]


def test_html_renders_in_chromium_and_pdf_converts(settings, tmp_path: Path) -> None:
    """Headless Chromium loads the page without console errors and screenshots it; pdftoppm renders page 1."""
    row = run_report(settings)
    folder = Path(row.output_dir)
    chromium = shutil.which("chromium") or pytest.fail("chromium missing: make test installs it")
    shot = tmp_path / "report.png"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0", "--window-size=1280,1000",
         f"--screenshot={shot}", (folder / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    pdftoppm = shutil.which("pdftoppm") or pytest.fail("pdftoppm missing: make test installs poppler-utils")
    subprocess.run([pdftoppm, "-png", "-r", "50", "-f", "1", "-l", "1", str(folder / "report.pdf"),
                    str(tmp_path / "page")], check=True)
    assert list(tmp_path.glob("page*.png"))


def test_report_cli(settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    myonode = str(Path(sys.executable).parent / "myonode")
    out = subprocess.run([myonode, "report", "run", "--config", str(settings.source)], capture_output=True, text=True,
                         env=env, check=False)
    assert out.returncode == 0 and "report.html" in out.stdout, out.stderr
    again = subprocess.run([myonode, "report", "run", "--config", str(settings.source)], capture_output=True,
                           text=True, env=env, check=False)
    assert "nothing to do" in again.stdout
    listing = subprocess.run([myonode, "report", "list", "--config", str(settings.source)], capture_output=True,
                             text=True, env=env, check=False)
    assert listing.returncode == 0 and "done" in listing.stdout


def test_report_pdf_as_encapsulated_pdf_to_pacs(tmp_path: Path) -> None:
    """With send_pdf_to_pacs the PDF is stored as a valid Encapsulated PDF and queued for each destination."""
    (tmp_path / "settings.toml").write_text(
        '[storage]\ndatabase_url = "sqlite:///db.sqlite"\nroot = "store"\n[report]\nout = "reports"\n'
        'send_pdf_to_pacs = true\n[forward]\n[[forward.destinations]]\nname = "pacs"\nae_title = "PACS"\n'
        'host = "127.0.0.1"\nport = 104\n')
    st = load_settings(tmp_path / "settings.toml", environ={})
    engine = make_engine(st.storage.database_url)
    upgrade(engine)
    sim = simulate_cohort(seed=5, patients=6, controls=4)
    with transaction(session_factory(engine)) as s:
        load_cohort(s, sim.subjects, sim.observations)
    row = run_report(st)
    assert row.state is m.RunState.DONE
    with session_factory(engine)() as s:
        result = s.scalars(select(m.ResultObject)).one()
        item = s.scalars(select(m.OutboxItem)).one()
        instance = s.get(m.Instance, result.instance_fk)
        assert result.kind is m.ResultKind.REPORT_PDF and item.destination == "pacs"
        path = Path(st.storage.root) / instance.file_path
    dciodvfy = shutil.which("dciodvfy") or pytest.fail("dciodvfy missing: make test installs dicom3tools")
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    assert "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
    from pydicom import dcmread

    ds = dcmread(path)
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == (Path(row.output_dir) / "report.pdf").read_bytes()

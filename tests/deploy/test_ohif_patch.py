"""deploy/ohif/patch.py: OHIF's stack viewport scroll timer mended in the page's bundle, renamed by its new hash."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.web.viewer import OHIF_DIST

ROOT = Path(__file__).parents[2]
PATCH = ROOT / "deploy/ohif/patch.py"
TIMER = """            this.debouncedTimeout = window.setTimeout(() => {
                this.setImageIdIndex(newTargetImageIdIndex);
            }, 40);"""
GUARD = "if (this.isDisabled) return; // myonode, deploy/ohif/patch.py: cornerstonejs/cornerstone3D#2884"


def run(dist: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PATCH), str(dist)], capture_output=True, text=True, check=False)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A build shaped as @ohif/app 3.13.2's: index.html and sw.js name the page's bundle, which holds the timer."""
    (tmp_path / "app.bundle.0f6159c501addfe9.js").write_text(f"scroll() {{\n{TIMER}\n}}\n")
    (tmp_path / "2493.bundle.c4af70e46357151f.js").write_text(f"// worker chunk\n{TIMER}\n")
    (tmp_path / "index.html").write_text('<script defer src="/app.bundle.0f6159c501addfe9.js"></script>')
    (tmp_path / "sw.js").write_text('[{"url":"/app.bundle.0f6159c501addfe9.js","revision":null}]')
    return tmp_path


def test_the_pages_bundle_gets_the_guard_and_a_new_hashed_name_that_index_and_service_worker_load(dist: Path) -> None:
    done = run(dist)
    assert done.returncode == 0, done.stderr
    (bundle,) = dist.glob("app.bundle.*.js")
    assert re.fullmatch(r"app\.bundle\.[0-9a-f]{16}\.js", bundle.name) and bundle.name != "app.bundle.0f6159c501addfe9.js"
    assert GUARD in bundle.read_text() and TIMER not in bundle.read_text()
    assert bundle.name in (dist / "index.html").read_text() and bundle.name in (dist / "sw.js").read_text()
    assert TIMER in (dist / "2493.bundle.c4af70e46357151f.js").read_text()  # the workers' copy, left alone
    again = run(dist)
    assert again.returncode == 0 and again.stdout == "" and list(dist.glob("app.bundle.*.js")) == [bundle]


def test_a_build_without_the_timer_as_expected_is_refused_and_left_unchanged(dist: Path) -> None:
    page = dist / "app.bundle.0f6159c501addfe9.js"
    page.write_text("scroll() { /* another OHIF version */ }\n")
    done = run(dist)
    assert done.returncode != 0 and "cornerstone3D#2884" in done.stderr and "nothing changed" in done.stderr
    assert page.read_text() == "scroll() { /* another OHIF version */ }\n"
    assert "app.bundle.0f6159c501addfe9.js" in (dist / "index.html").read_text()


def test_the_installed_viewer_is_the_mended_one() -> None:
    (bundle,) = OHIF_DIST.glob("app.bundle.*.js")
    assert GUARD in bundle.read_text(encoding="utf-8")
    assert f'src="/{bundle.name}"' in (OHIF_DIST / "index.html").read_text(encoding="utf-8")

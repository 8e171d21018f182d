"""Every benchmark script imports and answers --help (they run outside pytest, so nothing else would notice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_benchmark_script_imports_and_explains_itself(script: str) -> None:
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                         timeout=120, check=False, cwd=BENCH.parent)
    assert out.returncode == 0 and "usage" in out.stdout.lower(), out.stderr[-2000:]

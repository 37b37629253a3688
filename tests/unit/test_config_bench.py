"""bench/validation.py must not rot: it runs with tiny configs and says what it measured.

No timing is asserted: the figure is the benchmark's to report, not a test's to judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "validation.py", *args], cwd=BENCH,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_validation_benchmark_has_help_and_a_dry_run() -> None:
    assert "--dry-run" in bench("--help").stdout
    dry = bench("--dry-run")
    assert dry.returncode == 0 and "10 MB" in dry.stdout
    assert bench("--megabytes", "0", "--dry-run").returncode == 2


def test_the_validation_benchmark_runs_on_a_small_config(tmp_path: Path) -> None:
    out = tmp_path / "validation.json"
    proc = bench("--megabytes", "0.02", "--repeat", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())["validate"]
    assert {name: f["exit"] for name, f in figures.items()} == {
        "valid": 0, "duplicate at the end": 2, "one huge value": 2}
    assert figures["valid"]["checks"] > 100
    assert all(f["line_chars"] < 300 for f in figures.values())

"""`cdd savings`, `cdd reap --dry-run` and `cdd status` as a user calls them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdd_ci.history.store import MachineSpec, PhaseSpan, RunStart, open_history


def cdd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdd_ci", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def record(db: Path, run_id: str, start: float, hours: float, machines: int = 2) -> None:
    history = open_history(db)
    event = history.begin(RunStart(run_id, "web", "lxc", "run", start,
                                   tuple(MachineSpec(f"m{i}") for i in range(machines))))
    end = start + hours * 3600
    history.finish(event, finished_at=end, outcome="passed",
                   spans=[PhaseSpan("up", "m0", start, start + 60),
                          PhaseSpan("destroy", "environment", end - 30, end)],
                   released_at=end)


def test_savings_from_a_history_file(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    now = time.time()
    record(db, "20240101000000-aaaaaa", now - 86400, 1.0)
    record(db, "20240101000001-bbbbbb", now - 2 * 86400, 0.5)
    proc = cdd("savings", "--history", str(db), "--since", "7d", "--price", "0.05",
               "--format", "markdown", "--plot", str(tmp_path / "s.png"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| **used by cdd (2 runs)** | 3.0 | \\$0.15 |  |" in proc.stdout
    assert (tmp_path / "s.png").stat().st_size > 10_000
    table = cdd("savings", "--history", str(db), "--since", "7d", cwd=tmp_path)
    assert table.returncode == 0 and "used by cdd (2 runs)" in table.stdout


def test_savings_reads_price_and_baselines_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "cdd.toml").write_text(
        '[environment]\nname = "web"\ndirectory = "."\nmachines = ["m0", "m1"]\n'
        '[report]\nhistory = "h/history.sqlite"\n'
        '[savings]\nprice_per_machine_hour = 0.5\ncurrency = "€"\n'
        'working_hours_per_day = 8\nworking_days = ["mon", "tue", "wed", "thu"]\n')
    record(tmp_path / "h" / "history.sqlite", "20240101000000-aaaaaa", time.time() - 7200, 1)
    proc = cdd("savings", "--format", "markdown", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| **used by cdd (1 run)** | 2.0 | €1.00 |  |" in proc.stdout
    assert "working hours (8 h, Mon-Thu)" in proc.stdout


@pytest.mark.parametrize("args", [
    ["reap", "--older-than", "6"],
    ["reap", "--older-than", "soon"],
    ["status", "--older-than", "-1h"],
    ["savings", "--history", "x.sqlite", "--since", "a month"],
    ["savings", "--history", "x.sqlite", "--format", "html"],
    ["savings", "--history", "x.sqlite", "--plot", "x.pdf"],
    ["run", "--hold-on-failure", "later"],
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "cdd.toml").write_text(
        '[environment]\nname = "web"\ndirectory = "."\nmachines = ["m0"]\n')
    (tmp_path / "Vagrantfile").write_text("")
    proc = cdd(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("cdd: error: ") and len(proc.stderr.splitlines()) == 1


def test_a_history_from_a_newer_cdd_is_an_error_not_a_crash(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    proc = cdd("savings", "--history", str(tmp_path / "h.sqlite"), cwd=tmp_path)
    assert proc.returncode == 3
    assert "newer cdd" in proc.stderr and "Traceback" not in proc.stderr


def test_reap_dry_run_and_status_with_nothing_recorded(tmp_path: Path) -> None:
    # the test's host index is empty; machines of the real host (other users' runs) are
    # judged by age alone, and nothing can be that old: nothing is, or would be, reaped
    proc = cdd("reap", "--dry-run", "--older-than", "36500d", cwd=tmp_path)
    assert proc.returncode in (0, 3), proc.stderr
    assert "would free 0 runs" in proc.stdout
    status = cdd("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr

"""The same history on both of its databases: the SQLite file of one machine, and the
PostgreSQL server a team points all its runners at (a real server, started by the tests)."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cdd_ci.history import store
from cdd_ci.history.changes import since_last_green
from cdd_ci.history.store import (
    SCHEMA_VERSION,
    History,
    HistoryError,
    MachineSpec,
    PhaseSpan,
    RunStart,
    SqliteHistory,
    open_history,
)
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode, Inventory, MachineInventory, Package, RunResult
from cdd_ci.recorded import down_recorded
from cdd_ci.report.progress import QuietDisplay
from tests.postgres import Server

from ..helpers import World, make_project

PROCESSES, THREADS, RUNS = 3, 3, 12


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty history is: a file, or a database of the session's server."""
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    server: Server = request.getfixturevalue("postgres")
    return server.database()


def start(run_id: str, at: float = 1000.0, *, host: str = "runner-1",
          environment: str = "demo", command: str = "run") -> RunStart:
    return RunStart(run_id, environment, "lxc", command, at,
                    (MachineSpec("m0", 2, 2048), MachineSpec("m1")), host=host)


def passed(history: History, run: RunStart, hours: float = 1.0) -> None:
    event = history.begin(run)
    end = run.started_at + hours * 3600
    history.finish(event, finished_at=end, outcome="passed",
                   spans=[PhaseSpan("up", "m0", run.started_at + 10, run.started_at + 60)],
                   released_at=end, commit=f"c-{run.run_id}")


def test_the_location_chooses_the_database(location: str) -> None:
    history = open_history(location)
    assert isinstance(history, SqliteHistory) == (not location.startswith("postgresql://"))
    assert history.schema_version() == 0  # nothing written yet
    assert history.usage(0, 1e12) == [] and history.inventory("r") is None


def test_a_killed_run_counts_from_its_start_until_someone_releases_it(location: str) -> None:
    history = open_history(location)
    history.begin(start("20240101000000-aaaaaa", at=1000.0))  # and then SIGKILL
    (run,) = history.usage(0, 1e12)
    assert (run.alive_from, run.released_at, run.outcome) == (1000.0, None, "")
    assert run.machines == (MachineSpec("m0", 2, 2048), MachineSpec("m1"))
    history.note(start("20240101000000-aaaaaa", at=1000.0), command="reap", started_at=5000.0,
                 finished_at=5060.0, outcome="released",
                 spans=[PhaseSpan("destroy", "environment", 5000.0, 5060.0)], released=True)
    (run,) = history.usage(0, 1e12)
    assert (run.alive_from, run.released_at) == (1000.0, 5060.0)
    assert history.usage(6000.0, 1e12) == []  # released before the window
    assert history.schema_version() == SCHEMA_VERSION


def test_inventories_and_the_last_green_run_come_from_any_host(location: str) -> None:
    history = open_history(location)
    passed(history, start("20240101000000-aaaaaa", 1000.0, host="runner-1"))
    passed(history, start("20240101000001-bbbbbb", 2000.0, host="runner-2"))
    passed(history, start("20240101000002-cccccc", 2500.0, host="runner-2",
                          environment="other"))
    packages = (Package("curl", "7.88"), Package("bash", "5.2"))
    inventory = Inventory((MachineInventory("m0", "debian/bookworm64", "12.1", "dpkg",
                                            packages),),
                          vagrant="2.4.1", plugins=(Package("vagrant-lxc", "1.4.3"),))
    history.record_inventory("20240101000001-bbbbbb", inventory)
    history.record_inventory("20240101000001-bbbbbb", inventory)  # replaces, never doubles
    green = history.last_green("demo", before=3000.0, other_than="20240101000003-dddddd")
    assert green is not None
    assert (green.run_id, green.started_at, green.commit) == (
        "20240101000001-bbbbbb", 2000.0, "c-20240101000001-bbbbbb")
    recorded = history.inventory("20240101000001-bbbbbb")
    assert recorded is not None and recorded.vagrant == "2.4.1"
    assert recorded.machines[0].packages == (Package("bash", "5.2"), Package("curl", "7.88"))
    assert recorded.plugins == (Package("vagrant-lxc", "1.4.3"),)


def _writer(location: str, process: int) -> None:
    def runs(thread: int) -> None:
        history = open_history(location, timeout=60)
        for i in range(RUNS):
            at = float(process * 10_000 + thread * 100 + i)
            passed(history, start(f"2024010100{process}{thread}{i:02d}-abcdef", at,
                                  host=f"runner-{process}"), hours=0.1)

    threads = [threading.Thread(target=runs, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_writers_lose_nothing(location: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(location, n)) for n in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
        assert proc.exitcode == 0
    runs = open_history(location).usage(0, 1e12)
    assert len(runs) == PROCESSES * THREADS * RUNS
    assert {r.outcome for r in runs} == {"passed"}
    assert all(r.released_at is not None and r.alive_from == r.started_at + 10 for r in runs)


def _set_version(history: History, version: int) -> None:
    with history._transaction(write=True) as db:
        assert db is not None
        if isinstance(history, SqliteHistory):
            db.run(f"PRAGMA user_version = {version}")
        else:
            db.run("CREATE TABLE IF NOT EXISTS cdd_schema (version INTEGER NOT NULL)")
            db.run("DELETE FROM cdd_schema")
            db.run(f"INSERT INTO cdd_schema VALUES ({version})")


def _old(location: str, version: int) -> History:
    """A history as an older cdd left it: schema `version`, one run with its packages."""
    history = open_history(location)
    with history._transaction(write=True) as db:
        assert db is not None
        history._create(db, store._SCHEMA)
        db.run("INSERT INTO runs (run_id, environment, provider, command, started_at, outcome)"
               " VALUES ('20230101000000-aaaaaa', 'demo', 'lxc', 'run', 500.0, 'passed')")
        db.run("INSERT INTO machines VALUES ('20230101000000-aaaaaa', 'm0', 1, 1024)")
        if version >= 2:
            history._create(db, store._INVENTORY)
            db.run("INSERT INTO inventories (run_id, machine, box) VALUES"
                   " ('20230101000000-aaaaaa', 'm0', 'debian/bookworm64')")
            db.run("INSERT INTO packages VALUES ('20230101000000-aaaaaa', 'm0', 'curl', '7.0')")
    if version >= 1:
        _set_version(history, version)
    return history


@pytest.mark.parametrize("version", [0, 1, 2])
def test_an_older_history_is_migrated_and_keeps_its_runs(location: str, version: int) -> None:
    history = _old(location, version)
    before = [r.run_id for r in history.usage(0, 1e12)]
    # readable before any write, but for the first cdd's, which stamped no version at all
    assert before == ([] if version == 0 else ["20230101000000-aaaaaa"])
    passed(history, start("20240101000000-bbbbbb", 1000.0))
    assert history.schema_version() == SCHEMA_VERSION
    assert [r.run_id for r in history.usage(0, 1e12)] == [
        "20230101000000-aaaaaa", "20240101000000-bbbbbb"]
    green = history.last_green("demo", before=900.0, other_than="")
    assert green is not None and green.run_id == "20230101000000-aaaaaa"
    if version >= 2:
        inventory = history.inventory("20230101000000-aaaaaa")
        assert inventory is not None
        assert inventory.machines[0].packages == (Package("curl", "7.0"),)


def test_a_history_from_a_newer_cdd_is_refused_not_overwritten(location: str) -> None:
    history = open_history(location)
    passed(history, start("20240101000000-aaaaaa"))
    _set_version(history, SCHEMA_VERSION + 1)
    with pytest.raises(HistoryError, match="newer cdd"):
        history.begin(start("20240101000001-bbbbbb"))
    with pytest.raises(HistoryError, match="newer cdd"):
        history.usage(0, 1e12)
    _set_version(history, SCHEMA_VERSION)
    assert [r.run_id for r in history.usage(0, 1e12)] == ["20240101000000-aaaaaa"]


# -- a team's runners on one server, as a user sees it -------------------------------------

def cdd(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdd_ci", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def test_savings_counts_the_runs_of_every_runner(postgres: Server, tmp_path: Path) -> None:
    url = postgres.database(password="s3cret-history-pw")
    now = time.time()
    for n, host in enumerate(("runner-1", "runner-2", "runner-3")):
        passed(open_history(url), start(f"20240101000{n}00-aaaaaa", now - 86400 + n * 3600,
                                        host=host), hours=1.0)
    (tmp_path / "cdd.toml").write_text(
        '[environment]\nname = "demo"\ndirectory = "."\nmachines = ["m0", "m1"]\n')
    by_env = cdd("savings", "--format", "markdown", cwd=tmp_path,
                 env={"CDD_HISTORY_URL": url})
    assert by_env.returncode == 0, by_env.stderr
    assert "| **used by cdd (3 runs)** | 6.0 |" in by_env.stdout  # 3 runs x 2 machines x 1 h
    (tmp_path / "cdd.toml").write_text(
        '[environment]\nname = "demo"\ndirectory = "."\nmachines = ["m0", "m1"]\n'
        f'[report]\nhistory = "{url}"\n')
    by_toml = cdd("savings", "--format", "markdown", cwd=tmp_path)
    assert by_toml.returncode == 0
    # the same report, but for its "until now": the two may fall either side of a minute
    assert _without_minutes(by_toml.stdout) == _without_minutes(by_env.stdout)


def _without_minutes(report: str) -> str:
    return re.sub(r"\b\d\d:\d\d UTC\b", "HH:MM UTC", report)


def test_an_unreachable_server_is_one_line_without_the_password(
        postgres: Server, tmp_path: Path) -> None:
    url = postgres.url("no_such_database", password="s3cret-history-pw")
    proc = cdd("savings", "--history", url, cwd=tmp_path)
    assert proc.returncode == 3
    assert "s3cret-history-pw" not in proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "postgresql://nobody:***@/no_such_database" in line or ":***@" in line
    assert "no_such_database" in line


def test_a_url_without_the_driver_is_one_line_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cdd.toml").write_text(
        '[environment]\nname = "demo"\ndirectory = "."\nmachines = ["m0"]\n'
        '[report]\nhistory = "postgresql://cdd:pw-of-the-team@db.example/cdd"\n')
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['psycopg'] = None\n")  # as if it were not installed
    proc = cdd("savings", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "cdd-ci[postgres]" in line and "pw-of-the-team" not in line


def test_what_changed_is_against_the_last_green_run_of_any_runner(
        location: str, tmp_path: Path) -> None:
    """A failure on one runner is compared with the green run another runner made."""
    history = open_history(location)
    machine = MachineInventory("m0", "debian/bookworm64", "12.1", "dpkg",
                               (Package("curl", "7.88"),))
    passed(history, start("20240101000000-aaaaaa", 1000.0, host="runner-1"))
    history.record_inventory("20240101000000-aaaaaa", Inventory((machine,), vagrant="2.4.1"))
    failed = RunResult("20240101000100-bbbbbb", "demo", "lxc", ["m0"], 2000.0,
                       inventory=Inventory((replace(machine, packages=(
                           Package("curl", "8.0"),)),), vagrant="2.4.1"))
    changes = since_last_green(history, failed, commit="c-20240101000000-aaaaaa",
                               checkout=tmp_path)
    assert changes.problem == ""
    assert changes.green is not None and changes.green.run_id == "20240101000000-aaaaaa"
    (only,) = changes.machines
    assert [(c.name, c.before, c.after) for c in only.packages] == [("curl", "7.88", "8.0")]


def test_a_run_and_a_developers_day_are_recorded_on_the_server(
        postgres: Server, tmp_path: Path) -> None:
    """Through the lifecycle and `cdd down`, as a runner whose cdd.toml names the server."""
    url = postgres.database(password="s3cret-history-pw")
    config = make_project(tmp_path, f'\n[report]\nhistory = "{url}"\n')
    world = World()
    display = QuietDisplay()
    result = Lifecycle(config, world.backend(), display, Cancellation()).run()
    assert result.exit_code() is ExitCode.OK and display.events  # something was said
    assert not [e for e in display.events if "history" in e]  # and no history warning
    Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(), command="up").build()
    assert down_recorded(config, world.backend(), QuietDisplay()).exit_code() is ExitCode.OK
    runs = open_history(url).usage(0, 1e12)
    assert [(r.command, r.outcome, r.released_at is not None) for r in runs] == [
        ("run", "passed", True), ("up", "passed", True)]
    assert not any("s3cret-history-pw" in e for e in display.events)


def test_status_all_hosts_lists_every_runners_machines_left(location: str, tmp_path: Path) -> None:
    history = open_history(location)
    now = time.time()
    history.begin(start("20240101000000-aaaaaa", now - 600, host="runner-1"))  # still up
    history.begin(start("20240101000001-bbbbbb", now - 300, host="runner-2",
                        command="up"))
    passed(history, start("20240101000002-cccccc", now - 7200, host="runner-3"), hours=0.5)
    proc = cdd("status", "--all-hosts", cwd=tmp_path, env={"CDD_HISTORY_URL": location,
                                                           "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines if "-aaaaaa" in line or "-bbbbbb" in line] == [
        ["20240101000000-aaaaaa", "runner-1"], ["20240101000001-bbbbbb", "runner-2"]]
    assert "cccccc" not in proc.stdout and "runner-3" not in proc.stdout

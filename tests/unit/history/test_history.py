"""The run history: what a run, `cdd up` and `cdd down` leave in it, and that it never
changes a verdict."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from cdd_ci.config import ConfigError
from cdd_ci.history.store import (
    SCHEMA_VERSION,
    HistoryError,
    MachineSpec,
    PhaseSpan,
    RunStart,
    open_history,
)
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode
from cdd_ci.recorded import down_recorded
from cdd_ci.report.progress import QuietDisplay

from ..helpers import World, make_project

RESOURCES = """
[environment.resources]
broker = { cpus = 2, memory_mb = 2048 }
"""


def start(run_id: str, at: float = 1000.0, machines: int = 2) -> RunStart:
    return RunStart(run_id, "demo", "fake", "run", at,
                    tuple(MachineSpec(f"m{i}") for i in range(machines)))


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_a_run_is_recorded_with_its_phases_machines_and_verdict(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path, RESOURCES)
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()
    assert result.exit_code() is ExitCode.OK
    db = tmp_path / ".cdd" / "history.sqlite"
    (run,) = open_history(db).usage(0, 1e12)
    assert run.run_id == result.run_id and run.outcome == "passed"
    assert run.machines == (MachineSpec("broker", 2, 2048), MachineSpec("database", 1, 1024))
    assert run.released_at is not None and run.alive_from <= run.released_at
    phases = {p for (p,) in rows(db, "SELECT DISTINCT phase FROM phases")}
    assert {"up", "provision", "check", "harvest", "destroy"} <= phases
    assert rows(db, "SELECT command, outcome FROM events") == [("run", "passed")]
    assert open_history(db).schema_version() == SCHEMA_VERSION


def test_a_broken_history_never_changes_the_verdict_nor_skips_destroy(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path, '\n[report]\nhistory = "cdd.toml/history.sqlite"\n')
    display = QuietDisplay()
    result = Lifecycle(config, world.backend(), display, Cancellation()).run()
    assert result.exit_code() is ExitCode.OK
    assert world.host.machines == {}
    assert any("run history not written" in e for e in display.events)


def test_a_history_from_a_newer_cdd_is_refused_not_overwritten(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer cdd"):
        open_history(db).begin(start("20240101000000-aaaaaa"))
    with pytest.raises(HistoryError, match="newer cdd"):
        open_history(db).usage(0, 1e12)


def test_a_killed_run_counts_from_its_start_until_someone_releases_it(tmp_path: Path) -> None:
    history = open_history(tmp_path / "h.sqlite")
    history.begin(start("20240101000000-aaaaaa", at=1000.0))  # and then SIGKILL
    (run,) = history.usage(0, 1e12)
    assert (run.alive_from, run.released_at) == (1000.0, None)
    history.note(start("20240101000000-aaaaaa", at=1000.0), command="reap", started_at=5000.0,
                 finished_at=5060.0, outcome="released",
                 spans=[PhaseSpan("destroy", "environment", 5000.0, 5060.0)], released=True)
    (run,) = history.usage(0, 1e12)
    assert (run.alive_from, run.released_at) == (1000.0, 5060.0)
    assert history.usage(6000.0, 1e12) == []  # released before the window


def _write_runs(path: str, offset: int) -> None:
    history = open_history(Path(path))
    for i in range(25):
        run_id = f"20240101{offset:02d}{i:04d}-abcdef"
        event = history.begin(start(run_id, at=float(offset * 100 + i)))
        history.finish(event, finished_at=float(offset * 100 + i + 1), outcome="passed",
                       spans=[PhaseSpan("up", "m0", 1.0, 2.0)], released_at=3.0)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_runs, args=(str(db), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    assert rows(db, "SELECT COUNT(*) FROM runs") == [(100,)]
    assert rows(db, "SELECT COUNT(*) FROM events WHERE outcome = 'passed'") == [(100,)]


def test_the_developers_day_up_then_down(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    morning = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(),
                        command="up").build()
    assert morning.kept and len(world.host.machines) == 2
    db = config.history_path
    (run,) = open_history(db).usage(0, 1e12)
    assert run.command == "up" and run.released_at is None  # still up: still counted

    evening = down_recorded(config, world.backend(), QuietDisplay())
    assert evening.exit_code() is ExitCode.OK
    assert world.host.machines == {}
    saved = tmp_path / "reports" / "saved" / morning.run_id
    assert (saved / "broker" / "journal.log").is_file()  # harvested before destroy
    (run,) = open_history(db).usage(0, 1e12)
    assert run.released_at is not None
    assert rows(db, "SELECT command FROM events ORDER BY id") == [("up",), ("down",)]
    with pytest.raises(LookupError, match="no environment is up"):
        down_recorded(config, world.backend(), QuietDisplay())


def test_down_destroys_even_when_saving_fails(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(), command="up").build()
    world.shells["broker"].unreachable()
    result = down_recorded(config, world.backend(), QuietDisplay())
    assert world.host.machines == {}
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert any("broker" in f.machine for f in result.failures)


@pytest.mark.parametrize(("extra", "message"), [
    ("\n[environment.resources]\nnosuch = { cpus = 2 }\n", "environment.resources.nosuch"),
    ("\n[environment.resources]\nbroker = { cpus = 0 }\n", "environment.resources.broker.cpus"),
    ('\n[savings]\nworking_days = ["someday"]\n', "savings.working_days[0]"),
    ("\n[savings]\nworking_hours_per_day = 25\n", "savings.working_hours_per_day"),
])
def test_config_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_project(tmp_path, extra)

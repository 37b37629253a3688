"""`cdd reap` and `--hold-on-failure` with the fakes and a frozen clock: what is destroyed,
what is left alone, and that a live run is never touched."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cdd_ci.config import Config
from cdd_ci.history.store import open_history
from cdd_ci.host.index import HostIndex
from cdd_ci.host.inventory import HostRun, Inventory, gather
from cdd_ci.host.ledger import Ledger, LedgerStore
from cdd_ci.host.reaper import ReapReport, judge, reap
from cdd_ci.infra.providers import machine_name
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode
from cdd_ci.report.progress import QuietDisplay
from tests.fakes.infra import FakeHost

from ..helpers import World, make_project

H = 3600.0
NOW = 1_715_000_000.0  # 2024-05-06 12:53:20 UTC
RUN_ID = "20240506120000-aaaaaa"  # 53m20s before NOW
HOST = "runner-1"


def ledger(**kw: object) -> Ledger:
    base = Ledger(run_id=RUN_ID, environment="demo", directory="/nowhere", provider="fake",
                  machines=["a", "b"], vagrant_env={}, started_at=NOW - 3000, host=HOST)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("run", "reap_it", "because"), [
    (HostRun(RUN_ID, ledger(), live=True), False, "live: its cdd process"),
    (HostRun(RUN_ID, ledger(started_at=NOW - 100 * H), live=True), False, "live"),
    (HostRun(RUN_ID, ledger(hold_until=NOW - 1), live=True), False, "live"),
    (HostRun(RUN_ID, ledger()), True, "process is gone (stopped during up)"),
    (HostRun(RUN_ID, ledger(machine_states={"a": "up"})), True, "during provision"),
    (HostRun(RUN_ID, ledger(machine_states={"a": "provisioned", "b": "provisioned"})), True,
     "during provisioned"),
    (HostRun(RUN_ID, ledger(phase="checking")), True, "during checks"),
    (HostRun(RUN_ID, ledger(phase="destroy-failed")), True, "during destroy-failed"),
    (HostRun(RUN_ID, ledger(phase="up", command="up", started_at=NOW - 5 * H)), False,
     "up since `cdd up` for 5h00m: reaped once over 6h00m"),
    (HostRun(RUN_ID, ledger(phase="up", command="up", started_at=NOW - 7 * H)), True,
     "forgotten `cdd down`"),
    (HostRun(RUN_ID, ledger(phase="kept", started_at=NOW - 7 * H)), True, "kept (kept) for 7h"),
    (HostRun(RUN_ID, ledger(phase="held", hold_until=NOW + 60)), False,
     "held for debugging until 2024-05-06 12:54 UTC"),
    (HostRun(RUN_ID, ledger(phase="held", hold_until=NOW + 60, started_at=NOW - 99 * H)),
     False, "held"),
    (HostRun(RUN_ID, ledger(phase="held", hold_until=NOW - 60, started_at=NOW - 61)), True,
     "hold expired at 2024-05-06 12:52 UTC"),
    (HostRun(RUN_ID, ledger(host="elsewhere")), False, "recorded on host elsewhere"),
    (HostRun("20240506050000-bbbbbb"), True, "no ledger on this host, 7h53m old (over 6h00m)"),
    (HostRun("20240506080000-bbbbbb"), False, "4h53m old: reaped once over 6h00m"),
    (HostRun("20990101000000-bbbbbb"), False, "0s old"),  # clock skew: young, not negative
    (HostRun("manual"), False, "no time in its run id"),
])
def test_the_rules(run: HostRun, reap_it: bool, because: str) -> None:
    verdict = judge(run, now=NOW, older_than=6 * H, host=HOST)
    assert verdict.reap is reap_it
    assert because in verdict.reason


# -- the reaper against the fakes ---------------------------------------------------------


def killed_run(config: Config, world: World, machines: list[str], **kw: object) -> Lifecycle:
    """A run that got as far as creating `machines`, then its process died."""
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(), **kw)  # type: ignore[arg-type]
    lifecycle._record("created")
    for machine in machines:
        lifecycle._vagrant.up(machine, timeout=1, log=config.root / "x.log",
                              on_line=lambda _: None)
    return lifecycle


def sweep(world: World, at: float, *, dry_run: bool = False,
          older_than: float = 6 * H) -> tuple[ReapReport, list[str]]:
    events: list[str] = []
    inventory = gather(HostIndex.from_environ(), world.host, ["fake"])
    report = reap(inventory, environment_for=lambda led: world.backend().environment(led, None),
                  provider=world.host, older_than=older_than, dry_run=dry_run,
                  clock=lambda: at, on_event=events.append)
    return report, events


def test_killed_runs_are_freed_and_a_live_one_is_untouched(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    killed = [killed_run(config, world, m) for m in ([], ["broker"], ["broker", "database"])]
    live = killed_run(config, world, ["broker", "database"])
    lock = live.store.acquire(live.ledger.run_id)  # its process is alive
    now = time.time()

    report, events = sweep(world, now)
    assert report.ok
    assert sorted(r.run.run_id for r in report.reaped) == sorted(k.ledger.run_id for k in killed)
    assert set(world.host.machines) == {machine_name(live.ledger.run_id, m)
                                        for m in ("broker", "database")}
    assert [k.run_id for k, _ in report.kept] == [live.ledger.run_id]
    assert any(e.startswith(f"freed run {killed[2].ledger.run_id} demo (cdd run)") and
               e.endswith("machines: broker, database") for e in events)
    assert LedgerStore(config.state_dir).all() == [live.ledger]

    again, _ = sweep(world, now)  # idempotent: nothing more to do
    assert again.reaped == []
    lock.close()
    finally_, _ = sweep(world, now)  # its process died: now it is over
    assert [r.run.run_id for r in finally_.reaped] == [live.ledger.run_id]
    assert world.host.machines == {}


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    run = killed_run(config, world, ["broker"])
    report, events = sweep(world, time.time(), dry_run=True)
    assert [r.run.run_id for r in report.reaped] == [run.ledger.run_id]
    assert events[0].startswith("would free") and events[0].endswith("machines: broker")
    assert len(world.host.machines) == 1
    assert len(LedgerStore(config.state_dir).all()) == 1


def test_a_reaper_during_a_run_sees_it_live(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
    original = lifecycle._vagrant.up
    seen: list[ReapReport] = []

    def up_then_reap(machine: str, **kw: object) -> None:
        original(machine, **kw)  # type: ignore[arg-type]
        seen.append(sweep(world, time.time() + 100 * H)[0])

    lifecycle._vagrant.up = up_then_reap  # type: ignore[method-assign]
    result = lifecycle.run()
    assert result.exit_code() is ExitCode.OK  # the reaper did not pull machines from under it
    assert seen and all(r.reaped == [] and len(r.kept) == 1 for r in seen)
    assert all("live" in v.reason for r in seen for _, v in r.kept)


def test_a_forgotten_cdd_up_is_reaped_after_the_limit_and_its_hours_closed(
        tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    up = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(), command="up")
    result = up.build()
    assert result.kept
    started = up.ledger.started_at
    report, _ = sweep(world, started + 5 * H)
    assert report.reaped == [] and len(world.host.machines) == 2
    report, events = sweep(world, started + 7 * H)
    assert [r.run.run_id for r in report.reaped] == [result.run_id]
    assert "forgotten `cdd down`" in events[0]
    assert world.host.machines == {}
    (usage,) = open_history(config.history_path).usage(0, 1e12)
    assert usage.released_at == started + 7 * H  # counted until the reaper freed it


def test_hold_on_failure_keeps_the_environment_until_the_reaper_enforces_it(
        tmp_path: Path) -> None:
    world = World()
    world.shells["broker"].answers.insert(0, (r"^echo pong", _result(1)))
    config = make_project(tmp_path)
    t0 = time.time()
    display = QuietDisplay()
    lifecycle = Lifecycle(config, world.backend(), display, Cancellation(),
                          hold_on_failure=2 * H, clock=lambda: t0)
    result = lifecycle.run()
    assert result.exit_code() is ExitCode.CHECKS_FAILED and result.kept
    assert len(world.host.machines) == 2
    (led,) = LedgerStore(config.state_dir).all()
    assert (led.phase, led.hold_until) == ("held", t0 + 2 * H)
    warning = next(e for e in display.events if "HOLDING" in e)
    assert "until" in warning and "2h00m" in warning and "cdd destroy --run-id" in warning

    report, _ = sweep(world, t0 + 2 * H - 1, older_than=H)  # the hold beats --older-than
    assert report.reaped == [] and len(world.host.machines) == 2
    report, events = sweep(world, t0 + 2 * H + 1)
    assert "hold expired" in events[0]
    assert world.host.machines == {}


@pytest.mark.parametrize(("fail", "interrupt"), [(False, False), (True, True)])
def test_hold_applies_only_to_a_failed_run_that_was_not_interrupted(
        tmp_path: Path, fail: bool, interrupt: bool) -> None:
    world = World()
    if fail:
        world.shells["broker"].answers.insert(0, (r"^echo pong", _result(1)))
    config = make_project(tmp_path)
    cancellation = Cancellation()
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), cancellation,
                          hold_on_failure=2 * H)
    if interrupt:
        original = lifecycle._vagrant.up

        def up_then_cancel(machine: str, **kw: object) -> None:
            original(machine, **kw)  # type: ignore[arg-type]
            cancellation.cancel("SIGTERM")

        lifecycle._vagrant.up = up_then_cancel  # type: ignore[method-assign]
    result = lifecycle.run()
    assert not result.kept
    assert world.host.machines == {}


def test_machines_without_a_ledger_are_removed_only_when_old(tmp_path: Path) -> None:
    world = World()
    old, young = "20240506050000-cccccc", "20240506120000-dddddd"
    for run_id in (old, young):
        world.host.machines[machine_name(run_id, "web")] = "running"
    report, events = sweep(world, NOW)
    assert [r.run.run_id for r in report.reaped] == [old]
    assert list(world.host.machines) == [machine_name(young, "web")]
    assert "no ledger on this host" in events[0]


def test_a_removal_that_fails_is_reported_and_retried_next_time(tmp_path: Path) -> None:
    world = World()
    world.host.machines[machine_name("20240506050000-cccccc", "web")] = "running"
    world.host.fail_remove = True
    report, events = sweep(world, NOW)
    assert not report.ok and "left behind" in report.failed[0].problem
    assert events[0].startswith("FAILED")
    world.host.fail_remove = False
    assert sweep(world, NOW)[0].ok and world.host.machines == {}


def test_stale_index_entries_are_dropped(tmp_path: Path) -> None:
    index = HostIndex.from_environ()
    index.register("20240506050000-eeeeee", tmp_path / "gone" / ".cdd" / "runs" / "x")
    world = World()
    report, _ = sweep(world, NOW, dry_run=True)
    assert report.stale_pointers == 1 and index.entries()
    report, _ = sweep(world, NOW)
    assert report.stale_pointers == 1 and index.entries() == []


def test_a_provider_that_cannot_be_listed_is_said_out_loud(tmp_path: Path) -> None:
    broken = FakeHost(fail_listing=True)
    inventory = gather(HostIndex.from_environ(), broken, ["lxc"])
    assert inventory.problems == ["listing lxc machines failed: `fake-ls` did not answer in 60s"]
    assert isinstance(inventory, Inventory)


def _result(code: int):  # type: ignore[no-untyped-def]
    from cdd_ci.models import CommandResult

    return CommandResult("x", code, "", "")


GLOBAL_STATUS = """\
id       name                               provider state   directory
-----------------------------------------------------------------------
29bfa71  broker                             lxc      running /srv/my project
b5a0010  cdd-20240506050000-ffffff-web      docker   running /srv/web
\x20
The above shows information about all known Vagrant environments
on this machine. This data is cached and may not be completely
"""


def test_vagrants_own_index_counts_machines_with_cdd_names() -> None:
    from cdd_ci.infra.vagrant import GlobalEntry, parse_global_status

    entries = parse_global_status(GLOBAL_STATUS)
    assert entries == [
        GlobalEntry("29bfa71", "broker", "lxc", "running", "/srv/my project"),
        GlobalEntry("b5a0010", "cdd-20240506050000-ffffff-web", "docker", "running", "/srv/web"),
    ]
    assert parse_global_status("id name\n----\nThere are no active Vagrant environments\n") == []
    world = World()
    destroyed: list[str] = []
    inventory = gather(HostIndex.from_environ(), world.host, ["fake"], lambda: entries)
    (run,) = inventory.runs
    assert (run.run_id, run.machines_left) == ("20240506050000-ffffff", ["web"])
    report = reap(inventory, environment_for=lambda led: None, provider=world.host,
                  vagrant_destroy=lambda e: destroyed.append(e.id), clock=lambda: NOW)
    assert report.ok and destroyed == ["b5a0010"]


def test_a_cleaned_workspace_does_not_blind_the_reaper(tmp_path: Path) -> None:
    """An ephemeral runner's workspace goes with its ledgers; the index's copy says what
    the dead run created, so its machines go at once, not hours later by their age."""
    world = World()
    (tmp_path / "workspace").mkdir()
    config = make_project(tmp_path / "workspace")
    dead = killed_run(config, world, ["broker", "database"])
    dead.ledger.pid, dead.ledger.pid_started = 2**22 + 1, 1  # a process that is no more
    dead.store.write(dead.ledger)
    alive = killed_run(config, world, ["broker"])  # its cdd is this very process
    shutil.rmtree(tmp_path / "workspace" / ".cdd")

    report, events = sweep(world, time.time())
    assert report.ok, events
    assert [r.run.run_id for r in report.reaped] == [dead.ledger.run_id]
    assert set(world.host.machines) == {machine_name(alive.ledger.run_id, "broker")}
    assert [k.run_id for k, _ in report.kept] == [alive.ledger.run_id]
    assert [e.run_id for e in HostIndex.from_environ().entries()] == [alive.ledger.run_id]

"""The lifecycle with stateful fakes: order of phases, and that nothing is ever left."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from cdd_ci.config import DestroyPolicy
from cdd_ci.host.ledger import LedgerStore
from cdd_ci.infra.signals import Cancellation, interruptible
from cdd_ci.lifecycle import Fate, Lifecycle, decide
from cdd_ci.models import ExitCode, Phase, RunResult, Status, StepResult
from cdd_ci.recorded import destroy_recorded
from cdd_ci.report.progress import QuietDisplay

from .helpers import World, make_project


def run(tmp_path: Path, world: World, **kw: object):  # type: ignore[no-untyped-def]
    config = make_project(tmp_path)
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(), **kw)  # type: ignore[arg-type]
    return lifecycle, lifecycle.run()


def test_passing_run_goes_through_every_phase_in_order_and_leaves_nothing(tmp_path: Path) -> None:
    world = World()
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.OK
    phases = [s.phase for s in result.steps]
    assert phases.index(Phase.UP) < phases.index(Phase.PROVISION) < phases.index(Phase.CHECK)
    assert phases.index(Phase.CHECK) < phases.index(Phase.HARVEST) < phases.index(Phase.DESTROY)
    assert phases[-1] is Phase.VERIFY
    assert world.host.machines == {}
    assert (tmp_path / "reports" / "junit.xml").is_file()
    assert LedgerStore(tmp_path / ".cdd").all() == []  # forgotten once verified gone
    assert result.box == "fake/box 1.0"
    assert result.vagrant_version == "0.0-fake"


def test_how_to_reach_a_machine_is_asked_once_it_answers_ssh_not_after_provisioning(
        tmp_path: Path) -> None:
    world = World(provision_waits_for_ssh_config=True)
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.OK
    assert not [c for c in world.calls if "before its ssh-config" in c]
    assert world.calls.count("ssh-config") == 1  # for all machines, never asked again


def test_what_each_vagrant_up_wrote_of_reaching_its_machine_is_used_and_vagrant_not_asked(
        tmp_path: Path) -> None:
    world = World(writes_at_up=True)
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.OK
    assert [s.status for s in result.steps if s.phase is Phase.CHECK] \
        and all(s.status is Status.PASSED for s in result.steps if s.phase is Phase.CHECK)
    assert "ssh-config" not in world.calls


def test_a_machine_whose_vagrant_up_wrote_nothing_has_vagrant_asked_once_after_the_build(
        tmp_path: Path) -> None:
    world = World(writes_at_up=True, fail_write={"database"})
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.OK
    assert world.calls.count("ssh-config") == 1


def test_a_provider_that_builds_in_one_vagrant_up_is_reported_machine_by_machine(
        tmp_path: Path) -> None:
    world = World(together=True, fail_provision={"database"})
    _, result = run(tmp_path, world)
    assert [c for c in world.calls if c.startswith("up together")] == \
        ["up together broker database"]
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert sorted((s.machine, s.phase.value, s.status.value) for s in result.steps
                  if s.phase in (Phase.UP, Phase.PROVISION)) == [
        ("broker", "provision", "passed"), ("broker", "up", "passed"),
        ("database", "provision", "error"), ("database", "up", "passed")]
    assert world.host.machines == {}


def test_a_vagrant_that_cannot_run_fails_every_machine_of_a_shared_up(tmp_path: Path) -> None:
    _, result = run(tmp_path, World(together=True, no_vagrant=True))
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    errors = {s.machine: s.message for s in result.steps if s.phase is Phase.UP}
    assert errors == {m: "vagrant is not installed (see scripts/setup-host.sh)"
                      for m in ("broker", "database")}
    assert not any(s.name == "internal error" for s in result.steps)


def test_failing_check_exits_1_and_still_destroys(tmp_path: Path) -> None:
    world = World()
    world.shells["broker"].answers.insert(0, (r"^echo pong", _result(0, "pang\n")))
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.CHECKS_FAILED
    failed = [s for s in result.steps if s.status is Status.FAILED]
    assert [s.name for s in failed] == ["broker answers"]
    assert "does not match" in failed[0].message
    assert world.host.machines == {}


def test_failing_provisioner_is_infrastructure_skips_checks_and_destroys(tmp_path: Path) -> None:
    world = World(fail_provision={"database"})
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert all(s.status is Status.SKIPPED for s in result.steps if s.phase is Phase.CHECK)
    assert world.host.machines == {}


def test_failing_up_still_destroys_the_half_created_machine(tmp_path: Path) -> None:
    world = World(fail_up={"broker"})
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert world.host.machines == {}
    assert "destroy broker" in world.calls
    # the machine that came up is still reached, for its logs: asked once it is known
    # that the other never will be
    assert world.calls.count("ssh-config") == 1
    harvested = [s.machine for s in result.steps
                 if s.phase is Phase.HARVEST and s.status is Status.PASSED]
    assert harvested == ["database"]


@pytest.mark.parametrize("exc", [RuntimeError("bug"), SystemExit(3)])
def test_any_exception_still_destroys(tmp_path: Path, exc: BaseException) -> None:
    world = World(raise_in_up=exc)
    config = make_project(tmp_path)
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
    if isinstance(exc, SystemExit):
        with pytest.raises(SystemExit):
            lifecycle.run()
    else:
        result = lifecycle.run()
        assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert world.host.machines == {}


def test_a_caught_bug_keeps_its_traceback_in_the_debug_log(tmp_path: Path) -> None:
    world = World(raise_in_up=RuntimeError("bug in up"))
    _, result = run(tmp_path, world)
    debug = tmp_path / "reports" / "logs" / "debug.log"
    [internal] = [s for s in result.steps if s.phase is Phase.INTERNAL]
    assert internal.message == f"RuntimeError: bug in up (traceback in {debug})"
    assert "Traceback (most recent call last)" in debug.read_text()
    assert world.host.machines == {}


ALWAYS, PASSING, NEVER = DestroyPolicy.ALWAYS, DestroyPolicy.PASSING, DestroyPolicy.NEVER


@pytest.mark.parametrize(("passed", "signal_", "policy", "stays_up", "hold", "fate"), [
    (True, "", ALWAYS, False, 0, Fate.DESTROY),
    (False, "", ALWAYS, False, 0, Fate.DESTROY),
    (False, "", ALWAYS, False, 600, Fate.HOLD),
    (True, "", ALWAYS, False, 600, Fate.DESTROY),
    (False, "", PASSING, False, 0, Fate.KEEP),
    (False, "", PASSING, False, 600, Fate.HOLD),
    (True, "", PASSING, False, 0, Fate.DESTROY),
    (True, "", NEVER, False, 0, Fate.KEEP),
    (False, "", NEVER, False, 600, Fate.KEEP),
    (False, "SIGINT", ALWAYS, False, 600, Fate.DESTROY),  # a cancel is never held
    (False, "SIGTERM", PASSING, False, 0, Fate.DESTROY),
    (False, "SIGTERM", NEVER, False, 0, Fate.KEEP),
    (True, "", ALWAYS, True, 0, Fate.STAY_UP),
    (False, "", ALWAYS, True, 0, Fate.DESTROY),  # a broken `cdd up` is no use to anyone
    (False, "SIGINT", ALWAYS, True, 0, Fate.DESTROY),
    (False, "", PASSING, True, 0, Fate.STAY_UP),
])
def test_one_rule_decides_what_happens_to_the_machines(
        passed: bool, signal_: str, policy: DestroyPolicy, stays_up: bool, hold: float,
        fate: Fate) -> None:
    result = RunResult(run_id="r", environment="e", provider="lxc", machines=["m"],
                       started_at=0.0, interrupted_by=signal_)
    if not passed:
        result.add(StepResult(Phase.UP, "m", "up", Status.ERROR, message="no"))
    assert decide(result, policy, stays_up=stays_up, hold_for=hold) is fate


def test_destroy_failure_that_the_sweep_repairs_is_not_a_teardown_failure(tmp_path: Path) -> None:
    world = World(fail_destroy={"broker"})
    _, result = run(tmp_path, world)
    assert world.host.machines == {}
    assert result.exit_code() is ExitCode.OK
    destroy = next(s for s in result.steps if s.phase is Phase.DESTROY)
    assert "removed at the provider level" in destroy.message


def test_teardown_failure_exits_4_and_keeps_the_ledger(tmp_path: Path) -> None:
    world = World(fail_destroy={"broker"})
    world.host.fail_remove = True
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.TEARDOWN
    assert [led.phase for led in LedgerStore(tmp_path / ".cdd").all()] == ["destroy-failed"]


def test_primary_cause_wins_over_teardown_failure(tmp_path: Path) -> None:
    world = World(fail_provision={"broker"}, fail_destroy={"broker"})
    world.host.fail_remove = True
    _, result = run(tmp_path, world)
    assert result.exit_code() is ExitCode.INFRASTRUCTURE


@pytest.mark.parametrize(("policy", "fail", "kept"), [
    (DestroyPolicy.ALWAYS, True, False),
    (DestroyPolicy.PASSING, True, True),
    (DestroyPolicy.PASSING, False, False),
    (DestroyPolicy.NEVER, False, True),
])
def test_destroy_policy(tmp_path: Path, policy: DestroyPolicy, fail: bool, kept: bool) -> None:
    world = World()
    if fail:
        world.shells["broker"].answers.insert(0, (r"^echo pong", _result(1, "")))
    lifecycle, result = run(tmp_path, world, policy=policy)
    assert result.kept is kept
    assert bool(world.host.machines) is kept
    if kept:
        assert any("KEEPING" in e for e in lifecycle.display.events)  # type: ignore[attr-defined]


def test_leftovers_of_a_killed_run_are_cleared_first(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    killed = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
    killed._record("created")
    killed._vagrant.up("broker", timeout=1, log=tmp_path / "x.log", on_line=lambda _: None)
    assert len(world.host.machines) == 1
    _, result = run(tmp_path, world)
    cleanup = [s for s in result.steps if s.phase is Phase.CLEANUP]
    assert len(cleanup) == 1 and cleanup[0].ok
    assert world.host.machines == {}


def test_cdd_destroy_works_from_the_ledger_alone(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    killed = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
    killed._record("created")
    for m in ("broker", "database"):
        killed._vagrant.up(m, timeout=1, log=tmp_path / "x.log", on_line=lambda _: None)
    del killed  # the process that started the run is gone
    steps = destroy_recorded(config, World(host=world.host).backend(), QuietDisplay())
    assert [s.status for s in steps] == [Status.PASSED, Status.PASSED]
    assert world.host.machines == {}


def test_sigterm_during_up_destroys_and_exits_143(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    cancellation = Cancellation()
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), cancellation)
    original = lifecycle._vagrant.up

    def up_then_signal(machine: str, **kw: object) -> None:
        original(machine, **kw)  # type: ignore[arg-type]
        if machine == "broker":
            signal.raise_signal(signal.SIGTERM) if threading.current_thread() is \
                threading.main_thread() else cancellation.cancel("SIGTERM")

    lifecycle._vagrant.up = up_then_signal  # type: ignore[method-assign]
    with interruptible(cancellation):
        result = lifecycle.run()
    assert result.interrupted_by == "SIGTERM"
    assert result.exit_code() is ExitCode.INTERRUPTED_SIGTERM
    assert world.host.machines == {}
    assert not any(s.phase is Phase.HARVEST for s in result.steps)


def _result(code: int, out: str):  # type: ignore[no-untyped-def]
    from cdd_ci.models import CommandResult

    return CommandResult("x", code, out, "")


def test_reporters_run_after_teardown_and_never_decide_the_verdict(tmp_path: Path) -> None:
    from cdd_ci.models import ENVIRONMENT, StepResult
    from cdd_ci.report import junit

    world = World()
    seen: list[int] = []

    def github_down(result):  # type: ignore[no-untyped-def]
        seen.append(len(world.host.machines))  # called when the machines are already gone
        result.add(StepResult(Phase.REPORT, ENVIRONMENT, "github issues", Status.ERROR,
                              message="GitHub answered 502"))

    def broken(_result):  # type: ignore[no-untyped-def]
        raise RuntimeError("summary file not writable")

    config = make_project(tmp_path)
    lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(),
                          reporters=[github_down, broken])
    result = lifecycle.run()
    assert seen == [0]
    assert result.exit_code() is ExitCode.OK
    report = junit.read(tmp_path / "reports" / "junit.xml")
    assert [s.message for s in report.steps if s.phase is Phase.REPORT] == ["GitHub answered 502"]
    assert any("reporting failed" in e for e in lifecycle.display.events)  # type: ignore[attr-defined]


def test_runs_of_one_vagrant_directory_take_turns(tmp_path: Path) -> None:
    from cdd_ci.host.ledger import claim_directory

    world = World()
    config = make_project(tmp_path)
    config = config.model_copy(update={"timeouts": config.timeouts.model_copy(update={"up": 1})})
    other = claim_directory(config.vagrant_dir, timeout=1, on_wait=lambda _: None)
    try:
        lifecycle = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
        result = lifecycle.run()
    finally:
        other.close()
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert "still using" in result.steps[0].message
    assert world.calls.count("up broker") == 0  # nothing was built beside the other run
    assert any("waiting for it to finish" in e for e in lifecycle.display.events)  # type: ignore[attr-defined]
    assert world.host.machines == {}
    _, again = run(tmp_path, world)  # once it is free, the next run goes ahead
    assert again.exit_code() is ExitCode.OK


@pytest.mark.parametrize(("hours_later", "cleared"), [(1, False), (7, True)])
def test_a_run_leaves_a_cdd_up_environment_until_the_reaper_would_take_it(
        tmp_path: Path, hours_later: float, cleared: bool) -> None:
    """A developer's `cdd up` and a `cdd run` in the same checkout: the run must not end the
    developer's day, yet a forgotten environment goes once it is older than `cdd reap` allows."""
    world = World()
    config = make_project(tmp_path)
    morning = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(),
                        command="up").build()
    assert morning.kept and len(world.host.machines) == 2
    kept = set(world.host.machines)

    later = morning.started_at + hours_later * 3600
    lifecycle, result = run(tmp_path, world, clock=lambda: later)

    assert result.exit_code() is ExitCode.OK
    assert (set(world.host.machines) == set()) is cleared
    assert (set(world.host.machines) == kept) is not cleared
    if not cleared:
        assert any(morning.run_id in e and "left as it is" in e
                   for e in lifecycle.display.events)  # type: ignore[attr-defined]


def test_destroy_never_verifies_blind_when_the_listing_fails(tmp_path: Path) -> None:
    """A provider listing that fails is not "nothing left": exit 4, naming what failed."""
    world = World()
    config = make_project(tmp_path)
    killed = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation())
    killed._record("created")
    killed._vagrant.up("broker", timeout=1, log=tmp_path / "x.log", on_line=lambda _: None)
    del killed
    world.host.fail_listing = True
    steps = destroy_recorded(config, World(host=world.host).backend(), QuietDisplay())
    verified = next(s for s in steps if s.phase is Phase.VERIFY)
    assert verified.status is Status.ERROR
    assert "could not verify" in verified.message and "fake-ls" in verified.message
    # nothing is forgotten that may still be there: the ledger stays for the next destroy
    assert [led.run_id for led in LedgerStore(tmp_path / ".cdd").all()]

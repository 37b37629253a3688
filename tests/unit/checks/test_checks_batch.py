"""The first attempts of a machine's checks go in one session; retries go one by one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cdd_ci.checks.smoke import run_checks
from cdd_ci.infra.ssh import Command, SshError
from cdd_ci.models import CommandResult, Status
from tests.fakes.infra import FakeShell

from ..helpers import make_project
from .test_checks import EXTRA, Clock, ComesUpLater


class Batching(FakeShell):
    """A FakeShell that can also run a batch, answering each command as `run` would."""

    def __init__(self, inner: FakeShell, fail: bool = False) -> None:
        super().__init__(inner.name, inner.answers)
        self.inner = inner
        self.fail = fail
        self.batches: list[list[str]] = []

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult:
        self.calls.append(command)
        return self.inner.run(command, timeout=timeout, sudo=sudo)

    def run_many(self, commands: Sequence[Command]) -> list[CommandResult | SshError]:
        self.batches.append([c.command for c in commands])
        if self.fail:
            raise SshError(f"ssh to {self.name}: batch failed")
        out: list[CommandResult | SshError] = []
        for c in commands:
            try:
                out.append(self.inner.run(c.command, timeout=c.timeout, sudo=c.sudo))
            except SshError as exc:
                out.append(exc)
        return out


def test_first_attempts_go_in_one_batch_per_machine_and_retries_one_by_one(
        tmp_path: Path) -> None:
    config = make_project(tmp_path, EXTRA)
    clock = Clock()
    broker = Batching(FakeShell("broker").answer("echo pong", stdout="pong\n")
                      .answer("/dev/tcp", 0))
    database = Batching(ComesUpLater(3))
    results = run_checks(config, {"broker": broker, "database": database}, {},
                         deadline=100, clock=clock, sleep=clock.sleep)
    assert all(r.status is Status.PASSED for r in results), [r.message for r in results]
    assert [len(b) for b in broker.batches] == [2] and broker.calls == []
    assert [len(b) for b in database.batches] == [1]
    slow = next(r for r in results if r.name == "slow service")
    assert slow.attempts == 4 and len(database.calls) == 3  # the batch was attempt 1


def test_a_failed_batch_falls_back_to_one_session_per_check(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    broker = Batching(FakeShell("broker").answer("echo pong", stdout="pong\n")
                      .answer("/dev/tcp", 0), fail=True)
    results = run_checks(config, {"broker": broker, "database": FakeShell("database")}, {},
                         deadline=100)
    assert all(r.status is Status.PASSED for r in results)
    assert len(broker.batches) == 1 and len(broker.calls) == 2


def test_an_ssh_error_inside_a_batch_is_that_check_s_error(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    broker = Batching(FakeShell("broker").answer("echo pong", stdout="pong\n").unreachable())
    results = run_checks(config, {"broker": broker, "database": FakeShell("database")}, {},
                         deadline=100)
    by_name = {r.name: r for r in results}
    assert by_name["broker answers"].status is Status.PASSED
    assert by_name["db port from broker"].status is Status.ERROR
    assert "refused" in by_name["db port from broker"].message

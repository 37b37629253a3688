"""Checks: retry until ready, product failure vs infrastructure error, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

from cdd_ci.checks.smoke import run_checks
from cdd_ci.models import CommandResult, Status
from tests.fakes.infra import FakeShell

from ..helpers import make_project

EXTRA = """
[[checks]]
name = "slow service"
type = "service"
on = "database"
service = "mariadb"
interval = 1
deadline = 10
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ComesUpLater(FakeShell):
    """Inactive for the first `n` attempts, then active: a service still starting."""

    def __init__(self, n: int) -> None:
        super().__init__("database")
        self.n = n

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult:
        self.calls.append(command)
        if "mariadb" in command and len(self.calls) <= self.n:
            return CommandResult(command, 3, "activating\n", "")
        return CommandResult(command, 0, "active\n", "")


def test_retries_until_ready(tmp_path: Path) -> None:
    config = make_project(tmp_path, EXTRA)
    clock = Clock()
    shells = {"broker": FakeShell("broker").answer("echo pong", stdout="pong\n"),
              "database": ComesUpLater(3)}
    results = run_checks(config, shells, {}, deadline=100, clock=clock, sleep=clock.sleep)
    slow = next(r for r in results if r.name == "slow service")
    assert slow.status is Status.PASSED and slow.attempts == 4


def test_gives_up_at_the_deadline_with_the_last_answer(tmp_path: Path) -> None:
    config = make_project(tmp_path, EXTRA)
    clock = Clock()
    shells = {"broker": FakeShell("broker"), "database": ComesUpLater(1000)}
    results = run_checks(config, shells, {}, deadline=100, clock=clock, sleep=clock.sleep)
    slow = next(r for r in results if r.name == "slow service")
    assert slow.status is Status.FAILED
    assert slow.message == "mariadb is activating (after 10 attempts)"


class CancelledMeanwhile(ComesUpLater):
    """Never comes up; the job is cancelled while the check is being retried."""

    def __init__(self, cancelled: threading.Event) -> None:
        super().__init__(1000)
        self.cancelled = cancelled

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult:
        if "mariadb" in command and len(self.calls) >= 1:
            self.cancelled.set()
        return super().run(command, timeout=timeout, sudo=sudo)


def test_a_cancel_stops_the_retries_so_destroy_gets_the_time_left(tmp_path: Path) -> None:
    config = make_project(tmp_path, EXTRA.replace("deadline = 10", "deadline = 3600"))
    cancelled = threading.Event()
    shells = {"broker": FakeShell("broker"), "database": CancelledMeanwhile(cancelled)}
    results = run_checks(config, shells, {}, deadline=1e9, cancelled=cancelled)
    slow = next(r for r in results if r.name == "slow service")
    assert slow.status is Status.SKIPPED and slow.attempts == 2
    assert slow.message.startswith("cancelled before it passed; last: mariadb is activating")


def test_ssh_failure_is_an_error_not_a_failure(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    shells = {"broker": FakeShell("broker").unreachable(), "database": FakeShell("database")}
    results = run_checks(config, shells, {}, deadline=100)
    assert {r.status for r in results} == {Status.ERROR}
    assert "refused" in results[0].message


def test_port_check_on_a_machine_uses_the_shell(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    broker = FakeShell("broker").answer("echo pong", stdout="pong\n").answer("/dev/tcp", 1)
    results = run_checks(config, {"broker": broker}, {}, deadline=100)
    port = next(r for r in results if r.name == "db port from broker")
    assert port.status is Status.FAILED
    assert "database:3306 refused or unreachable from broker" in port.message


def test_http_from_a_machine_says_why_it_failed(tmp_path: Path) -> None:
    config = make_project(tmp_path, '\n[[checks]]\nname = "web"\ntype = "http"\non = "broker"\n'
                                    'url = "http://database:8080/"\ndeadline = 0\n')
    broker = FakeShell("broker").answer("echo pong", stdout="pong\n").answer(
        "python3", 1, stderr="Traceback (most recent call last):\nurllib.error.URLError: "
        "<urlopen error [Errno 111] Connection refused>\n")
    results = run_checks(config, {"broker": broker, "database": FakeShell("database")}, {},
                         deadline=100)
    web = next(r for r in results if r.name == "web")
    assert web.status is Status.FAILED
    assert web.message.startswith("GET http://database:8080/ failed from broker: ")
    assert "Connection refused" in web.message

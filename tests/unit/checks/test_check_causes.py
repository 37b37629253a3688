"""Checks name what went wrong: a machine's name that does not resolve on another machine is
reached at cdd's address for it, and a report tells a name that does not resolve, a refused
connection, a timeout and a wrong answer apart."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cdd_ci.checks import smoke
from cdd_ci.checks.smoke import run_checks
from cdd_ci.models import Status, StepResult
from tests.fakes.infra import FakeShell

from ..helpers import make_project

ADDRESSES = {"database": "10.0.3.7", "broker": "10.0.3.6"}
FELL_BACK = "cdd: name does not resolve here: database 10.0.3.7\n"
HTTP = ('\n[[checks]]\nname = "web"\ntype = "http"\non = "broker"\n'
        'url = "http://database:8080/health"\nbody = "ok"\ndeadline = 0\n')
COMMAND = ('\n[[checks]]\nname = "db answers"\ntype = "command"\non = "broker"\n'
           'command = "mysqladmin ping"\ndeadline = 0\n')


def check(tmp_path: Path, name: str, broker: FakeShell, extra: str = "",
          addresses: dict[str, str] | None = None) -> StepResult:
    config = make_project(tmp_path, extra)
    shells = {"broker": broker.answer("echo pong", stdout="pong\n"),
              "database": FakeShell("database")}
    results = run_checks(config, shells, ADDRESSES if addresses is None else addresses,
                         deadline=100)
    return next(r for r in results if r.name == name)


def test_a_port_check_on_a_machine_falls_back_to_cdd_s_address(tmp_path: Path) -> None:
    broker = FakeShell("broker").answer("/dev/tcp", 0, stderr=FELL_BACK)
    port = check(tmp_path, "db port from broker", broker)
    assert port.status is Status.PASSED
    assert port.message == ("database:3306 accepts connections "
                            "(at 10.0.3.7: database does not resolve on broker)")
    probe = next(c for c in broker.calls if "/dev/tcp" in c)
    # the guest's own answer first: the address cdd knows only when the name means nothing
    assert probe.index("getent hosts") < probe.index("h=10.0.3.7")


@pytest.mark.parametrize(("exit_code", "stderr", "how"), [
    (1, FELL_BACK + "bash: connect: Connection refused\n", "connection refused"),
    (124, FELL_BACK, "timed out after 10 s"),
    (1, FELL_BACK + "bash: connect: No route to host\n", "no route to host"),
])
def test_a_port_check_says_how_it_failed(tmp_path: Path, exit_code: int, stderr: str,
                                         how: str) -> None:
    broker = FakeShell("broker").answer("/dev/tcp", exit_code, stderr=stderr)
    port = check(tmp_path, "db port from broker", broker)
    assert port.status is Status.FAILED
    assert port.message == (f"database:3306 from broker: {how} "
                            "(at 10.0.3.7: database does not resolve on broker) (after 1 attempt)")


def test_a_name_nobody_knows_does_not_resolve(tmp_path: Path) -> None:
    broker = FakeShell("broker").answer(
        "/dev/tcp", 1, stderr="bash: line 1: database: Name or service not known\n"
        "bash: line 1: /dev/tcp/database/3306: Invalid argument\n")
    port = check(tmp_path, "db port from broker", broker, addresses={})
    assert port.message.startswith("database:3306 from broker: name does not resolve")
    assert "getent" not in next(c for c in broker.calls if "/dev/tcp" in c)


def test_a_loopback_address_is_not_a_way_to_another_machine(tmp_path: Path) -> None:
    # VirtualBox: the host reaches every machine at 127.0.0.1 through forwarded ports
    broker = FakeShell("broker").answer("/dev/tcp", 0)
    check(tmp_path, "db port from broker", broker, addresses={"database": "127.0.0.1"})
    assert "127.0.0.1" not in next(c for c in broker.calls if "/dev/tcp" in c)


@pytest.mark.parametrize(("stdout", "how"), [
    ("cdd-probe-failed:connection refused: [Errno 111] Connection refused\n",
     "connection refused: [Errno 111] Connection refused"),
    ("cdd-probe-failed:timed out: timed out\n", "timed out: timed out"),
    ("cdd-probe-failed:name does not resolve: [Errno -2] Name or service not known\n",
     "name does not resolve: [Errno -2] Name or service not known"),
])
def test_an_http_check_on_a_machine_says_how_it_failed(tmp_path: Path, stdout: str,
                                                       how: str) -> None:
    broker = FakeShell("broker").answer("python3", 3, stdout=stdout, stderr=FELL_BACK)
    web = check(tmp_path, "web", broker, HTTP)
    assert web.status is Status.FAILED
    assert web.message == (f"GET http://database:8080/health from broker: {how} "
                           "(at 10.0.3.7: database does not resolve on broker) (after 1 attempt)")
    assert "10.0.3.7" in next(c for c in broker.calls if "python3" in c)


@pytest.mark.parametrize(("stdout", "message"), [
    ("503\nstarting", "GET http://database:8080/health: HTTP 503, expected 200"),
    ("200\nnot yet", "GET http://database:8080/health: body does not match /ok/"),
])
def test_a_wrong_answer_is_not_a_connection_failure(tmp_path: Path, stdout: str,
                                                    message: str) -> None:
    web = check(tmp_path, "web", FakeShell("broker").answer("python3", 0, stdout=stdout), HTTP)
    assert web.status is Status.FAILED
    assert web.message == f"{message} (after 1 attempt)"


def test_the_http_probe_runs_and_falls_back(tmp_path: Path) -> None:
    """The probe itself, on this machine's Python: a name that does not resolve is replaced
    by the address given, and a refused connection is reported as one."""
    import subprocess
    import sys

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proc = subprocess.run([sys.executable, "-c", smoke._HTTP_PROBE,
                           f"http://cdd-no-such-machine.invalid:{port}/", "2", "127.0.0.1"],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": "/usr/bin:/bin", "no_proxy": "*"})
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("cdd-probe-failed:connection refused")
    assert "name does not resolve here: cdd-no-such-machine.invalid 127.0.0.1" in proc.stderr


def test_a_failed_command_check_leads_with_what_it_said(tmp_path: Path) -> None:
    broker = FakeShell("broker").answer(
        "mysqladmin", 127, stderr="bash: line 1: mysqladmin: command not found\n")
    step = check(tmp_path, "db answers", broker, COMMAND)
    assert step.message == ("bash: line 1: mysqladmin: command not found "
                            "(exit status 127, expected 0) (after 1 attempt)")


def test_host_side_failures_say_which_kind(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_project(tmp_path, '\n[[checks]]\nname = "from host"\ntype = "port"\n'
                                    'on = "host"\nhost = "database"\nport = 3306\n')
    job = next(j for j in smoke.plan(config) if j.check.name == "from host")

    def refuse(address: tuple[str, int], timeout: float) -> socket.socket:
        assert address == ("10.0.3.7", 3306)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    attempt = smoke.attempt_once(job.check, job.target, {}, ADDRESSES)
    assert attempt.message.startswith("database:3306 from the host: connection refused")

    def unknown(address: tuple[str, int], timeout: float) -> socket.socket:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unknown)
    attempt = smoke.attempt_once(job.check, job.target, {}, {})
    assert attempt.message.startswith("database:3306 from the host: name does not resolve")

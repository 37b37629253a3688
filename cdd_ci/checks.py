"""Smoke checks: each retried until ready or out of time, all machines at once.

Services come up after provisioning finishes (RabbitMQ takes seconds to open its port), so
a check is retried at its interval until it passes or its deadline passes. Only the last
attempt counts. A connection failure on that last attempt is the infrastructure's fault
(an error); a command that ran and gave the wrong answer is the product's (a failure).
"""

from __future__ import annotations

import re
import shlex
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cdd_ci.config import HOST, Check, CommandCheck, Config, HttpCheck, PortCheck, ServiceCheck
from cdd_ci.models import CommandResult, Phase, Status, StepResult
from cdd_ci.ssh import BatchShell, Command, Shell, SshError

MAX_WORKERS = 32
"""Checks in flight at once; OpenSSH multiplexes up to 10 sessions per master by default."""
OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class Attempt:
    status: Status
    message: str
    output: str = ""


@dataclass(frozen=True)
class Job:
    check: Check
    target: str


def plan(config: Config) -> list[Job]:
    """Every (check, where it runs) pair, in config order."""
    return [Job(check, target) for check in config.checks for target in config.targets(check.on)]


def run_checks(
    config: Config,
    shells: Mapping[str, Shell],
    addresses: Mapping[str, str],
    *,
    deadline: float,
    on_result: Callable[[StepResult], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[StepResult]:
    """Run all checks concurrently; `deadline` (clock time) bounds the whole phase.

    `addresses` maps machine names to addresses the host can reach, for checks run from
    the host against a machine by name.
    """
    jobs = plan(config)
    if not jobs:
        return []
    started = clock()
    first = _first_attempts(jobs, shells)

    def one(index: int) -> StepResult:
        result = _retry(jobs[index], shells, addresses, deadline, clock, sleep,
                        first.get(index), started)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(jobs))) as pool:
        return list(pool.map(one, range(len(jobs))))


def _first_attempts(jobs: list[Job], shells: Mapping[str, Shell]) -> dict[int, Attempt]:
    """The first attempt of every check on a machine, all of that machine's in one SSH
    session (one session per check costs a few milliseconds each, and the first attempt
    usually passes). A machine whose batch fails gets its checks run one by one."""
    batches: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        if isinstance(shells.get(job.target), BatchShell):
            batches.setdefault(job.target, []).append(i)
    first: dict[int, Attempt] = {}

    def batch(machine: str) -> None:
        shell = shells[machine]
        assert isinstance(shell, BatchShell)
        indexes = batches[machine]
        try:
            results = shell.run_many([_command(jobs[i].check) for i in indexes])
        except SshError:
            return  # the first attempts run one by one instead
        for i, res in zip(indexes, results, strict=True):
            first[i] = Attempt(Status.ERROR, str(res)) if isinstance(res, SshError) \
                else _judge(jobs[i].check, shell.name, res)

    if batches:
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            list(pool.map(batch, batches))
    return first


def _retry(
    job: Job,
    shells: Mapping[str, Shell],
    addresses: Mapping[str, str],
    phase_deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    first: Attempt | None = None,
    first_started: float = 0.0,
) -> StepResult:
    """`first`, if given, is the first attempt, already made (started at `first_started`)."""
    check = job.check
    started = first_started if first is not None else clock()
    stop = min(started + check.deadline, phase_deadline)
    attempts = 0
    while True:
        attempts += 1
        if first is not None:
            attempt, first = first, None
        else:
            attempt = attempt_once(check, job.target, shells, addresses)
        now = clock()
        if attempt.status is Status.PASSED or now + check.interval >= stop:
            break
        sleep(check.interval)
    return StepResult(
        phase=Phase.CHECK,
        machine=job.target,
        name=check.name,
        status=attempt.status,
        duration=clock() - started,
        message=attempt.message if attempt.status is Status.PASSED else
        f"{attempt.message} (after {attempts} attempt{'s' if attempts > 1 else ''})",
        output=attempt.output[-OUTPUT_TAIL:],
        attempts=attempts,
    )


def attempt_once(
    check: Check, target: str, shells: Mapping[str, Shell], addresses: Mapping[str, str]
) -> Attempt:
    """One try of one check; never raises for an expected kind of failure."""
    try:
        if target == HOST:
            return _from_host(check, addresses)
        shell = shells.get(target)
        if shell is None:
            return Attempt(Status.ERROR, f"no SSH connection to {target}")
        return _on_machine(check, shell)
    except SshError as exc:
        return Attempt(Status.ERROR, str(exc))


def _on_machine(check: Check, shell: Shell) -> Attempt:
    command = _command(check)
    res = shell.run(command.command, timeout=command.timeout, sudo=command.sudo)
    return _judge(check, shell.name, res)


def _command(check: Check) -> Command:
    """What one attempt of a check runs on its machine."""
    if isinstance(check, CommandCheck):
        return Command(check.command, check.timeout, check.sudo)
    if isinstance(check, ServiceCheck):
        svc = shlex.quote(check.service)
        # systemd guests answer with is-active; init-less containers (docker) with the init
        # script, which only root may ask (and /usr/sbin is only on root's PATH)
        return Command("if [ -d /run/systemd/system ]; then systemctl is-active " + svc
                       + "; else sudo -n service " + svc + " status; fi", check.timeout)
    if isinstance(check, PortCheck):
        return Command(f"timeout {check.timeout:g} bash -c "
                       f"{shlex.quote(f'</dev/tcp/{check.host}/{check.port}')}",
                       check.timeout + 5)
    assert isinstance(check, HttpCheck)
    script = (
        "import sys,urllib.request,urllib.error\n"
        "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2]))\n"
        "except urllib.error.HTTPError as e:\n r=e\n"
        "print(r.status);sys.stdout.write(r.read(65536).decode('utf-8','replace'))\n"
    )
    return Command(f"python3 -c {shlex.quote(script)} {shlex.quote(check.url)} "
                   f"{check.timeout:g}", check.timeout + 5)


def _judge(check: Check, machine: str, res: CommandResult) -> Attempt:
    """Pass or fail one attempt by what its command did."""
    if isinstance(check, CommandCheck):
        output = _both(res.stdout, res.stderr)
        if res.exit_code != check.exit_code:
            return Attempt(Status.FAILED,
                           f"exit status {res.exit_code}, expected {check.exit_code}", output)
        if check.stdout is not None and not re.search(check.stdout, res.stdout, re.MULTILINE):
            return Attempt(Status.FAILED, f"stdout does not match /{check.stdout}/", output)
        return Attempt(Status.PASSED, f"exit status {res.exit_code}", output)
    if isinstance(check, ServiceCheck):
        output = _both(res.stdout, res.stderr)
        state = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.exit_code == 0:
            return Attempt(Status.PASSED, f"{check.service} is {state or 'running'}", output)
        return Attempt(Status.FAILED, f"{check.service} is {state or 'not running'}", output)
    if isinstance(check, PortCheck):
        if res.exit_code == 0:
            return Attempt(Status.PASSED, f"{check.host}:{check.port} accepts connections")
        return Attempt(Status.FAILED, f"{check.host}:{check.port} refused or unreachable"
                       f" from {machine}", _both(res.stdout, res.stderr))
    assert isinstance(check, HttpCheck)
    if res.exit_code != 0:
        # the probe's last line of stderr says why: "URLError: <urlopen error [Errno 111]…>"
        why = (res.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        return Attempt(Status.FAILED, f"GET {check.url} failed from {machine}: {why}",
                       _both(res.stdout, res.stderr))
    status_line, _, body = res.stdout.partition("\n")
    return _judge_http(check, int(status_line or 0), body)


def _from_host(check: Check, addresses: Mapping[str, str]) -> Attempt:
    if isinstance(check, PortCheck):
        host = addresses.get(check.host, check.host)
        try:
            with socket.create_connection((host, check.port), timeout=check.timeout):
                return Attempt(Status.PASSED, f"{check.host}:{check.port} accepts connections")
        except OSError as exc:
            return Attempt(Status.FAILED, f"{check.host}:{check.port} from the host: {exc}")
    assert isinstance(check, HttpCheck)
    url = _resolve_url(check.url, addresses)
    try:
        with urllib.request.urlopen(url, timeout=check.timeout) as resp:
            return _judge_http(check, resp.status, resp.read(65536).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return _judge_http(check, exc.code, exc.read(65536).decode("utf-8", "replace"))
    except (OSError, ValueError) as exc:
        return Attempt(Status.FAILED, f"GET {check.url}: {exc}")


def _resolve_url(url: str, addresses: Mapping[str, str]) -> str:
    """Machine names mean nothing to the host's resolver: use the machine's address."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is not None and parts.hostname in addresses:
        netloc = addresses[parts.hostname] + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _judge_http(check: HttpCheck, status: int, body: str) -> Attempt:
    if status != check.status:
        return Attempt(Status.FAILED, f"GET {check.url}: HTTP {status}, expected {check.status}",
                       body)
    if check.body is not None and not re.search(check.body, body, re.MULTILINE):
        return Attempt(Status.FAILED, f"GET {check.url}: body does not match /{check.body}/", body)
    return Attempt(Status.PASSED, f"GET {check.url}: HTTP {status}")


def _both(stdout: str, stderr: str) -> str:
    return stdout + (f"\n--- stderr ---\n{stderr}" if stderr.strip() else "")

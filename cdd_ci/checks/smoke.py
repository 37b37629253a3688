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
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cdd_ci.config import HOST, Check, CommandCheck, Config, HttpCheck, PortCheck, ServiceCheck
from cdd_ci.infra.ssh import BatchShell, Command, Shell, SshError
from cdd_ci.models import CommandResult, Phase, Status, StepResult
from cdd_ci.report import cause

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
    on_step: Callable[[StepResult], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancelled: threading.Event | None = None,
) -> list[StepResult]:
    """Run all checks concurrently; `deadline` (clock time) bounds the whole phase.

    `addresses` maps machine names to addresses the host can reach, for checks run from
    the host against a machine by name. Once `cancelled` is set no check tries again: a
    cancelled job has about ten seconds left, and they belong to destroy.
    """
    jobs = plan(config)
    if not jobs:
        return []
    started = clock()
    first = _first_attempts(jobs, shells, addresses)

    def pause(seconds: float) -> None:
        if cancelled is None:
            sleep(seconds)
        else:
            cancelled.wait(seconds)

    def one(index: int) -> StepResult:
        result = _retry(jobs[index], shells, addresses, deadline, clock, pause,
                        first.get(index), started, cancelled)
        if on_step is not None:
            on_step(result)
        return result

    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(jobs)))
    try:
        return list(pool.map(one, range(len(jobs))))
    finally:
        # On a signal (raised here, in the main thread) waiting for the workers would hold
        # teardown up until each check's deadline; they stop on `cancelled` by themselves.
        pool.shutdown(wait=False, cancel_futures=True)


def _first_attempts(
    jobs: list[Job], shells: Mapping[str, Shell], addresses: Mapping[str, str]
) -> dict[int, Attempt]:
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
            results = shell.run_many([_command(jobs[i].check, addresses) for i in indexes])
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
    cancelled: threading.Event | None = None,
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
        if cancelled is not None and cancelled.is_set():
            attempt = Attempt(Status.SKIPPED, f"cancelled before it passed; last: "
                              f"{attempt.message}", attempt.output)
            break
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
        return _on_machine(check, shell, addresses)
    except SshError as exc:
        return Attempt(Status.ERROR, str(exc))


def _on_machine(check: Check, shell: Shell, addresses: Mapping[str, str]) -> Attempt:
    command = _command(check, addresses)
    res = shell.run(command.command, timeout=command.timeout, sudo=command.sudo)
    return _judge(check, shell.name, res)


NOT_RESOLVED = "cdd: name does not resolve here: "
"""What a probe prints on stderr when it falls back to cdd's address for a machine name."""
FAILED_HOW = "cdd-probe-failed:"
"""What the http probe prints before the kind of failure it met (and exits 3)."""
_LOOPBACK = ("127.", "::1", "localhost")


def fallback_address(host: str, addresses: Mapping[str, str]) -> str:
    """cdd's address for a machine named in a check run on another machine ("" if none).

    Used only when the name does not resolve there: the guest's own answer (often the
    private network's address in /etc/hosts) is what the product uses, and a service bound
    to that address alone would refuse the management one. A loopback address is where the
    host reaches a forwarded port (VirtualBox), which from another machine is itself."""
    address = addresses.get(host, "")
    return "" if address.startswith(_LOOPBACK) else address


def _command(check: Check, addresses: Mapping[str, str]) -> Command:
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
        fallback = fallback_address(check.host, addresses)
        resolve = (f"getent hosts \"$h\" >/dev/null 2>&1 || {{ echo "
                   f"{shlex.quote(NOT_RESOLVED + check.host + ' ' + fallback)} >&2; "
                   f"h={shlex.quote(fallback)}; }}; " if fallback else "")
        return Command(f"h={shlex.quote(check.host)}; {resolve}timeout {check.timeout:g} "
                       f"bash -c '</dev/tcp/'\"$h\"'/{check.port}'", check.timeout + 5)
    assert isinstance(check, HttpCheck)
    hostname = urllib.parse.urlsplit(check.url).hostname or ""
    return Command(f"python3 -c {shlex.quote(_HTTP_PROBE)} {shlex.quote(check.url)} "
                   f"{check.timeout:g} {shlex.quote(fallback_address(hostname, addresses))}",
                   check.timeout + 5)


# Runs on the machine: one GET, the status line then the body; or FAILED_HOW and what kind of
# failure it was, because the exception's class says it and its text is not the same on every
# Python.
_HTTP_PROBE = f"""\
import socket,sys,urllib.parse,urllib.request,urllib.error
url,t,alt=sys.argv[1],float(sys.argv[2]),sys.argv[3]
p=urllib.parse.urlsplit(url)
if alt and p.hostname:
 try:socket.getaddrinfo(p.hostname,None)
 except OSError:
  sys.stderr.write("{NOT_RESOLVED}%s %s\\n"%(p.hostname,alt))
  url=urllib.parse.urlunsplit(p._replace(netloc=alt+(":%d"%p.port if p.port else "")))
try:r=urllib.request.urlopen(url,timeout=t)
except urllib.error.HTTPError as e:r=e
except Exception as e:
 x=getattr(e,"reason",e)
 k=("name does not resolve" if isinstance(x,socket.gaierror) else "connection refused"
    if isinstance(x,ConnectionRefusedError) else "timed out"
    if isinstance(x,(socket.timeout,TimeoutError)) else "unreachable")
 print("{FAILED_HOW}"+k+": "+str(x));sys.exit(3)
print(r.status);sys.stdout.write(r.read(65536).decode('utf-8','replace'))
"""


def _judge(check: Check, machine: str, res: CommandResult) -> Attempt:
    """Pass or fail one attempt by what its command did."""
    if isinstance(check, CommandCheck):
        output = _both(res.stdout, res.stderr)
        if res.exit_code != check.exit_code:
            # what the command said about it first, as a person reading its output would
            why = cause.explain(res.stderr) or cause.explain(res.stdout)
            return Attempt(Status.FAILED,
                           (f"{why} (" if why else "")
                           + f"exit status {res.exit_code}, expected {check.exit_code}"
                           + (")" if why else ""), output)
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
        via = _fallback_note(res.stderr, machine)
        if res.exit_code == 0:
            return Attempt(Status.PASSED,
                           f"{check.host}:{check.port} accepts connections{via}")
        how = _port_failure(res, check.timeout)
        where = f"{check.host}:{check.port}"
        return Attempt(Status.FAILED,
                       f"{where} from {machine}: {how}{via}" if how else
                       f"{where} refused or unreachable from {machine}{via}",
                       _both(res.stdout, res.stderr))
    assert isinstance(check, HttpCheck)
    via = _fallback_note(res.stderr, machine)
    if res.exit_code == 3 and res.stdout.startswith(FAILED_HOW):
        how = res.stdout.removeprefix(FAILED_HOW).strip().splitlines()[0][:200]
        return Attempt(Status.FAILED, f"GET {check.url} from {machine}: {how}{via}",
                       _both(res.stdout, res.stderr))
    if res.exit_code != 0:
        # the probe's last line of stderr says why: "URLError: <urlopen error [Errno 111]…>"
        why = (res.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        return Attempt(Status.FAILED, f"GET {check.url} failed from {machine}: {why}",
                       _both(res.stdout, res.stderr))
    status_line, _, body = res.stdout.partition("\n")
    judged = _judge_http(check, int(status_line or 0), body)
    return Attempt(judged.status, judged.message + via, judged.output) if via else judged


def _fallback_note(stderr: str, machine: str) -> str:
    """", at <address>: <name> does not resolve on <machine>" when a probe fell back."""
    for line in stderr.splitlines():
        if line.startswith(NOT_RESOLVED):
            name, _, address = line.removeprefix(NOT_RESOLVED).partition(" ")
            return f" (at {address}: {name} does not resolve on {machine})"
    return ""


# bash's words for why /dev/tcp could not connect, and what a report calls each
_PORT_FAILURES = (
    ("Name or service not known", "name does not resolve"),
    ("Temporary failure in name resolution", "name does not resolve"),
    ("No address associated", "name does not resolve"),
    ("Connection refused", "connection refused"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network is unreachable"),
    ("Connection timed out", "timed out"),
)


def _port_failure(res: CommandResult, timeout: float) -> str:
    """Why the port probe failed, in the report's words ("" if it does not say)."""
    if res.exit_code == 124:  # timeout(1) stopped the connect
        return f"timed out after {timeout:g} s"
    for words, how in _PORT_FAILURES:
        if words in res.stderr:
            return how
    return ""


def _from_host(check: Check, addresses: Mapping[str, str]) -> Attempt:
    if isinstance(check, PortCheck):
        host = addresses.get(check.host, check.host)
        try:
            with socket.create_connection((host, check.port), timeout=check.timeout):
                return Attempt(Status.PASSED, f"{check.host}:{check.port} accepts connections")
        except OSError as exc:
            return Attempt(Status.FAILED,
                           f"{check.host}:{check.port} from the host: {_how(exc)} ({exc})")
    assert isinstance(check, HttpCheck)
    url = _resolve_url(check.url, addresses)
    try:
        with urllib.request.urlopen(url, timeout=check.timeout) as resp:
            return _judge_http(check, resp.status, resp.read(65536).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return _judge_http(check, exc.code, exc.read(65536).decode("utf-8", "replace"))
    except OSError as exc:
        return Attempt(Status.FAILED, f"GET {check.url} from the host: {_how(exc)} ({exc})")
    except ValueError as exc:
        return Attempt(Status.FAILED, f"GET {check.url}: {exc}")


def _how(exc: OSError) -> str:
    """What kind of connection failure an exception is, in the report's words."""
    reason = getattr(exc, "reason", exc)  # urllib wraps the socket's error in a URLError
    if isinstance(reason, socket.gaierror):
        return "name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return "unreachable"


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

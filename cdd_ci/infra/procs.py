"""Subprocesses that cannot outlive their timeout.

Vagrant forks Ruby, which forks ssh, lxc-start or docker; killing only the direct child
leaves the grandchildren holding the machine. Every command therefore runs in its own
process group (session), and a timeout or an interruption kills the whole group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cdd_ci.models import CommandResult
from cdd_ci.text import Scrubber

GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL to a timed-out process group."""
_SETPRIV = shutil.which("setpriv")
_NICE = shutil.which("nice")
OVERDUE_POLL = 0.25
BACKGROUND = 10
"""The niceness of a command nothing waits for yet (`vagrant --version` while the machines
come up): it takes the CPU the builds leave idle rather than slowing them down."""


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """Have the kernel kill the child if cdd itself is killed outright (SIGKILL).

    Children run in their own sessions (so a timeout can kill their whole tree), which also
    shields them from a kill aimed at cdd's process group: without this, a `vagrant up`
    would go on building after its run was killed. util-linux's setpriv sets the parent-death
    signal and execs the command; preexec_fn could do the same but is unsafe with threads.
    """
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else list(argv)


class CommandTimeout(Exception):
    def __init__(self, argv: Sequence[str], timeout: float, output: str = "") -> None:
        super().__init__(f"{' '.join(argv[:3])}… timed out after {timeout:.0f} s")
        self.argv = list(argv)
        self.timeout = timeout
        self.output = output


class LogSink(Protocol):
    """Where a command's output is written as it arrives: an open file, or anything like one."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class Rearm:
    """A second stage of one command with a deadline of its own: once a line of output
    contains `marker`, the clock starts again at `timeout` (a `vagrant up` that goes on
    to provision: booting and provisioning each keep their own phase timeout), and
    `reached` is called, before that line goes to the log."""

    marker: str
    timeout: float
    reached: Callable[[], None] = lambda: None


@dataclass
class Running:
    """Children currently alive, so a cancellation can kill them all at once.

    Once cancelled, a process registered afterwards is killed on arrival: a worker thread
    that was just about to start `vagrant provision` must not slip past the cancellation.
    """

    groups: set[int]
    lock: threading.Lock
    cancelled: bool = False

    def add(self, pgid: int) -> None:
        with self.lock:
            self.groups.add(pgid)
            if self.cancelled:
                _signal_group(pgid, signal.SIGKILL)

    def discard(self, pgid: int) -> None:
        with self.lock:
            self.groups.discard(pgid)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            for pgid in list(self.groups):
                _signal_group(pgid, signal.SIGKILL)


def new_registry() -> Running:
    return Running(groups=set(), lock=threading.Lock())


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    on_line: Callable[[str], None] | None = None,
    log: LogSink | None = None,
    registry: Running | None = None,
    rearm: Rearm | None = None,
    overdue: Callable[[], bool] | None = None,
    background: bool = False,
) -> CommandResult:
    """Run argv, killing its whole process group after `timeout` seconds (or `rearm`'s,
    counted from its marker), or as soon as `overdue()` says so (asked every
    OVERDUE_POLL seconds: the caller keeps deadlines of its own); those two when
    streaming only. `background` runs it at a lower priority.

    Output lines are passed to `on_line` and written to `log` as they arrive, so a long
    `vagrant up` can be followed live and its log survives a kill. stdout and stderr are
    merged when streaming (Vagrant interleaves them meaningfully); otherwise kept apart.
    Every byte of output is scrubbed of secrets before anything sees it: the logs, the live
    display and the result (and so the reports and issues) never get one.
    """
    started = time.monotonic()
    scrub = Scrubber.from_env(os.environ, env or {})
    streaming = on_line is not None or log is not None
    command = [_NICE, "-n", str(BACKGROUND), *argv] if background and _NICE else list(argv)
    proc = subprocess.Popen(
        die_with_parent(command),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if streaming else subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    if registry is not None:
        registry.add(proc.pid)
    try:
        if streaming:
            out, err = _stream(proc, timeout, argv, input_text, on_line, log, scrub,
                               rearm, overdue), ""
        else:
            try:
                out, err = proc.communicate(input_text, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                out, err = proc.communicate()
                raise CommandTimeout(argv, timeout, scrub((out or "") + (err or ""))) from None
            out, err = scrub(out), scrub(err)
    except BaseException:
        # KeyboardInterrupt or a signal-raised exception: never leave the group behind
        if proc.poll() is None:
            _kill_group(proc)
        raise
    finally:
        if registry is not None:
            registry.discard(proc.pid)
    return CommandResult(
        command=" ".join(argv),
        exit_code=proc.returncode,
        stdout=out,
        stderr=err,
        duration=time.monotonic() - started,
    )


def _stream(
    proc: subprocess.Popen[str],
    timeout: float,
    argv: Sequence[str],
    input_text: str | None,
    on_line: Callable[[str], None] | None,
    log: LogSink | None,
    scrub: Scrubber,
    rearm: Rearm | None = None,
    overdue: Callable[[], bool] | None = None,
) -> str:
    lines: list[str] = []
    timed_out = threading.Event()
    ended = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_group(proc, wait=False)

    def start(seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        return timer

    def watch(check: Callable[[], bool]) -> None:
        while not ended.wait(OVERDUE_POLL):
            if check():
                expire()
                return

    timer = start(timeout)
    if overdue is not None:
        threading.Thread(target=watch, args=(overdue,), daemon=True,
                         name="overdue").start()
    try:
        if input_text is not None and proc.stdin is not None:
            proc.stdin.write(input_text)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = scrub(raw)
            lines.append(line)
            if rearm is not None and rearm.marker in line and not timed_out.is_set():
                timer.cancel()
                timeout, reached, rearm = rearm.timeout, rearm.reached, None
                timer = start(timeout)
                reached()
            if log is not None:
                log.write(line)
                log.flush()
            if on_line is not None:
                on_line(line.rstrip("\n"))
        proc.wait()
    finally:
        ended.set()
        timer.cancel()
    if timed_out.is_set():
        raise CommandTimeout(argv, timeout, "".join(lines[-200:]))
    return "".join(lines)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen[str], wait: bool = True) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        pass
    # the leader may be gone while grandchildren linger in the group
    _signal_group(proc.pid, signal.SIGKILL)
    if wait:
        try:
            proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            pass

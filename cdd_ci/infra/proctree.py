"""A run's processes, found on the host by the mark they carry, and stopped as one tree.

Every process of a run's build carries `CDD_RUN_ID=<run id>` in its environment: cdd gives
it to Vagrant, and Vagrant's Ruby, its provider helpers and their children inherit it. When
the cdd that owned the run is gone (SIGKILLed with its job, or orphaned by a shell that did
not pass a cancel on), those processes are still building; destroying under them fails,
or a half-created machine reappears after its removal. So before a run is destroyed from
outside, its tree is stopped: every process that carries the mark, every process in the
session of one that does (each command runs in its own session; `sudo` resets the
environment of what it starts, the session stays), every process whose command line names
one of the run's machines (`cdd-<run id>-...`: a provider helper that `sudo` started in a
session of its own, with `use_pty` as Debian sets it, and whose parents were killed before it,
so nothing else ties it to the run), and every descendant of those.

Linux only: it reads /proc, which is where the providers run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARK = "CDD_RUN_ID"
PROC = Path("/proc")
MACHINES = ("[lxc monitor]", "/usr/bin/qemu-system-")
"""Processes that are a machine rather than its build (an LXC container's monitor carries
the mark it was started with, a libvirt VM's QEMU names it): the provider's own tools stop
those, with the machine."""


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    sid: int
    started: int
    """Clock ticks after boot: with the pid, names one process for good (pids are reused)."""
    command: str


def read(pid: int, proc: Path = PROC) -> Process | None:
    """One process from /proc; None if it is gone or cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        command = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    # the command name, in parentheses, may itself contain spaces and parentheses
    fields = stat[stat.rindex(")") + 2:].split()
    return Process(pid, int(fields[1]), int(fields[3]), int(fields[19]),
                   command.decode(errors="replace").strip())


def started(pid: int, proc: Path = PROC) -> int:
    """When a process started (clock ticks after boot); 0 if it is gone."""
    found = read(pid, proc)
    return found.started if found else 0


def alive(pid: int, started_at: int, proc: Path = PROC) -> bool:
    """Is process `pid` still the one that started at `started_at`? (0: not recorded.)"""
    found = read(pid, proc)
    return found is not None and (started_at == 0 or found.started == started_at)


def of_run(run_id: str, proc: Path = PROC) -> list[Process]:
    """The processes of a run (see the module docstring); never this process."""
    everything = [p for p in (read(int(d.name), proc) for d in _pids(proc)) if p]
    machines = {p.pid for p in everything if p.command.startswith(MACHINES)}
    everything = [p for p in everything if p.pid not in machines and p.ppid not in machines]
    names = f"cdd-{run_id}-"
    marked = {p.pid for p in everything if names in p.command or _carries(p.pid, run_id, proc)}
    sessions = {p.sid for p in everything if p.pid in marked and p.sid > 1}
    tree = marked | {p.pid for p in everything if p.sid in sessions}
    children: dict[int, list[int]] = {}
    for p in everything:
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(tree)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    tree.discard(os.getpid())
    return sorted((p for p in everything if p.pid in tree), key=lambda p: p.pid)


def stop(processes: Iterable[Process], *, timeout: float = 5.0, proc: Path = PROC) -> list[str]:
    """SIGKILL them all, then wait until they are gone; returns what outlived `timeout`.

    SIGKILL at once, not SIGTERM first: these are the leftovers of a run that is already
    being destroyed, and a `vagrant up` asked politely goes on creating the machine.
    Stopped together (SIGSTOP first) so that none of them starts a new child meanwhile.
    """
    targets = list(processes)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for p in targets:
            if alive(p.pid, p.started, proc):
                _signal(p.pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in targets if alive(p.pid, p.started, proc) and not _zombie(p.pid, proc)]
        if not left or time.monotonic() >= deadline:
            return [f"{p.pid} ({p.command[:60]})" for p in left]
        time.sleep(0.1)


def _pids(proc: Path) -> list[Path]:
    try:
        return [d for d in proc.iterdir() if d.name.isdigit()]
    except OSError:
        return []


def _carries(pid: int, run_id: str, proc: Path) -> bool:
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{MARK}={run_id}".encode() in environ.split(b"\0")


def _zombie(pid: int, proc: Path) -> bool:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].startswith("Z")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

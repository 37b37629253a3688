"""One `vagrant up` that builds several machines at once, told apart machine by machine.

Where the machines are VMs under QEMU's software emulation (libvirt without KVM), every CPU
second Vagrant takes comes out of the guests. Vagrant's libvirt plugin builds machines in
parallel on threads of one Ruby process; two processes instead each pay Ruby's start-up and
its polling (one `vagrant up` of two machines 15 s of CPU, two side by side 28 s). Where the
guests are not short of CPU (containers), a process per machine is quicker, since Ruby's
threads share one core (see BUILT_TOGETHER). What cdd reports stays per machine: Vagrant
prefixes every line with the machine's name (`==> alpha:`, `    alpha:`) and names each
failed machine in its closing error ("An error occurred while executing the action on the
'alpha' machine"), so each machine still gets its own up and provision logs, live lines,
phase timeouts and failure.

One process has one fate: when a machine overruns its phase timeout, the whole `vagrant up`
is killed, and the machines still building are told that is why they stopped. A machine is
known to be finished when the after-up trigger of vagrant/lib/cdd_env.rb runs on it; with a
Vagrantfile that lacks it, a machine counts as building until the command ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO

LineSink = Callable[[str], None]

PROVISIONING = "Running provisioner:"
"""Vagrant's line as a machine's first provisioner starts: where, in the output of one
`vagrant up`, bringing the machine up ends and provisioning it begins."""
FINISHED = "Running trigger: cdd: writing how to reach the machine"
"""The after-up trigger of vagrant/lib/cdd_env.rb: Vagrant runs it once the machine is up
and provisioned, so from this line on the machine is done."""
_FAILED_EARLY = "An error occurred. The error will be shown after all tasks complete."
_ALL_ERRORS = "An error occurred while executing multiple actions in parallel."
_MACHINE_ERROR = re.compile(
    r"^An (?:unexpected )?error occurred (?:while|when) executing the action on the$"
    r"|^An (?:unexpected )?error occurred (?:while|when) executing the action on the "
    r"'(?P<machine>[^']+)'$")
_ERROR_HEADING_END = re.compile(r"^(?:'(?P<machine>[^']+)' )?machine\. Please (?:handle this "
                                r"error then try again|report this as a bug):$")
_BRINGING = re.compile(r"^Bringing machine '(?P<machine>[^']+)' up")


@dataclass(frozen=True)
class Provisioning:
    """For `up`: provision in the same Vagrant process (a separate `vagrant provision` is
    one more Ruby start-up, 1.5 s or more, on each machine's critical path). Provisioning
    keeps its own timeout and log, and `started` is called as it begins."""

    timeout: float
    log: Path
    started: Callable[[], None]


@dataclass(frozen=True)
class MachineUp:
    """One machine of a shared `vagrant up`: where its lines go, and its provisioning."""

    name: str
    log: Path
    """up.log: the machine's lines until its first provisioner starts."""
    on_line: LineSink
    provision: Provisioning
    finished: Callable[[], None] = lambda: None
    """Called once the machine is known to be up and provisioned (see FINISHED), while
    the others may still be building."""


class Stage(Enum):
    UP = "up"
    PROVISION = "provision"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Stopped:
    """A machine that did not come out of the shared `vagrant up` well."""

    machine: str
    action: str
    """What a separate command would have been: `up alpha`, or `provision alpha`."""
    output: str
    """Its own lines (from its provisioning on, once that began) and its part of Vagrant's
    closing error: what explains it."""
    timed_out: float | None = None
    """The phase timeout it overran, if it is why the command was killed."""
    killed_for: str = ""
    """The machine whose timeout killed the command, if this one was still building."""


@dataclass
class _Machine:
    want: MachineUp
    up_timeout: float
    deadline: float
    stage: Stage = Stage.UP
    lines: list[str] = field(default_factory=list)
    provisioning_at: int = -1
    """Index in `lines` where provisioning began (-1: it did not)."""
    error: list[str] = field(default_factory=list)
    fh: IO[str] | None = None

    @property
    def building(self) -> bool:
        return self.stage in (Stage.UP, Stage.PROVISION)

    def write(self, text: str) -> None:
        if self.fh is None:
            path = self.want.provision.log if self.stage is not Stage.UP else self.want.log
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = path.open("a", encoding="utf-8")
        self.fh.write(text)
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def timeout(self) -> float:
        return self.want.provision.timeout if self.stage is Stage.PROVISION else self.up_timeout

    def action(self) -> str:
        return f"{'provision' if self.provisioning_at >= 0 else 'up'} {self.want.name}"

    def own_output(self) -> str:
        start = max(self.provisioning_at, 0)
        return "".join(self.lines[start:] + self.error)


class SharedUp:
    """The log sink of one `vagrant up` of several machines: each line goes to its machine's
    log and live display, and each machine's phase is followed (up, provisioning, done or
    failed) with its own deadline. Lines that name no machine go to every machine still
    building (a Vagrantfile warning concerns them all)."""

    def __init__(self, machines: Sequence[MachineUp], up_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self._machines = {m.name: _Machine(m, up_timeout, now + up_timeout) for m in machines}
        self._shared: list[str] = []
        """The lines that name no machine."""
        # the longest name first: "web" must not claim the lines of "web2"
        names = sorted(self._machines, key=len, reverse=True)
        self._prefix = re.compile(r"^(?:==> | {4})(" + "|".join(map(re.escape, names))
                                  + r"): ?")
        self._errors = False
        self._error_of: _Machine | None = None
        self._preamble: list[str] = []
        """The closing error's general heading, for the log of each machine it names."""
        self.killed_for: _Machine | None = None

    def __enter__(self) -> SharedUp:
        return self

    def __exit__(self, *_exc: object) -> None:
        for machine in self._machines.values():
            machine.close()

    # -- as the command's log sink -----------------------------------------------------

    def header(self, text: str) -> None:
        """The command line, at the head of every machine's log."""
        for machine in self._machines.values():
            machine.write(text)

    def write(self, text: str) -> int:
        line = text.rstrip("\n")
        if self._errors:
            self._closing_error(line, text)
            return len(text)
        machine = self._machine_of(line)
        if machine is None:
            self._shared.append(text)
            if line == _ALL_ERRORS:
                self._errors = True
                self._preamble.append(text)
                return len(text)
            for machine in self._machines.values():
                if machine.building:
                    machine.write(text)
            return len(text)
        self._follow(machine, line)
        machine.lines.append(text)
        machine.write(text)
        machine.want.on_line(line)
        return len(text)

    def flush(self) -> None:
        pass  # every machine's log is flushed line by line

    def _machine_of(self, line: str) -> _Machine | None:
        prefixed = self._prefix.match(line)
        if prefixed is not None:
            return self._machines[prefixed.group(1)]
        bringing = _BRINGING.match(line)
        return self._machines.get(bringing.group("machine")) if bringing else None

    def _follow(self, machine: _Machine, line: str) -> None:
        if PROVISIONING in line and machine.stage is Stage.UP:
            machine.stage = Stage.PROVISION
            machine.provisioning_at = len(machine.lines)
            machine.deadline = self.clock() + machine.want.provision.timeout
            machine.close()  # from this line on, its provision log
            machine.want.provision.started()
        elif FINISHED in line and machine.building:
            machine.stage = Stage.DONE
            machine.want.finished()
        elif line.endswith(_FAILED_EARLY):
            machine.stage = Stage.FAILED

    def _closing_error(self, line: str, text: str) -> None:
        """Vagrant's closing error: one paragraph per failed machine, each opened by a
        two-line heading that names it (split over the lines differently by the two kinds
        of error). Each machine's log gets the general heading and its own paragraph."""
        heading = _MACHINE_ERROR.match(line) or _ERROR_HEADING_END.match(line)
        name = heading.group("machine") if heading else None
        if name in self._machines:
            self._error_of = self._machines[name]
            self._error_of.write("".join(self._preamble))
        elif heading is None and self._error_of is not None:
            self._error_of.error.append(text)
        if self._error_of is None:
            self._preamble.append(text)
        else:
            self._error_of.write(text)

    # -- what became of the machines ---------------------------------------------------

    def overdue(self) -> bool:
        """A machine still building is past its phase's deadline: the command must go (the
        first such machine is remembered as the reason)."""
        now = self.clock()
        for machine in self._machines.values():
            if machine.building and now >= machine.deadline:
                self.killed_for = self.killed_for or machine
                return True
        return False

    def longest(self) -> float:
        """A deadline for the whole command, should the per-machine ones not be watched:
        every phase of the slowest machine."""
        return max(m.up_timeout + m.want.provision.timeout for m in self._machines.values())

    def stopped(self, exit_code: int) -> list[Stopped]:
        """The machines that failed, after the command exited by itself."""
        if exit_code == 0:
            return []
        named = [m for m in self._machines.values() if m.error]
        if named:
            return [Stopped(m.want.name, m.action(), m.own_output()) for m in named]
        # an error that names no machine (a Vagrantfile that does not load, a provider
        # missing) concerns every machine that did not finish, and is in nobody's lines
        shared = "".join(self._shared)
        return [Stopped(m.want.name, m.action(), m.own_output() + shared)
                for m in self._machines.values() if m.stage is not Stage.DONE]

    def killed(self) -> list[Stopped]:
        """The machines that failed, or were still building, when the command was killed
        for a deadline (before Vagrant's closing error: a failed machine's own lines are
        all there is of its failure)."""
        late, now = self.killed_for, self.clock()
        out: list[Stopped] = []
        for m in self._machines.values():
            if m.stage is Stage.FAILED:
                out.append(Stopped(m.want.name, m.action(), m.own_output()))
            elif not m.building:
                continue
            elif m is late or now >= m.deadline:
                out.append(Stopped(m.want.name, m.action(), m.own_output(),
                                   timed_out=m.timeout()))
            else:
                out.append(Stopped(m.want.name, m.action(), m.own_output(),
                                   killed_for=late.want.name if late else ""))
        return out

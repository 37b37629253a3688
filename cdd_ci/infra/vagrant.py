"""Vagrant, behind one small interface.

python-vagrant supplies what it does soundly: finding the executable, building the command
line and parsing `--machine-readable` status. Running the commands is done here instead,
because python-vagrant has no timeouts and its `status()`/`ssh()` swallow failures: every
call below has a deadline that kills Vagrant's whole process tree, and a failure raises.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

import vagrant as python_vagrant
from cdd_ci.infra import procs
from cdd_ci.infra.vagrant_batch import PROVISIONING as PROVISIONING
from cdd_ci.infra.vagrant_batch import LineSink as LineSink
from cdd_ci.infra.vagrant_batch import MachineUp as MachineUp
from cdd_ci.infra.vagrant_batch import Provisioning as Provisioning
from cdd_ci.infra.vagrant_batch import SharedUp, Stopped
from cdd_ci.models import CommandResult, Package
from cdd_ci.report import cause

BOOTED = "Machine booted and ready!"
"""Vagrant's line once a machine answers SSH, before it sets the hostname and provisions:
from here on `vagrant ssh-config` can say how to reach it."""
SSH_CONFIG_DIR = "CDD_SSH_CONFIG_DIR"
"""Where a Vagrantfile that loads vagrant/lib/cdd_env.rb has each machine's `vagrant up`
write its ssh-config once done: under the run's own Vagrant state directory."""


BUILT_TOGETHER = frozenset({"libvirt"})
"""Providers whose machines one `vagrant up` builds, on threads of one Ruby process: where
the CPU a second Ruby process takes is taken from emulated guests (see
infra/vagrant_batch.py). Docker's plugin could too, but its machines were built sooner by a
process each, measured side by side (10.5 s against 11.8 s). vagrant-lxc's machines too: in
a process each, a machine found locked (LOCK_RETRIES) is retried alone. VirtualBox's plugin
builds one machine after another.

Machines are destroyed by a process each on every provider: one `vagrant destroy
--parallel` was slower on docker (4.3 s against 3.4 s) and no quicker on libvirt, whose
plugin (0.11.2) then now and then fails a machine with "constant
VagrantPlugins::ProviderLibvirt::Action::ProvisionerCleanup not defined", its actions being
loaded by two threads at once."""


@dataclass(frozen=True)
class Installation:
    """This host's Vagrant: its version and the plugins it loads (a new one can break a
    build), for "what changed" when a later run fails."""

    version: str
    plugins: tuple[Package, ...]


GONE_STATES = frozenset({"not_created", "not created"})
LOCKED = "because it is locked"
_PLUGIN = re.compile(r"^(\S+) \(([^,)]+)")
T = TypeVar("T")
LOCK_RETRIES = (1.0, 2.0, 4.0, 8.0)
"""Vagrant locks a machine's entry in its host-wide index each time it asks the machine's
state, and raises "because it is locked" instead of waiting when another process holds it:
a `vagrant global-status --prune` run by anyone on the host asks every machine's state,
and so does a `vagrant status` beside a `vagrant up`. Waiting it out and running the
command again is safe, except that an `up` is run again on a machine made anew
(`VagrantCli._start_over`)."""


class VagrantError(Exception):
    """Vagrant itself failed (not the product): an infrastructure error."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class MachineStatus:
    name: str
    state: str
    provider: str

    @property
    def exists(self) -> bool:
        return self.state not in GONE_STATES


class Environment(Protocol):
    """What the lifecycle needs from a Vagrant environment."""

    def up(self, machine: str, *, timeout: float, log: Path, on_line: LineSink,
           provision: Provisioning | None = None) -> None:
        """Create and boot the machine; with `provision`, provision it too. A failure
        after provisioning began raises as `vagrant provision` would have."""

    def builds_together(self) -> bool:
        """One `vagrant up` builds all the machines in parallel (`up_together`)."""

    def up_together(self, machines: Sequence[MachineUp], *, timeout: float) \
            -> dict[str, VagrantError]:
        """Create, boot and provision the machines in one Vagrant process; what failed, by
        machine, each as its own `up` or `provision` would have failed. A machine that
        overruns its phase's timeout stops them all (the others are told why)."""

    def ssh_config(self, machines: list[str], *, timeout: float) -> str: ...

    def writes_ssh_config(self) -> bool:
        """The Vagrantfile has each machine's `vagrant up` write its ssh-config
        (vagrant/lib/cdd_env.rb), so nobody need ask it meanwhile."""

    def ssh_config_written(self, machines: list[str]) -> str | None:
        """What the machines' own `vagrant up` wrote of how to reach them, if it wrote it
        for every one of them (as `vagrant ssh-config` would print it)."""

    def status(self, *, timeout: float) -> list[MachineStatus]: ...

    def destroy(self, machine: str, *, timeout: float, log: Path | None = None) -> None: ...

    def installation(self, *, timeout: float) -> Installation: ...

    def box(self, machine: str) -> str: ...

    def known(self, machine: str) -> bool:
        """Vagrant still holds an id for the machine (it drops it once the machine is gone)."""


class VagrantCli:
    """The real thing: the `vagrant` executable in one Vagrantfile directory."""

    def __init__(
        self,
        directory: Path,
        provider: str,
        env: Mapping[str, str],
        registry: procs.Running | None = None,
    ) -> None:
        self.directory = directory
        self.provider = provider
        self.env = dict(env)
        self.registry = registry
        self._written = self._data_dir() / "cdd-ssh-config"
        self.env[SSH_CONFIG_DIR] = str(self._written)
        self._pv = python_vagrant.Vagrant(root=str(directory), env=self.env)

    def _argv(self, *args: str) -> list[str]:
        try:
            return list(self._pv._make_vagrant_command(list(args)))
        except RuntimeError:
            raise VagrantError("vagrant is not installed (see scripts/setup-host.sh)") from None

    def _run(
        self,
        *args: str,
        timeout: float,
        log: Path | _SplitLog | None = None,
        on_line: LineSink | None = None,
        background: bool = False,
        again: Callable[[], None] = lambda: None,
    ) -> CommandResult:
        deadline = time.monotonic() + timeout
        if isinstance(log, _SplitLog):
            deadline += log.provision.timeout

        def waiting(note: str) -> None:
            with _sink(log) as sink:
                if sink is not None:
                    sink.write(note + "\n")
            if on_line is not None:
                on_line(note)

        return _waiting_out_locks(
            lambda left: self._run_once(*args, timeout=left, log=log, on_line=on_line,
                                        background=background),
            timeout, deadline, waiting, again)

    def _run_once(
        self,
        *args: str,
        timeout: float,
        log: Path | _SplitLog | None = None,
        on_line: LineSink | None = None,
        background: bool = False,
    ) -> CommandResult:
        argv = self._argv(*args)
        split = log if isinstance(log, _SplitLog) else None
        rearm = procs.Rearm(PROVISIONING, split.provision.timeout, split.provisioning_began) \
            if split else None
        try:
            with _sink(log) as sink:
                if sink is not None:
                    sink.write(f"$ {' '.join(['vagrant', *args])}\n")
                result = procs.run(
                    argv, timeout=timeout, cwd=self.directory, env=self.env,
                    log=sink, on_line=on_line, registry=self.registry, rearm=rearm,
                    background=background,
                )
        except procs.CommandTimeout as exc:
            action, output = split.blame(args, exc.output) if split else (_action(args),
                                                                          exc.output)
            raise timed_out(action, exc.timeout, output, exc.output) from None
        except OSError as exc:
            raise VagrantError(f"cannot run vagrant: {exc}") from None
        if result.exit_code != 0:
            output = result.stdout + result.stderr
            action, own = split.blame(args, output) if split else (_action(args), output)
            raise VagrantError(failure_message(action, result.exit_code, own), output)
        return result

    def up(self, machine: str, *, timeout: float, log: Path, on_line: LineSink,
           provision: Provisioning | None = None) -> None:
        if provision is None:
            self._run("up", machine, f"--provider={self.provider}", "--no-provision",
                      timeout=timeout, log=log, on_line=on_line,
                      again=lambda: self._start_over(machine, timeout=timeout, log=log))
            return
        with _SplitLog(log, provision) as split:
            self._run("up", machine, f"--provider={self.provider}", "--provision",
                      timeout=timeout, log=split, on_line=on_line,
                      again=lambda: self._start_over(machine, timeout=timeout, log=split))

    def _start_over(self, machine: str, *, timeout: float, log: Path | _SplitLog) -> None:
        """Before an `up` is run again: the machine a failed `up` left half made is destroyed.
        Run on a machine that exists, `up` resumes only what its provider chooses to:
        vagrant-lxc's and vagrant-libvirt's `up` of a running machine skip what the boot
        does (private network, hostname), and vagrant-lxc's the provisioners too."""
        if self.known(machine):
            self._run("destroy", "-f", machine, timeout=timeout, log=log)  # waits locks out too

    def builds_together(self) -> bool:
        return self.provider in BUILT_TOGETHER

    def up_together(self, machines: Sequence[MachineUp], *, timeout: float) \
            -> dict[str, VagrantError]:
        args = ("up", *(m.name for m in machines), f"--provider={self.provider}",
                "--provision", "--parallel")
        with SharedUp(machines, timeout) as shared:
            shared.header(f"$ {' '.join(['vagrant', *args])}\n")
            try:
                result = procs.run(
                    self._argv(*args), timeout=shared.longest(), cwd=self.directory,
                    env=self.env, log=shared, registry=self.registry, overdue=shared.overdue)
            except procs.CommandTimeout:
                return {s.machine: _stopped_error(s) for s in shared.killed()}
            except OSError as exc:
                raise VagrantError(f"cannot run vagrant: {exc}") from None
            failed = {s.machine: VagrantError(failure_message(s.action, result.exit_code,
                                                              s.output), s.output)
                      for s in shared.stopped(result.exit_code)}
        # a machine found locked is built again on its own, as `up` waits locks out
        for want in machines:
            if want.name in failed and LOCKED in failed[want.name].output:
                try:
                    self._start_over(want.name, timeout=timeout, log=want.log)
                    self.up(want.name, timeout=timeout, log=want.log, on_line=want.on_line,
                            provision=want.provision)
                except VagrantError as exc:
                    failed[want.name] = exc
                else:
                    del failed[want.name]
        return failed

    def ssh_config(self, machines: list[str], *, timeout: float) -> str:
        return self._run("ssh-config", *machines, timeout=timeout).stdout

    def writes_ssh_config(self) -> bool:
        return self._written.is_dir()  # made when the Vagrantfile is read

    def ssh_config_written(self, machines: list[str]) -> str | None:
        try:
            return "".join((self._written / m).read_text(encoding="utf-8") for m in machines)
        except (OSError, UnicodeDecodeError):
            return None

    def status(self, *, timeout: float) -> list[MachineStatus]:
        out = self._run("status", "--machine-readable", timeout=timeout).stdout
        return [
            MachineStatus(s.name, s.state or "unknown", s.provider or self.provider)
            for s in self._pv._parse_status(out)
            if s.name
        ]

    def destroy(self, machine: str, *, timeout: float, log: Path | None = None) -> None:
        # `destroy -f` of a machine that was never created, or is gone, exits 0: idempotent
        self._run("destroy", "-f", machine, timeout=timeout, log=log)

    def _data_dir(self) -> Path:
        # a relative VAGRANT_DOTFILE_PATH is relative to the Vagrantfile's directory
        return self.directory / (self.env.get("VAGRANT_DOTFILE_PATH") or ".vagrant")

    def _machine_dir(self, machine: str) -> Path:
        return self._data_dir() / "machines" / machine

    def box(self, machine: str) -> str:
        """The box a created machine was made from, as Vagrant recorded it ("" if none)."""
        meta = self._machine_dir(machine) / self.provider / "box_meta"
        try:
            box = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""  # docker images have none; a machine not created has none yet
        return f"{box.get('name', '')} {box.get('version', '')}".strip()

    def known(self, machine: str) -> bool:
        # any provider's: a machine once made by another provider is still Vagrant's to destroy
        return any(self._machine_dir(machine).glob("*/id"))

    def installation(self, *, timeout: float) -> Installation:
        """Asked while the machines come up, and waited for only by the inventory at the end:
        `vagrant plugin list` loads every plugin (0.6 s of CPU or more), so both commands
        yield the CPU to the builds."""
        listed = self._run("plugin", "list", timeout=timeout, background=True).stdout
        version = self._run("--version", timeout=timeout, background=True).stdout
        return Installation(version.strip().removeprefix("Vagrant ").strip(),
                            tuple(parse_plugins(listed)))


@contextmanager
def _sink(log: Path | _SplitLog | None) -> Iterator[procs.LogSink | None]:
    """Where a command's output goes: nowhere, a log file opened for it, or the split log
    its caller holds open."""
    if log is None or isinstance(log, _SplitLog):
        yield log
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        yield fh


class _SplitLog:
    """The log of a `vagrant up` that provisions: up.log until the first provisioner
    starts, the provisioning's own log from that line on (the line included)."""

    def __init__(self, up_log: Path, provision: Provisioning) -> None:
        self.provision = provision
        self.provisioning = False
        self._logs = (up_log, provision.log)
        self._fh: IO[str] | None = None
        self._open(up_log)

    def _open(self, path: Path) -> None:
        if self._fh is not None:
            self._fh.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def __enter__(self) -> _SplitLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def provisioning_began(self) -> None:
        """Told by the command's run (procs.Rearm) at Vagrant's first provisioner line; once
        only, though a locked machine's retry prints it again."""
        if self.provisioning:
            return
        self.provisioning = True
        self._open(self._logs[1])
        self.provision.started()

    def write(self, text: str) -> int:
        assert self._fh is not None
        return self._fh.write(text)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def blame(self, args: tuple[str, ...], output: str) -> tuple[str, str]:
        """Which command a failure is told as, and the output it is explained from: once
        provisioning began, `provision <machine>` and only what came after."""
        if not self.provisioning:
            return _action(args), output
        machine = next((a for a in args[1:] if not a.startswith("-")), "")
        at = output.find(PROVISIONING)
        start = output.rfind("\n", 0, at) + 1 if at >= 0 else 0
        return f"provision {machine}".strip(), output[start:]


@dataclass(frozen=True)
class GlobalEntry:
    """One machine in Vagrant's own host-wide index (`vagrant global-status`)."""

    id: str
    name: str
    provider: str
    state: str
    directory: str


def _waiting_out_locks(attempt: Callable[[float], T], timeout: float, deadline: float,
                       waiting: Callable[[str], None] = lambda _: None,
                       again: Callable[[], None] = lambda: None) -> T:
    """`attempt(timeout)`, then again (with what is left before `deadline`) for as long as
    Vagrant says a machine is locked, and LOCK_RETRIES and the time allow; `again` is
    called before each new attempt."""
    for delay in LOCK_RETRIES:
        try:
            return attempt(timeout)
        except VagrantError as exc:
            if LOCKED not in exc.output or time.monotonic() + delay >= deadline:
                raise
        waiting(f"(machine locked by another Vagrant process: retrying in {delay:g} s)")
        time.sleep(delay)
        again()
        timeout = deadline - time.monotonic()
    return attempt(timeout)


def _anywhere(args: tuple[str, ...], env: Mapping[str, str], *, timeout: float) \
        -> CommandResult:
    """A Vagrant command about the whole host, run from no Vagrantfile's directory. Reading
    the index asks every machine's state, so it too can find a machine locked."""
    exe = python_vagrant.get_vagrant_executable()
    if exe is None:
        raise VagrantError("vagrant is not installed (see scripts/setup-host.sh)")
    what = " ".join(a for a in args if not a.startswith("-"))

    def attempt(left: float) -> CommandResult:
        try:
            result = procs.run([exe, *args], timeout=left, env=env)
        except procs.CommandTimeout:
            raise VagrantError(f"vagrant {what} timed out after {timeout:.0f} s") from None
        except OSError as exc:
            raise VagrantError(f"cannot run vagrant: {exc}") from None
        if result.exit_code != 0:
            output = result.stdout + result.stderr
            raise VagrantError(f"vagrant {what} failed (exit {result.exit_code}): "
                               f"{last_error_line(output)}", output)
        return result

    return _waiting_out_locks(attempt, timeout, time.monotonic() + timeout)


def global_status(
    env: Mapping[str, str], *, prune: bool, timeout: float
) -> list[GlobalEntry]:
    """Vagrant's machine index; `prune` first drops the entries of machines that are gone."""
    args = ("global-status", *(["--prune"] if prune else []))
    return parse_global_status(_anywhere(args, env, timeout=timeout).stdout)


def parse_plugins(output: str) -> list[Package]:
    """`vagrant plugin list`: `vagrant-lxc (1.4.3, system)` lines; anything else is ignored."""
    return [Package(m.group(1), m.group(2).strip())
            for m in map(_PLUGIN.match, output.splitlines()) if m]


def parse_global_status(text: str) -> list[GlobalEntry]:
    """The table between the dashed rule and the first blank line (the machine-readable
    form leaves out the machine names, which are what tells a cdd machine)."""
    entries: list[GlobalEntry] = []
    in_table = False
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        if not in_table:
            in_table = bool(line) and set(line) == {"-"}
            continue
        fields = line.split(None, 4)
        if len(fields) < 5 or not re.fullmatch(r"[0-9a-f]{7,}", fields[0]):
            break
        entries.append(GlobalEntry(*fields))
    return entries


def destroy_global(entry_id: str, env: Mapping[str, str], *, timeout: float) -> None:
    """`vagrant destroy -f <id>` from anywhere, by the index's id."""
    _anywhere(("destroy", "-f", entry_id), env, timeout=timeout)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# Messages whose words hide their cause, with what a person on the runner should look at.
_KNOWN_CAUSES = (
    # vagrant-lxc gives up waiting for the container's address with exactly this line, and
    # the usual reason is that nothing answers DHCP on the container's bridge.
    (re.compile(r"^There was an error executing lxc-info$"),
     "the container got no IP address: is lxc-net's DHCP server (dnsmasq on lxcbr0) "
     "running? scripts/setup-host.sh starts it again"),
)


def failure_message(action: str, exit_code: int, output: str) -> str:
    """The cause first (what the JUnit message, the summary line and the issue lead with),
    then which Vagrant command it stopped; the full output goes to the step's details."""
    why = cause.explain(output)
    if not why:
        return f"vagrant {action} failed (exit {exit_code}) with no output"
    return f"{_with_cause(why)} (vagrant {action} exited {exit_code})"


def timed_out(action: str, seconds: float, own: str, output: str) -> VagrantError:
    """A Vagrant command killed at its deadline, told by what it was doing (read from
    `own`, its part of the output) when it was stopped."""
    doing = cause.running(own)
    return VagrantError(f"vagrant {action} timed out after {seconds:.0f} s"
                        + (f" while running: {doing}" if doing else ""), output)


def _stopped_error(stopped: Stopped) -> VagrantError:
    """A machine of a shared `vagrant up` killed for a deadline, its own or another's, or
    one that had failed before."""
    if stopped.timed_out is not None:
        return timed_out(stopped.action, stopped.timed_out, stopped.output, stopped.output)
    if stopped.killed_for:
        return VagrantError(f"vagrant {stopped.action} stopped unfinished: the one `vagrant "
                            f"up` building every machine was killed when "
                            f"{stopped.killed_for} overran its timeout", stopped.output)
    # it had failed already, and Vagrant was killed before it could say more
    return VagrantError(f"{last_error_line(stopped.output)} (vagrant {stopped.action} failed)",
                        stopped.output)


def _action(args: tuple[str, ...]) -> str:
    # "up alpha", not "up alpha --provider=lxc --no-provision": options are ours, not news
    return " ".join(a for a in args if not a.startswith("-")) or " ".join(args)


def last_error_line(output: str) -> str:
    """The line of Vagrant's output most likely to say what went wrong, for one-line reports."""
    why = cause.explain(output)
    return _with_cause(why) if why else "no output"


def _with_cause(line: str) -> str:
    for pattern, hint in _KNOWN_CAUSES:
        if pattern.search(line):
            return f"{line} ({hint})"
    return line

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import vagrant as python_vagrant
from cdd_ci import procs
from cdd_ci.models import CommandResult

LineSink = Callable[[str], None]

GONE_STATES = frozenset({"not_created", "not created"})
LOCKED = "because it is locked"
LOCK_RETRIES = (1.0, 2.0, 4.0, 8.0)
"""Vagrant takes a per-machine file lock for every action, and some providers (vagrant-lxc's
ssh_info) take it again from inside a sibling machine's action: machines built by parallel
processes then now and then see "machine is locked" for a moment. Waiting it out is safe
because `up` and `provision` resume where they stopped."""


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

    def up(self, machine: str, *, timeout: float, log: Path, on_line: LineSink) -> None: ...

    def provision(
        self, machine: str, *, timeout: float, log: Path, on_line: LineSink
    ) -> None: ...

    def ssh_config(self, machines: list[str], *, timeout: float) -> str: ...

    def status(self, *, timeout: float) -> list[MachineStatus]: ...

    def destroy(self, machine: str, *, timeout: float, log: Path | None = None) -> None: ...

    def versions(self, *, timeout: float) -> dict[str, str]: ...

    def box(self, machine: str) -> str: ...


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
        log: Path | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult:
        deadline = time.monotonic() + timeout
        for delay in LOCK_RETRIES:
            try:
                return self._run_once(*args, timeout=timeout, log=log, on_line=on_line)
            except VagrantError as exc:
                if LOCKED not in exc.output or time.monotonic() + delay >= deadline:
                    raise
            if on_line is not None:
                on_line(f"(machine locked by another Vagrant process: retrying in {delay:g} s)")
            time.sleep(delay)
            timeout = deadline - time.monotonic()
        return self._run_once(*args, timeout=timeout, log=log, on_line=on_line)

    def _run_once(
        self,
        *args: str,
        timeout: float,
        log: Path | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult:
        argv = self._argv(*args)
        try:
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("a", encoding="utf-8") as fh:
                    fh.write(f"$ {' '.join(['vagrant', *args])}\n")
                    result = procs.run(
                        argv, timeout=timeout, cwd=self.directory, env=self.env,
                        log=fh, on_line=on_line, registry=self.registry,
                    )
            else:
                result = procs.run(
                    argv, timeout=timeout, cwd=self.directory, env=self.env,
                    on_line=on_line, registry=self.registry,
                )
        except procs.CommandTimeout as exc:
            raise VagrantError(f"vagrant {args[0]} timed out after {timeout:.0f} s",
                               exc.output) from None
        except OSError as exc:
            raise VagrantError(f"cannot run vagrant: {exc}") from None
        if result.exit_code != 0:
            output = result.stdout + result.stderr
            raise VagrantError(
                f"vagrant {' '.join(args)} failed (exit {result.exit_code}): "
                f"{last_error_line(output)}",
                output,
            )
        return result

    def up(self, machine: str, *, timeout: float, log: Path, on_line: LineSink) -> None:
        self._run("up", machine, f"--provider={self.provider}", "--no-provision",
                  timeout=timeout, log=log, on_line=on_line)

    def provision(self, machine: str, *, timeout: float, log: Path, on_line: LineSink) -> None:
        self._run("provision", machine, timeout=timeout, log=log, on_line=on_line)

    def ssh_config(self, machines: list[str], *, timeout: float) -> str:
        return self._run("ssh-config", *machines, timeout=timeout).stdout

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

    def box(self, machine: str) -> str:
        """The box a created machine was made from, as Vagrant recorded it ("" if none)."""
        data_dir = Path(self.env.get("VAGRANT_DOTFILE_PATH") or self.directory / ".vagrant")
        meta = data_dir / "machines" / machine / self.provider / "box_meta"
        try:
            box = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""  # docker images have none; a machine not created has none yet
        return f"{box.get('name', '')} {box.get('version', '')}".strip()

    def versions(self, *, timeout: float) -> dict[str, str]:
        out = self._run("--version", timeout=timeout).stdout.strip()
        return {"vagrant_version": out.removeprefix("Vagrant ").strip()}


@dataclass(frozen=True)
class GlobalEntry:
    """One machine in Vagrant's own host-wide index (`vagrant global-status`)."""

    id: str
    name: str
    provider: str
    state: str
    directory: str


def global_status(
    env: Mapping[str, str], *, prune: bool, timeout: float
) -> list[GlobalEntry]:
    """Vagrant's machine index; `prune` first drops the entries of machines that are gone."""
    exe = python_vagrant.get_vagrant_executable()
    if exe is None:
        raise VagrantError("vagrant is not installed (see scripts/setup-host.sh)")
    argv = [exe, "global-status", *(["--prune"] if prune else [])]
    try:
        result = procs.run(argv, timeout=timeout, env=env)
    except procs.CommandTimeout:
        raise VagrantError(f"vagrant global-status timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise VagrantError(f"cannot run vagrant: {exc}") from None
    if result.exit_code != 0:
        raise VagrantError(f"vagrant global-status failed (exit {result.exit_code}): "
                           f"{last_error_line(result.stdout + result.stderr)}")
    return parse_global_status(result.stdout)


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
    exe = python_vagrant.get_vagrant_executable()
    if exe is None:
        raise VagrantError("vagrant is not installed (see scripts/setup-host.sh)")
    try:
        result = procs.run([exe, "destroy", "-f", entry_id], timeout=timeout, env=env)
    except procs.CommandTimeout:
        raise VagrantError(f"vagrant destroy {entry_id} timed out after {timeout:.0f} s") \
            from None
    except OSError as exc:
        raise VagrantError(f"cannot run vagrant: {exc}") from None
    if result.exit_code != 0:
        raise VagrantError(f"vagrant destroy {entry_id} failed (exit {result.exit_code}): "
                           f"{last_error_line(result.stdout + result.stderr)}")


_ERROR_HINTS = re.compile(r"(error|failed|fatal|cannot|could not|timed out)", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# Messages whose words hide their cause, with what a person on the runner should look at.
_KNOWN_CAUSES = (
    # vagrant-lxc gives up waiting for the container's address with exactly this line, and
    # the usual reason is that nothing answers DHCP on the container's bridge.
    (re.compile(r"^There was an error executing lxc-info$"),
     "the container got no IP address: is lxc-net's DHCP server (dnsmasq on lxcbr0) "
     "running? scripts/setup-host.sh starts it again"),
)


def last_error_line(output: str) -> str:
    """The line of Vagrant's output most likely to say what went wrong, for one-line reports."""
    lines = [_ANSI.sub("", raw).strip() for raw in output.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("/usr/", "from /"))]
    for line in reversed(lines):
        if _ERROR_HINTS.search(line):
            return _with_cause(line[:300])
    return lines[-1][:300] if lines else "no output"


def _with_cause(line: str) -> str:
    for pattern, cause in _KNOWN_CAUSES:
        if pattern.search(line):
            return f"{line} ({cause})"
    return line

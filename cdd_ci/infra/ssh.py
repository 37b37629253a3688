"""Commands on the machines over one persistent, multiplexed OpenSSH connection each.

`vagrant ssh -c` starts Vagrant's Ruby runtime and a new SSH handshake for every command
(well over a second each). Instead the output of one `vagrant ssh-config` call is written
to a file, one master connection per machine is opened with ControlMaster, and every check
then costs one multiplexed channel: a few milliseconds.

Exit status 255 is OpenSSH's own failure (connection refused, auth, timeout): it is raised
as SshError, an infrastructure error, never returned as a failed check.
"""

from __future__ import annotations

import base64
import io
import queue
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cdd_ci.infra import procs
from cdd_ci.models import CommandResult
from cdd_ci.words import plural

SSH_FAILED = 255
BASE_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
    "-o", "LogLevel=ERROR",
)

KEX = ("curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,"
       "ecdh-sha2-nistp521,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
       "diffie-hellman-group14-sha256")
"""Key exchange for the master connections: OpenSSH's defaults before 9.0. Its newer
default, the post-quantum sntrup761x25519 hybrid, doubled the time to log in (about 160 ms
instead of 80 ms per machine on the 2-core test host) and protects nothing that matters for
connections to throw-away machines that last minutes."""

MAX_SESSIONS = 8
"""Commands in flight at once over one master connection. sshd refuses more sessions than
its MaxSessions (10 by default) on one connection, and the ssh client then quietly opens a
whole new connection for the command: ten times slower, and under load it fails."""


_OPTION = re.compile(r"^(\S+?)(?:\s*=\s*|\s+)(.*)$")


class SshError(Exception):
    """The connection failed, not the command: an infrastructure error."""


@dataclass(frozen=True)
class HostConfig:
    alias: str
    options: dict[str, str]

    @property
    def hostname(self) -> str:
        return self.options.get("hostname", self.alias)

    @property
    def port(self) -> int:
        return int(self.options.get("port", "22"))


def parse_ssh_config(text: str) -> dict[str, HostConfig]:
    """Parse `vagrant ssh-config` output (one `Host` block per machine).

    Keys are case-insensitive in OpenSSH, so they are lower-cased; values keep their case
    and lose surrounding quotes. Both `Key value` and `Key=value` forms are accepted.
    """
    hosts: dict[str, HostConfig] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _OPTION.match(line)
        if match is None:
            continue
        key, value = match.group(1).lower(), match.group(2).strip().strip('"')
        if key == "host":
            current = {}
            hosts[value] = HostConfig(alias=value, options=current)
        elif current is not None and key not in current:
            current[key] = value  # first value wins, as in OpenSSH
    return hosts


class Shell(Protocol):
    """Run a shell command on one machine."""

    name: str

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult: ...


@dataclass(frozen=True)
class Command:
    """One of several commands run together (Shell.run's arguments)."""

    command: str
    timeout: float
    sudo: bool = False


@runtime_checkable
class BatchShell(Shell, Protocol):
    """A shell that can also run several commands at once in one session."""

    def run_many(self, commands: Sequence[Command]) -> list[CommandResult | SshError]: ...


BATCH_HEAD = r"""__cdd_d=$(mktemp -d) || exit 97
for __cdd_t in tar base64; do command -v $__cdd_t >/dev/null || exit 97; done
exec 2>/dev/null
case ${SHELL:-} in */bash) __cdd_sub=1 ;; *) __cdd_sub= ;; esac
set -m
__cdd_one() {
  __cdd_i=$1; read -r __cdd_s _ </proc/uptime
  case $2 in
    sudo) sudo -n bash -c "$3" ;;
    sub) if [ -n "$__cdd_sub" ]; then
           (__cdd_c=$3; set +m --; unset -f __cdd_one __cdd_late; eval "$__cdd_c")
         else "${SHELL:-/bin/sh}" -c "$3"; fi ;;
    *) "${SHELL:-/bin/sh}" -c "$3" ;;
  esac </dev/null >"$__cdd_d/$__cdd_i.out" 2>"$__cdd_d/$__cdd_i.err"; __cdd_rc=$?
  read -r __cdd_e _ </proc/uptime; echo "$__cdd_rc $__cdd_s $__cdd_e" >"$__cdd_d/$__cdd_i.rc"
}
__cdd_late() {
  eval "__cdd_p=\$__cdd_p$1"; kill -0 -- "-$__cdd_p" || return 0
  : >"$__cdd_d/$1.late"; kill -"$2" -- "-$__cdd_p"
}
"""
"""Runs each command in the background, recording its exit status and when it started and
ended, then sends every file back as one base64 tar archive.

Where the login shell is bash, as Vagrant's boxes have it, a command runs in a subshell of
this bash: what `bash -c` would do, without starting a bash per command, which under QEMU's
software emulation took 45 ms each, half the batch. Only a command that names `$$` gets a
shell of its own, since a subshell's `$$` is its parent's and checks that name temporary
files after it would share them. Job control (`set -m`) puts each command in a process group
of its own, so that one watchdog can end an overrunning command with everything it started:
TERM at its time limit, KILL two seconds later, leaving `<i>.late` behind (a `timeout` per
command did the same with one more process each: another 30 ms)."""
BATCH_TAIL = r"""set +m
wait $__cdd_pids
kill -- "-$__cdd_wd"
tar -C "$__cdd_d" -cf - . | base64 -w0
rm -rf "$__cdd_d"
"""
KILL_AFTER = 2.0
"""Seconds between TERM and KILL for a command over its time limit (as `timeout -k 2`)."""
_OWN_PID = re.compile(r"\$\$|\$\{\$\}")


def batch_script(commands: Sequence[Command]) -> str:
    """The remote command that runs `commands` at once, each under its own time limit.

    Run by bash whatever the login shell (Vagrant's own commands need bash on the machine);
    each command still runs as Shell.run runs it: by the login shell, or bash under sudo.
    """
    assert commands, "a batch of nothing has no watchdog to stop"
    lines = [BATCH_HEAD]
    for i, c in enumerate(commands):
        how = "sudo" if c.sudo else "own" if _OWN_PID.search(c.command) else "sub"
        lines.append(f"__cdd_one {i} {how} {shlex.quote(c.command)} & __cdd_p{i}=$!\n")
    events: dict[float, list[str]] = {}
    for i, c in enumerate(commands):
        events.setdefault(c.timeout, []).append(f"__cdd_late {i} TERM")
        events.setdefault(c.timeout + KILL_AFTER, []).append(f"__cdd_late {i} KILL")
    watchdog, now = [], 0.0
    for at in sorted(events):
        watchdog += [f"sleep {at - now:g}", *events[at]]
        now = at
    lines.append(f"{{ {'; '.join(watchdog)}; }} & __cdd_wd=$!\n")
    pids = " ".join(f"$__cdd_p{i}" for i in range(len(commands)))
    lines.append(f'__cdd_pids="{pids}"\n')
    lines.append(BATCH_TAIL)
    return f"exec bash -c {shlex.quote(''.join(lines))}"


Master = subprocess.Popen[bytes]


class Spawner:
    """Starts the master connections from one thread that lives as long as they should.

    procs.die_with_parent's parent-death signal is sent when the *thread* that started the
    child ends (prctl(2)), not the process. Masters opened from a pool of worker threads
    were killed the moment their thread finished, and every command then quietly fell back
    to a whole new SSH connection of its own (1-2 s each instead of a few ms).
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], Master], Future[Master]] | None] = \
            queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="cdd-ssh-masters",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            start, future = request
            try:
                future.set_result(start())
            except BaseException as exc:  # handed to the caller, raised in its thread
                future.set_exception(exc)

    def spawn(self, start: Callable[[], Master]) -> Master:
        future: Future[Master] = Future()
        self._requests.put((start, future))
        return future.result()

    def close(self) -> None:
        """Once every master is closed: ending the thread kills what it started."""
        self._requests.put(None)
        self._thread.join(timeout=5)


class SshSession:
    """One machine behind a ControlMaster connection."""

    def __init__(
        self,
        name: str,
        config_file: Path,
        control_path: Path,
        registry: procs.Running | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.name = name
        self.config_file = config_file
        self.control_path = control_path
        self.registry = registry
        self.spawner = spawner
        """Where the master is started from; None: the calling thread, which must then
        outlive the connection."""
        self._master: subprocess.Popen[bytes] | None = None
        self._slots = threading.BoundedSemaphore(MAX_SESSIONS)

    def _argv(self, *extra: str) -> list[str]:
        return [
            "ssh", "-F", str(self.config_file), *BASE_OPTIONS,
            "-o", f"ControlPath={self.control_path}", *extra,
        ]

    def open(self, *, timeout: float) -> None:
        """Start the master connection and wait until it accepts sessions."""
        def start() -> Master:
            return subprocess.Popen(
                procs.die_with_parent(
                    [*self._argv("-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                                 "-o", f"KexAlgorithms={KEX}", "-N"), self.name]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )

        self._master = self.spawner.spawn(start) if self.spawner else start()
        if self.registry is not None:
            self.registry.add(self._master.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                err = self._master.stderr.read().decode(errors="replace") if \
                    self._master.stderr else ""
                raise SshError(f"ssh to {self.name} failed: {err.strip() or 'no detail'}")
            # the master creates its socket once it has logged in: watch for it (cheap),
            # then let ssh confirm, rather than starting `ssh -O check` over and over
            if not self.control_path.exists():
                time.sleep(0.005)
                continue
            check = subprocess.run(
                [*self._argv("-O", "check"), self.name],
                capture_output=True, timeout=5, check=False,
            )
            if check.returncode == 0:
                return
            time.sleep(0.05)
        self.close()
        raise SshError(f"ssh to {self.name}: no connection within {timeout:.0f} s")

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult:
        remote = f"sudo -n bash -c {shlex.quote(command)}" if sudo else command
        argv = [*self._argv("-o", "ControlMaster=no", "-T"), self.name, "--", remote]
        try:
            with self._slots:
                result = procs.run(argv, timeout=timeout, registry=self.registry)
        except procs.CommandTimeout:
            raise SshError(f"ssh to {self.name}: command timed out after {timeout:.0f} s") \
                from None
        if result.exit_code == SSH_FAILED:
            raise SshError(
                f"ssh to {self.name} failed: {result.stderr.strip()[-300:] or 'exit 255'}"
            )
        return CommandResult(command, result.exit_code, result.stdout, result.stderr,
                             result.duration)

    def run_many(self, commands: Sequence[Command]) -> list[CommandResult | SshError]:
        """All the commands at once in one session: a few milliseconds in all, instead of a
        few per command. Each runs in the background on the machine under its own time
        limit (see BATCH_HEAD); results come back in the given order. Raises SshError if
        the session fails or the machine lacks what the script needs (then run them one by
        one)."""
        if not commands:
            return []
        script = batch_script(commands)
        limit = max((c.timeout for c in commands), default=0) + 15
        result = self.run(script, timeout=limit)
        if result.exit_code != 0:
            raise SshError(f"ssh to {self.name}: batch of {plural(len(commands), 'command')} "
                           f"failed (exit {result.exit_code}): "
                           f"{result.stderr.strip()[-200:]}")
        try:
            data: dict[str, str] = {}
            raw = io.BytesIO(base64.b64decode(result.stdout))
            with tarfile.open(fileobj=raw) as archive:  # read in memory, never extracted
                for member in archive:
                    content = archive.extractfile(member)
                    if content is not None:
                        data[member.name.removeprefix("./")] = \
                            content.read().decode(errors="replace")
        except (ValueError, tarfile.TarError) as exc:
            raise SshError(f"ssh to {self.name}: unreadable batch results: {exc}") from None
        found: dict[int, CommandResult | SshError] = {}
        for i, command in enumerate(commands):
            if f"{i}.late" in data:
                # as `timeout` has it, whatever the command did once told to stop (the
                # watchdog's TERM usually ends the recorder of its exit status with it)
                found[i] = SshError(f"ssh to {self.name}: command timed out after "
                                    f"{command.timeout:.0f} s")
                continue
            try:
                code, start, end = data[f"{i}.rc"].split()
                rc, seconds = int(code), max(0.0, float(end) - float(start))
            except (KeyError, ValueError):
                continue
            found[i] = CommandResult(command.command, rc, data.get(f"{i}.out", ""),
                                     data.get(f"{i}.err", ""), seconds)
        missing = [i for i in range(len(commands)) if i not in found]
        if missing:
            raise SshError(f"ssh to {self.name}: batch returned no result for "
                           f"{len(missing)} of {plural(len(commands), 'command')}")
        return [found[i] for i in range(len(commands))]

    def close(self) -> None:
        if self._master is None:
            return
        subprocess.run([*self._argv("-O", "exit"), self.name], capture_output=True,
                       timeout=5, check=False)
        try:
            self._master.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self._master.kill()
            self._master.wait(timeout=3)
        if self.registry is not None:
            self.registry.discard(self._master.pid)
        self._master = None


class Shells(Protocol):
    @property
    def shells(self) -> Mapping[str, Shell]: ...

    @property
    def addresses(self) -> Mapping[str, str]:
        """Machine name -> an address the runner itself can reach."""

    def open(self, machine: str, *, timeout: float) -> None: ...

    def close(self) -> None: ...


class SshPool:
    """The sessions of one run, opened from one `vagrant ssh-config` output."""

    def __init__(self, ssh_config: str, registry: procs.Running | None = None) -> None:
        hosts = parse_ssh_config(ssh_config)
        self._dir = Path(tempfile.mkdtemp(prefix="cdd-ssh-"))
        self.config_file = self._dir / "config"
        self.config_file.write_text(ssh_config, encoding="utf-8")
        self.config_file.chmod(0o600)
        self.addresses = {name: host.hostname for name, host in hosts.items()}
        self._spawner = Spawner()
        # unix socket paths are limited to ~108 bytes: short names in a short temp dir
        self.shells: dict[str, SshSession] = {
            name: SshSession(name, self.config_file, self._dir / f"{i}.sock", registry,
                             self._spawner)
            for i, name in enumerate(hosts)
        }

    def open(self, machine: str, *, timeout: float) -> None:
        session = self.shells.get(machine)
        if session is None:
            raise SshError(f"vagrant ssh-config has no entry for {machine}")
        session.open(timeout=timeout)

    def close(self) -> None:
        for session in self.shells.values():
            try:
                session.close()
            except (OSError, subprocess.SubprocessError):
                pass
        self._spawner.close()
        for path in self._dir.iterdir():
            path.unlink(missing_ok=True)
        self._dir.rmdir()

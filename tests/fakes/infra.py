"""Stateful fakes of Vagrant, SSH and the provider, each able to be told to fail.

They keep the same state a real host would (which machines exist, what runs on them), so
the lifecycle tests can assert what a user would notice: what is left running.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cdd_ci.infra.providers import ListingFailed, Resource, machine_name
from cdd_ci.infra.ssh import SshError
from cdd_ci.infra.vagrant import (
    Installation,
    MachineStatus,
    MachineUp,
    Provisioning,
    VagrantError,
)
from cdd_ci.models import CommandResult, Package


@dataclass
class FakeHost:
    """The provider's view: machines by provider-level name."""

    provider: str = "fake"
    machines: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_remove: bool = False
    fail_listing: bool = False
    """The provider's listing tool fails (a daemon down, a hung `virsh`)."""
    plug_pulled_by_vagrant: bool = False
    """Vagrant's destroy powers machines off at once (libvirt): teardown need not stop them."""
    stopped: list[str] = field(default_factory=list)
    """Machines powered off by `stop`, in order."""

    def find(self, provider: str, run_ids: Sequence[str] | None = None) -> list[Resource]:
        if self.fail_listing:
            raise ListingFailed(
                f"listing {provider} machines failed: `fake-ls` did not answer in 60s")
        with self.lock:
            out = []
            for name in sorted(self.machines):
                _, run_id_a, run_id_b, machine = name.split("-", 3)
                run_id = f"{run_id_a}-{run_id_b}"
                if run_ids is None or run_id in run_ids:
                    out.append(Resource(provider, name, run_id, machine))
            return out

    def stop(self, resource: Resource) -> None:
        with self.lock:
            self.stopped.append(resource.name)
            if resource.name in self.machines:
                self.machines[resource.name] = "stopped"

    def pulled_by_vagrant(self, resource: Resource) -> bool:
        return self.plug_pulled_by_vagrant

    def remove(self, resource: Resource) -> None:
        if self.fail_remove:
            raise RuntimeError(f"cannot remove {resource.name}")
        with self.lock:
            self.machines.pop(resource.name, None)


@dataclass
class FakeEnvironment:
    """A Vagrant environment for one run on a FakeHost."""

    host: FakeHost
    run_id: str
    machines: list[str]
    fail_up: set[str] = field(default_factory=set)
    fail_provision: set[str] = field(default_factory=set)
    fail_destroy: set[str] = field(default_factory=set)
    hang_up: set[str] = field(default_factory=set)
    # machines a destroy that said it succeeded leaves behind, named so that the provider
    # listing cannot tell them the run's (a Vagrantfile of the user's): only Vagrant knows
    stale_id: set[str] = field(default_factory=set)
    status_asked: int = 0
    raise_in_up: BaseException | None = None
    calls: list[str] = field(default_factory=list)
    provision_waits_for_ssh_config: bool = False
    """Provisioning starts only once the machine's ssh-config was asked (or 5 s passed)."""
    ssh_config_asked: set[str] = field(default_factory=set)
    writes_at_up: bool = False
    """The Vagrantfile has each `vagrant up` write its machine's ssh-config (cdd_env.rb)."""
    fail_write: set[str] = field(default_factory=set)
    """Machines whose `vagrant up` could not write it (cdd asks Vagrant instead)."""
    written: dict[str, str] = field(default_factory=dict)
    together: bool = False
    """The provider builds every machine in one `vagrant up` (libvirt)."""
    no_vagrant: bool = False
    """The `vagrant` executable cannot be run at all."""
    _asked: threading.Condition = field(default_factory=threading.Condition)

    def _name(self, machine: str) -> str:
        return machine_name(self.run_id, machine)

    def up(
        self, machine: str, *, timeout: float, log: Path, on_line: Callable[[str], None],
        provision: Provisioning | None = None,
    ) -> None:
        self._up(machine, timeout=timeout, on_line=on_line)
        if self.provision_waits_for_ssh_config:
            with self._asked:
                if not self._asked.wait_for(lambda: machine in self.ssh_config_asked, 5):
                    self.calls.append(f"provision {machine} before its ssh-config was asked")
        if provision is not None:
            provision.started()
            self._provision(machine)
        if self.writes_at_up and machine not in self.fail_write:
            self.written[machine] = self._how_to_reach(machine)

    def builds_together(self) -> bool:
        return self.together

    def up_together(self, machines: Sequence[MachineUp], *, timeout: float) \
            -> dict[str, VagrantError]:
        self.calls.append(f"up together {' '.join(m.name for m in machines)}")
        if self.no_vagrant:
            raise VagrantError("vagrant is not installed (see scripts/setup-host.sh)")
        failed: dict[str, VagrantError] = {}

        def one(m: MachineUp) -> None:
            try:
                self.up(m.name, timeout=timeout, log=m.log, on_line=m.on_line,
                        provision=m.provision)
            except VagrantError as exc:
                failed[m.name] = exc

        threads = [threading.Thread(target=one, args=(m,)) for m in machines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return failed

    def _up(self, machine: str, *, timeout: float, on_line: Callable[[str], None]) -> None:
        self.calls.append(f"up {machine}")
        # like a real provider, the machine exists before `up` returns or fails
        with self.host.lock:
            self.host.machines[self._name(machine)] = "running"
        on_line(f"==> {machine}: Creating the machine")
        if self.raise_in_up is not None:
            raise self.raise_in_up
        if machine in self.hang_up:
            time.sleep(timeout)
            raise VagrantError(f"vagrant up timed out after {timeout:.0f} s")
        if machine in self.fail_up:
            raise VagrantError(f"vagrant up {machine} failed (exit 1): box not found")
        on_line(f"==> {machine}: Machine booted and ready!")

    def _provision(self, machine: str) -> None:
        self.calls.append(f"provision {machine}")
        if machine in self.fail_provision:
            raise VagrantError(f"vagrant provision {machine} failed (exit 1): apt-get failed",
                               "E: Unable to locate package nosuch\n")

    def ssh_config(self, machines: list[str], *, timeout: float) -> str:
        self.calls.append("ssh-config")
        with self._asked:
            self.ssh_config_asked.update(machines)
            self._asked.notify_all()
        return "".join(self._how_to_reach(m) for m in machines)

    def _how_to_reach(self, machine: str) -> str:
        # one address per machine whichever machines are asked for, as Vagrant's answer
        return f"Host {machine}\n  HostName 10.0.0.{self.machines.index(machine) + 1}\n" \
            "  User vagrant\n"

    def writes_ssh_config(self) -> bool:
        return self.writes_at_up

    def ssh_config_written(self, machines: list[str]) -> str | None:
        if not all(m in self.written for m in machines):
            return None
        return "".join(self.written[m] for m in machines)

    def status(self, *, timeout: float) -> list[MachineStatus]:
        self.status_asked += 1
        with self.host.lock:
            return [
                MachineStatus(m, "running" if self._name(m) in self.host.machines
                              or m in self.stale_id else "not_created", "fake")
                for m in self.machines
            ]

    def destroy(self, machine: str, *, timeout: float, log: Path | None = None) -> None:
        self.calls.append(f"destroy {machine}")
        if machine in self.fail_destroy:
            raise VagrantError(f"vagrant destroy {machine} failed (exit 1)")
        with self.host.lock:
            self.host.machines.pop(self._name(machine), None)

    def known(self, machine: str) -> bool:
        with self.host.lock:
            return self._name(machine) in self.host.machines or machine in self.stale_id

    def installation(self, *, timeout: float) -> Installation:
        return Installation("0.0-fake", (Package("vagrant-fake", "0.1"),))

    def box(self, machine: str) -> str:
        return "fake/box 1.0" if self._name(machine) in self.host.machines else ""


@dataclass
class FakeShell:
    """A machine's shell: commands matched by regular expression to canned answers."""

    name: str
    answers: list[tuple[str, CommandResult | SshError]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def answer(self, pattern: str, exit_code: int = 0, stdout: str = "", stderr: str = "") \
            -> FakeShell:
        self.answers.append((pattern, CommandResult(pattern, exit_code, stdout, stderr)))
        return self

    def unreachable(self, pattern: str = ".*") -> FakeShell:
        self.answers.append((pattern, SshError(f"ssh to {self.name} failed: refused")))
        return self

    def run(self, command: str, *, timeout: float, sudo: bool = False) -> CommandResult:
        self.calls.append(command)
        for pattern, outcome in self.answers:
            if re.search(pattern, command):
                if isinstance(outcome, SshError):
                    raise outcome
                return CommandResult(command, outcome.exit_code, outcome.stdout,
                                     outcome.stderr)
        return CommandResult(command, 0, "", "")


@dataclass
class FakeShells:
    """Stands in for an SshPool: the shells of one run."""

    shells: dict[str, FakeShell]
    addresses: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def open(self, machine: str, *, timeout: float) -> None:
        if machine not in self.shells:
            raise SshError(f"ssh to {machine} failed: no route")

    def close(self) -> None:
        self.closed = True

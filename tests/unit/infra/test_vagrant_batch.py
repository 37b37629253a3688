"""One `vagrant up` of several machines (libvirt): each machine still gets its own
logs, live lines, phase timeouts and failure, from Vagrant's output as it really prints it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cdd_ci.infra import procs
from cdd_ci.infra.vagrant import MachineUp, Provisioning, VagrantCli
from cdd_ci.infra.vagrant_batch import SharedUp
from tests.unit.helpers import stand_in, survives

# What Vagrant 2.3.4 printed for `vagrant up alpha beta --provider=docker --parallel` of
# tests/integration/envs/pair, alpha's provisioner failing on a missing package.
ALPHA_FAILS = """\
Bringing machine 'alpha' up with 'docker' provider...
Bringing machine 'beta' up with 'docker' provider...
==> alpha: Creating the container...
==> beta: Creating the container...
    alpha:   Name: cdd-20261206234512-f557e6-alpha
    beta:   Name: cdd-20261206234512-f557e6-beta
==> beta: Machine booted and ready!
==> alpha: Machine booted and ready!
==> beta: Running provisioner: shell...
==> alpha: Running provisioner: shell...
    alpha: Running: inline script
    beta: Running: inline script
    alpha: E: Unable to locate package cdd-no-such-package
==> alpha: An error occurred. The error will be shown after all tasks complete.
==> beta: Running action triggers after up ...
==> beta: Running trigger: cdd: writing how to reach the machine...
An error occurred while executing multiple actions in parallel.
Any errors that occurred are shown below.

An error occurred while executing the action on the 'alpha'
machine. Please handle this error then try again:

The SSH command responded with a non-zero exit status. Vagrant
assumes that this means the command failed. The output for this command
should be in the log above. Please read the output to determine what
went wrong.
"""

SCRIPT = """#!/bin/sh
# a stand-in for vagrant: prints what the real one printed, or hangs a machine's provisioner
here=$(dirname "$0")
echo "$@" >> "$here/calls"
if [ -f "$here/ran" ] && [ -f "$here/then" ]; then cat "$here/then"; exit 0; fi
touch "$here/ran"
if [ -f "$here/hangs" ]; then
  echo "==> alpha: Running provisioner: shell..."
  echo "==> beta: Running provisioner: shell..."
  echo "    beta: waiting for the cluster to form"
  if [ -f "$here/fails-first" ]; then
    echo "    alpha: E: Unable to locate package nosuch"
    echo "==> alpha: An error occurred. The error will be shown after all tasks complete."
  else
    echo "==> alpha: Running trigger: cdd: writing how to reach the machine..."
  fi
  sleep 300 & echo $! > "$here/child"; wait
fi
cat "$here/output"
exit "$(cat "$here/exit")"
"""


@pytest.fixture
def fake_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = stand_in(tmp_path, "vagrant", SCRIPT)
    (bin_dir / "output").write_text(ALPHA_FAILS)
    (bin_dir / "exit").write_text("1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


class Seen:
    """What the lifecycle would be told of each machine."""

    def __init__(self, logs: Path, provision_timeout: float = 60) -> None:
        self.lines: dict[str, list[str]] = {"alpha": [], "beta": []}
        self.events: list[str] = []
        self.machines = [
            MachineUp(m, logs / m / "up.log", self.lines[m].append,
                      Provisioning(provision_timeout, logs / m / "provision.log",
                                   lambda m=m: self.events.append(f"provisioning {m}")),
                      finished=lambda m=m: self.events.append(f"finished {m}"))
            for m in ("alpha", "beta")]


def test_one_vagrant_up_builds_every_machine(tmp_path: Path, fake_vagrant: Path) -> None:
    seen = Seen(tmp_path / "logs")
    failed = VagrantCli(tmp_path, "docker", dict(os.environ)).up_together(
        seen.machines, timeout=60)
    assert (fake_vagrant / "calls").read_text() == \
        "up alpha beta --provider=docker --provision --parallel\n"
    # the failed machine is told by the cause in its own lines, as its own command would be
    assert list(failed) == ["alpha"]
    assert str(failed["alpha"]) == ("E: Unable to locate package cdd-no-such-package "
                                    "(vagrant provision alpha exited 1)")
    assert seen.events == ["provisioning beta", "provisioning alpha", "finished beta"]
    assert seen.lines["beta"][-1] == \
        "==> beta: Running trigger: cdd: writing how to reach the machine..."
    assert not any("alpha" in line for line in seen.lines["beta"])


def test_each_machine_has_its_own_up_and_provision_logs(tmp_path: Path,
                                                        fake_vagrant: Path) -> None:
    logs = tmp_path / "logs"
    VagrantCli(tmp_path, "docker", dict(os.environ)).up_together(Seen(logs).machines,
                                                                 timeout=60)
    alpha_up = (logs / "alpha" / "up.log").read_text()
    assert alpha_up.startswith("$ vagrant up alpha beta")
    assert "Machine booted and ready!" in alpha_up and "provisioner" not in alpha_up
    alpha = (logs / "alpha" / "provision.log").read_text()
    assert alpha.startswith("==> alpha: Running provisioner: shell...")
    # Vagrant's closing error goes to the machine it names, not to its neighbour
    assert "executing the action on the 'alpha'" in alpha
    assert alpha.rstrip().endswith("went wrong.")
    beta = (logs / "beta" / "provision.log").read_text()
    assert "alpha" not in beta and "error" not in beta.lower()


ALPHA_LOCKED = ALPHA_FAILS.replace("""\
The SSH command responded with a non-zero exit status. Vagrant
assumes that this means the command failed. The output for this command
should be in the log above. Please read the output to determine what
went wrong.
""", """\
Vagrant can't use the requested machine because it is locked! This
means that another Vagrant process is currently reading or modifying
the machine.
""")


def test_a_machine_the_shared_up_found_locked_is_built_again_on_its_own(
        tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "output").write_text(ALPHA_LOCKED)
    # its own `up` finds it running and does nothing; it is then provisioned
    (fake_vagrant / "then").write_text("==> alpha: Running provisioner: shell...\n")
    seen = Seen(tmp_path / "logs")
    failed = VagrantCli(tmp_path, "docker", dict(os.environ)).up_together(
        seen.machines, timeout=60)
    assert failed == {}
    assert (fake_vagrant / "calls").read_text().splitlines() == [
        "up alpha beta --provider=docker --provision --parallel",
        "up alpha --provider=docker --provision"]
    assert seen.events == ["provisioning beta", "provisioning alpha", "finished beta",
                           "provisioning alpha"]


def test_a_machine_found_locked_once_made_is_made_anew(tmp_path: Path,
                                                       fake_vagrant: Path) -> None:
    # its `up` run again on the running VM would skip its network and hostname
    (fake_vagrant / "output").write_text(ALPHA_LOCKED)
    (fake_vagrant / "then").write_text("==> alpha: Running provisioner: shell...\n")
    made = tmp_path / ".vagrant" / "machines" / "alpha" / "docker"
    made.mkdir(parents=True)
    (made / "id").write_text("0f3a")
    failed = VagrantCli(tmp_path, "docker", dict(os.environ)).up_together(
        Seen(tmp_path / "logs").machines, timeout=60)
    assert failed == {}
    assert (fake_vagrant / "calls").read_text().splitlines()[1:] == [
        "destroy -f alpha", "up alpha --provider=docker --provision"]


def test_an_error_that_names_no_machine_fails_every_unfinished_one(
        tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "output").write_text(
        "There is a syntax error in the following Vagrantfile. The syntax error\n"
        "message is reproduced below for convenience:\n\n"
        "Vagrantfile:12: syntax error, unexpected end-of-input\n")
    failed = VagrantCli(tmp_path, "docker", dict(os.environ)).up_together(
        Seen(tmp_path / "logs").machines, timeout=60)
    assert sorted(failed) == ["alpha", "beta"]
    assert str(failed["beta"]) == ("Vagrantfile:12: syntax error, unexpected end-of-input "
                                   "(vagrant up beta exited 1)")


def test_a_machine_over_its_timeout_stops_the_command_and_is_blamed(
        tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "hangs").write_text("")
    seen = Seen(tmp_path / "logs", provision_timeout=1)
    started = time.monotonic()
    failed = VagrantCli(tmp_path, "docker", dict(os.environ),
                        procs.new_registry()).up_together(seen.machines, timeout=60)
    assert time.monotonic() - started < 30
    # alpha had finished: only beta overran, and its last words say what it was doing
    assert list(failed) == ["beta"]
    assert str(failed["beta"]) == ("vagrant provision beta timed out after 1 s while running: "
                                   "waiting for the cluster to form")
    child = int((fake_vagrant / "child").read_text())
    assert not survives(child), f"grandchild {child} survived the timeout"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_phase_keeps_its_own_deadline(tmp_path: Path) -> None:
    clock, seen = Clock(), Seen(tmp_path, provision_timeout=100)
    with SharedUp(seen.machines, 30, clock=clock) as shared:
        shared.write("==> alpha: Running provisioner: shell...\n")
        clock.now += 29
        assert not shared.overdue()
        clock.now += 1  # beta is still booting after 30 s: its up timeout
        assert shared.overdue()
        stopped = {s.machine: s for s in shared.killed()}
    assert stopped["beta"].timed_out == 30 and stopped["beta"].action == "up beta"
    # alpha was provisioning, within its own 100 s: it stopped because beta was killed
    assert stopped["alpha"].timed_out is None and stopped["alpha"].killed_for == "beta"
    assert stopped["alpha"].action == "provision alpha"


def test_a_machine_that_failed_before_the_kill_is_told_by_its_own_lines(
        tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "hangs").write_text("")
    (fake_vagrant / "fails-first").write_text("")
    failed = VagrantCli(tmp_path, "docker", dict(os.environ), procs.new_registry()) \
        .up_together(Seen(tmp_path / "logs", provision_timeout=1).machines, timeout=60)
    assert str(failed["alpha"]) == ("E: Unable to locate package nosuch "
                                    "(vagrant provision alpha failed)")
    assert str(failed["beta"]).startswith("vagrant provision beta timed out after 1 s")


def test_a_machine_that_finished_or_failed_has_no_deadline(tmp_path: Path) -> None:
    clock, seen = Clock(), Seen(tmp_path)
    with SharedUp(seen.machines, 30, clock=clock) as shared:
        shared.write("==> alpha: Running trigger: cdd: writing how to reach the machine...\n")
        shared.write("==> beta: An error occurred. The error will be shown after all tasks "
                     "complete.\n")
        clock.now += 3600
        assert not shared.overdue()


def test_a_name_that_begins_another_does_not_take_its_lines(tmp_path: Path) -> None:
    lines: dict[str, list[str]] = {"web": [], "web2": []}
    machines = [MachineUp(m, tmp_path / m / "up.log", lines[m].append,
                          Provisioning(60, tmp_path / m / "provision.log", lambda: None))
                for m in ("web", "web2")]
    with SharedUp(machines, 30) as shared:
        shared.write("==> web2: Creating the container...\n")
        shared.write("    web: Name: cdd-web\n")
    assert lines == {"web": ["    web: Name: cdd-web"],
                     "web2": ["==> web2: Creating the container..."]}

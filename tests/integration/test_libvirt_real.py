"""The small environment on real VMs (libvirt: each machine a QEMU domain with its own kernel
and systemd, on KVM or on software emulation): a passing run, and a run killed mid-build then
destroyed from its ledger, leave nothing at the provider level. libvirt's own listing says so:
no domain, no disk and no network of the run (cdd_ci.infra.providers, as `cdd destroy` and
the reaper see them).

Slow (minutes under software emulation), so out of the default run; the weekly workflow runs
them on a host prepared with `scripts/setup-host.sh --provider libvirt`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdd_ci.infra import providers

from ..conftest import REPO
from .conftest import Project, copy_pair, index_entry_held, wait_for

pytestmark = [pytest.mark.vagrant, pytest.mark.slow]

BOX = os.environ.get("CDD_BOX") or "debian/bookworm64"  # vagrant/lib/cdd_env.rb's default


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "libvirt's system connection needs root"
    if shutil.which("vagrant") is None or shutil.which("virsh") is None:
        return "vagrant or libvirt missing: run scripts/setup-host.sh --provider libvirt"
    boxes = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True,
                           timeout=120, check=False).stdout.split("\n")
    if not any(line.split()[:2] == [BOX, "(libvirt,"] for line in boxes if line.strip()):
        return f"box {BOX} (libvirt) not registered: run scripts/setup-host.sh --provider libvirt"
    return None


def left(project: Project) -> list[str]:
    """Everything libvirt still has of the project's runs: domains, disks, networks."""
    return [r.name for r in providers.find("libvirt", sorted(project.run_ids()))]


@pytest.fixture(scope="module")
def libvirt_host() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def libvirt_pair(libvirt_host: None, tmp_path: Path) -> Iterator[Project]:
    project = copy_pair(tmp_path)
    config = project.root / "cdd.toml"
    # software emulation: booting two VMs at once on a busy 2-core host takes minutes
    config.write_text(config.read_text()
                      .replace('provider = "lxc"', 'provider = "libvirt"')
                      .replace("up = 300", "up = 900").replace("provision = 300", "provision = 900")
                      .replace("destroy = 120", "destroy = 300"))
    yield project
    if left(project):
        project.cdd("destroy", timeout=600)
        for resource in providers.find("libvirt", sorted(project.run_ids())):
            providers.remove(resource)


def test_passing_run_on_libvirt_leaves_nothing(libvirt_pair: Project) -> None:
    proc = libvirt_pair.cdd("run", timeout=1800)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = ET.parse(libvirt_pair.root / "reports" / "junit.xml").getroot()
    cases = {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}
    # systemd in the guest: the service check is answered by systemctl, as on any VM
    assert "pair.alpha.check/sshd running" in cases
    assert "pair.environment.destroy-verified/destroy-verified" in cases
    assert not any(c.find("failure") is not None or c.find("error") is not None
                   for c in cases.values())
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["provider"] == "libvirt"
    logs = libvirt_pair.root / "reports" / "logs"
    assert (logs / "beta" / "journal.log").stat().st_size > 0
    # one `vagrant up` built both VMs, and each machine's log is its own
    assert (logs / "alpha" / "up.log").read_text().startswith(
        "$ vagrant up alpha beta --provider=libvirt --provision --parallel\n")
    assert "beta:" not in (logs / "alpha" / "provision.log").read_text()
    # both destroys side by side, and neither tripped over the other on the private network
    assert libvirt_pair.junit_output("destroy") == ""
    assert libvirt_pair.run_ids()
    assert left(libvirt_pair) == []
    assert libvirt_pair.ledgers() == []


def test_sigkill_mid_build_then_destroy_leaves_nothing_on_libvirt(
        libvirt_pair: Project) -> None:
    proc = libvirt_pair.start("run")
    # both domains defined: the run is killed while QEMU boots them
    wait_for("both domains being created", lambda: len(
        [n for n in left(libvirt_pair) if n.endswith(("-alpha", "-beta"))]) >= 2, 600)
    proc.kill()  # no handler, no finally: only the ledger is left to know what was started
    proc.wait(timeout=30)
    assert left(libvirt_pair), "the test meant to kill the run mid-build"

    destroy = libvirt_pair.cdd("destroy", timeout=600)

    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert left(libvirt_pair) == []
    assert libvirt_pair.ledgers() == []


def test_sigterm_mid_build_destroys_everything_on_libvirt(libvirt_pair: Project) -> None:
    """What a runner's cancel sends first: cdd stops building and destroys before it exits."""
    proc = libvirt_pair.start("run")
    wait_for("both domains being created", lambda: len(
        [n for n in left(libvirt_pair) if n.endswith(("-alpha", "-beta"))]) >= 2, 600)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)

    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "cancelled by SIGTERM" in out
    assert left(libvirt_pair) == [], out
    assert libvirt_pair.ledgers() == []


def test_one_vagrant_up_of_both_tells_each_machine_s_failure(libvirt_pair: Project) -> None:
    """One Vagrant process builds both VMs: alpha's provisioner fails on a package, beta's
    hangs, and Vagrant then fails to destroy beta. Each failure is its own machine's, and
    nothing is left."""
    config = libvirt_pair.root / "cdd.toml"
    config.write_text(config.read_text()
                      .replace('machines = ["alpha", "beta"]',
                               'machines = ["alpha", "beta"]\n'
                               'env = { CDD_TEST_CAUSE = "alpha=package beta=hang", '
                               'CDD_TEST_FAIL = "destroy" }')
                      .replace("provision = 900", "provision = 120"))

    proc = libvirt_pair.cdd("run", timeout=1800)

    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = libvirt_pair.junit_errors()
    # alpha's package (Vagrant killed before it could close with its error), beta's hang
    # cut at its own timeout
    assert errors["pair.alpha.provision"] == ("E: Unable to locate package cdd-no-such-package "
                                              "(vagrant provision alpha failed)")
    assert errors["pair.beta.provision"] == ("vagrant provision beta timed out after 120 s "
                                             "while running: waiting for the cluster to form")
    logs = libvirt_pair.root / "reports" / "logs"
    assert "cdd-no-such-package" not in (logs / "beta" / "provision.log").read_text()
    assert libvirt_pair.junit_output("destroy") == \
        "beta: cannot release the storage of beta (vagrant destroy beta exited 1)"
    # a `vagrant destroy` each: the plugin's own parallel destroy is not thread-safe
    assert (logs / "beta" / "destroy.log").read_text().startswith("$ vagrant destroy -f beta\n")
    assert "storage of beta" not in (logs / "alpha" / "destroy.log").read_text()
    assert left(libvirt_pair) == []
    assert libvirt_pair.ledgers() == []


def test_a_machine_locked_in_the_shared_up_is_built_again_alone_and_provisioned(
        libvirt_pair: Project) -> None:
    """A reaper's `vagrant global-status --prune` holds alpha's entry in Vagrant's index as
    alpha boots: the shared `vagrant up` fails alpha, and cdd makes it anew on its own."""
    proc = libvirt_pair.start("run")
    logs = libvirt_pair.root / "reports" / "logs"

    def said(text: str) -> bool:
        up_log = logs / "alpha" / "up.log"
        return up_log.exists() and text in up_log.read_text()

    # held from before the boot wait starts watching alpha's state (once a second) until
    # after, lest it never ask while the entry is held
    wait_for("alpha's domain to start", lambda: said("Waiting for domain to get an IP"), 900)
    with index_entry_held(libvirt_pair, "alpha"):
        wait_for("alpha to boot", lambda: said("Waiting for machine to boot"), 900)
        time.sleep(3)
    out, _ = proc.communicate(timeout=1800)

    assert proc.returncode == 0, out
    up = (logs / "alpha" / "up.log").read_text()
    assert "because it is locked" in up
    # made anew: vagrant-libvirt's `up` of the running VM would skip its private network
    remade = up.find("$ vagrant destroy -f alpha\n")
    assert 0 < remade < up.find("$ vagrant up alpha --provider=libvirt --provision\n"), up
    assert "Running provisioner: shell" in (logs / "alpha" / "provision.log").read_text()
    assert left(libvirt_pair) == []
    assert libvirt_pair.ledgers() == []


def _host_state() -> tuple[str, ...]:
    virsh = ["virsh", "-c", "qemu:///system"]
    return tuple(subprocess.run([*virsh, *args], capture_output=True, text=True, timeout=60,
                                check=True).stdout
                 for args in (["vol-list", "default"], ["net-list", "--all"],
                              ["pool-list", "--all"]))


def test_setup_host_again_changes_nothing_and_says_which_acceleration(
        libvirt_host: None) -> None:
    before = _host_state()

    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup-host.sh"), "--provider",
                           "libvirt", "--no-reaper"],
                          capture_output=True, text=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stderr
    assert f"box: {BOX} (libvirt) is current" in log, log
    assert "building" not in log and "installing" not in log and "starting" not in log, log
    assert "box: acceleration KVM" in log or "box: acceleration TCG" in log, log
    assert "export VAGRANT_DEFAULT_PROVIDER=libvirt" in proc.stdout
    assert _host_state() == before

"""The whole lifecycle on real Vagrant machines (lxc provider): every way a run can end,
and after each one, nothing of the run is left running."""

from __future__ import annotations

import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from lxml import etree

from cdd_ci.history.store import open_history

from .conftest import Project, index_entry_held, lxc_names, wait_for

pytestmark = pytest.mark.vagrant


def junit_cases(project: Project) -> dict[str, ET.Element]:
    root = ET.parse(project.root / "reports" / "junit.xml").getroot()
    return {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}


def test_passing_run(pair: Project, junit_schema: etree.XMLSchema) -> None:
    proc = pair.cdd("run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = junit_cases(pair)
    assert "pair.alpha.check/sshd running" in cases
    assert "pair.host.check/ssh port from the host" in cases
    assert "pair.environment.destroy-verified/destroy-verified" in cases
    assert not any(c.find("failure") is not None or c.find("error") is not None
                   for c in cases.values())
    props = {p.get("name"): p.get("value") for p in
             ET.parse(pair.root / "reports" / "junit.xml").getroot().iter("property")}
    assert props["box"].startswith("cdd/debian-bookworm")
    assert props["vagrant_version"].startswith("2.")
    assert props["provider"] == "lxc" and props["run_id"]
    # what the machines were built from, for "what changed" in a later failure's issue
    inventory = open_history(pair.root / ".cdd" / "history.sqlite").inventory(props["run_id"])
    assert inventory is not None
    for machine in inventory.machines:
        assert (machine.box, machine.manager, machine.problem) == (
            "cdd/debian-bookworm", "dpkg", ""), machine.problem
        installed = {p.name: p.version for p in machine.packages}
        assert len(installed) > 100 and installed["openssh-server"].startswith("1:9.")
    assert inventory.vagrant.startswith("2.")
    assert "vagrant-lxc" in {p.name for p in inventory.plugins}
    report = etree.parse(str(pair.root / "reports" / "junit.xml"))
    assert junit_schema.validate(report), junit_schema.error_log
    logs = pair.root / "reports" / "logs"
    assert "Running provisioner" in (logs / "alpha" / "provision.log").read_text()
    # each machine's `vagrant up` wrote how to reach it (vagrant/lib/cdd_env.rb): no Vagrant
    # start-up of its own to ask it
    for machine in ("alpha", "beta"):
        provisioned = (logs / machine / "provision.log").read_text()
        assert "cdd: writing how to reach the machine" in provisioned, provisioned
        assert "could not write how to reach" not in provisioned, provisioned
    assert "provisioned alpha" in (logs / "alpha" / "etc_cdd-test").read_text()
    assert (logs / "beta" / "journal.log").stat().st_size > 0
    assert pair.left_running(pair.run_ids()) == []
    assert pair.ledgers() == []  # verified gone, so forgotten


def test_failing_check_exits_1_and_destroys(pair: Project) -> None:
    pair.append_config(
        '\n[[checks]]\nname = "no such service"\ntype = "service"\non = "alpha"\n'
        'service = "nosuchd"\ndeadline = 0\n'
    )
    proc = pair.cdd("run")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failure = junit_cases(pair)["pair.alpha.check/no such service"].find("failure")
    assert failure is not None and "nosuchd is inactive" in failure.get("message", "")
    assert pair.left_running(pair.run_ids()) == []


def test_failing_provisioner_exits_3_and_destroys(pair: Project) -> None:
    text = (pair.root / "cdd.toml").read_text().replace(
        'machines = ["alpha", "beta"]',
        'machines = ["alpha", "beta"]\nenv = { CDD_TEST_FAIL = "provision" }')
    (pair.root / "cdd.toml").write_text(text)
    proc = pair.cdd("run")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    error = junit_cases(pair)["pair.beta.provision/provision"].find("error")
    assert error is not None and "told to fail" in (error.text or "")
    assert pair.left_running(pair.run_ids()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_up_destroys_everything(
        pair: Project, sig: signal.Signals, junit_schema: etree.XMLSchema) -> None:
    proc = pair.start("run")
    # wait until the machines exist at the provider level: the worst moment to be stopped
    wait_for("containers being created",
             lambda: len(pair.left_running(pair.run_ids())) >= 1, 120)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out
    assert pair.left_running(pair.run_ids()) == [], out
    assert f"cancelled by {sig.name}" in out
    report = etree.parse(str(pair.root / "reports" / "junit.xml"))
    assert junit_schema.validate(report), junit_schema.error_log
    props = {p.get("name"): p.get("value") for p in report.getroot().iter("property")}
    assert props["interrupted_by"] == sig.name


def test_destroy_from_the_ledger_after_sigkill(pair: Project) -> None:
    proc = pair.start("run")
    wait_for("both containers being created",
             lambda: len(pair.left_running(pair.run_ids())) >= 2, 120)
    proc.kill()  # no handler, no finally: only the ledger is left to know what was started
    proc.wait(timeout=30)
    assert pair.left_running(pair.run_ids()), "the test meant to kill the run mid-build"
    destroy = pair.cdd("destroy", timeout=300)
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert pair.left_running(pair.run_ids()) == []
    assert pair.ledgers() == []


def test_a_machine_locked_by_the_reaper_as_it_boots_is_still_provisioned(pair: Project) -> None:
    """`cdd reap` from cron beside a run: pruning Vagrant's index takes each machine's entry
    in turn. Held as alpha's container boots, it fails alpha's `vagrant up`; run again on
    the running container, vagrant-lxc's `up` would do nothing at all, so the container is
    made anew."""
    proc = pair.start("run")
    up_log = pair.root / "reports" / "logs" / "alpha" / "up.log"
    wait_for("alpha's container to boot", lambda: up_log.exists()
             and "Waiting for machine to boot" in up_log.read_text(), 300)
    with index_entry_held(pair, "alpha"):
        # the reaper's own pruning meets the held entry too, and waits it out
        reaper = pair.start("reap")
        time.sleep(6)
    reaped, _ = reaper.communicate(timeout=300)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "retrying in" in up_log.read_text()
    assert "$ vagrant destroy -f alpha" in up_log.read_text()
    provisioned = (pair.root / "reports" / "logs" / "alpha" / "provision.log").read_text()
    assert "Running provisioner: shell" in provisioned
    assert reaper.returncode == 0, reaped
    assert pair.left_running(pair.run_ids()) == []


def test_no_container_is_left_by_this_module(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A last look, as a user would: `lxc-ls` shows nothing of the runs made so far by this
    worker (this module's among them). Other workers' runs may be up beside it: not judged."""
    projects = [Project(p.parent) for p in tmp_path_factory.getbasetemp().glob("*/*/cdd.toml")]
    ours = set().union(*(p.run_ids() for p in projects))
    assert ours, "the module's runs left no record to look them up by"
    assert [n for n in lxc_names() if any(n.startswith(f"cdd-{r}-") for r in ours)] == []


@pytest.mark.parametrize(("to_sigterm", "to_sigkill"), [
    (7.5, 2.5),  # GitHub Actions' own timing
    (0.5, 0.5),  # a harsher runner: the in-process teardown is cut short
])
def test_cancelled_job_sigint_sigterm_sigkill_then_destroy_step(
        pair: Project, to_sigterm: float, to_sigkill: float) -> None:
    """What GitHub Actions does to a cancelled job, then the workflow's `if: always()` step."""
    proc = pair.start("run")
    wait_for("containers being created",
             lambda: len(pair.left_running(pair.run_ids())) >= 1, 120)
    proc.send_signal(signal.SIGINT)
    for sig, grace in ((signal.SIGTERM, to_sigterm), (signal.SIGKILL, to_sigkill)):
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    proc.wait(timeout=30)
    destroy = pair.cdd("destroy", timeout=300)
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert pair.left_running(pair.run_ids()) == []
    assert pair.ledgers() == []

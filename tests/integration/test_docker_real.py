"""The same small environment on the docker provider: containers with sshd as PID 1 and no
systemd, the fastest provider and the first one many teams try. A service check must be
answered there through the init script, and nothing may outlive the run."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DOCKER, Project, copy_pair

pytestmark = pytest.mark.vagrant

IMAGE = "cdd/debian-bookworm-ssh:12"


@pytest.fixture
def docker_pair(vagrant_host: None, tmp_path: Path) -> Iterator[Project]:
    probe = subprocess.run([DOCKER, "image", "inspect", IMAGE], capture_output=True,
                           timeout=60, check=False) if Path(DOCKER).exists() else None
    if probe is None or probe.returncode != 0:
        pytest.skip(f"no docker daemon with {IMAGE}: run scripts/setup-host.sh --provider docker")
    project = copy_pair(tmp_path)
    config = project.root / "cdd.toml"
    config.write_text(config.read_text().replace('provider = "lxc"', 'provider = "docker"'))
    yield project
    project.clean_up()


def test_passing_run_on_docker(docker_pair: Project) -> None:
    proc = docker_pair.cdd("run")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = ET.parse(docker_pair.root / "reports" / "junit.xml").getroot()
    cases = {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}
    sshd = cases["pair.alpha.check/sshd running"]
    assert sshd.find("failure") is None and sshd.find("error") is None
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["provider"] == "docker"
    logs = docker_pair.root / "reports" / "logs"
    # a `vagrant up` each: quicker on docker than one process building both on its threads
    assert (logs / "beta" / "up.log").read_text().startswith(
        "$ vagrant up beta --provider=docker --provision\n")
    provisioned = (logs / "alpha" / "provision.log").read_text()
    assert "cdd: writing how to reach the machine" in provisioned, provisioned
    assert "could not write how to reach" not in provisioned, provisioned
    assert docker_pair.left_running(docker_pair.run_ids()) == []
    # Vagrant's private network goes with the last machine
    networks = subprocess.run([DOCKER, "network", "ls", "--format", "{{.Name}}"],
                              capture_output=True, text=True, timeout=60, check=False).stdout
    assert "vagrant_network_" not in networks


def test_a_stopped_service_fails_its_check_on_docker(docker_pair: Project) -> None:
    docker_pair.append_config(
        '\n[[checks]]\nname = "no such service"\ntype = "service"\non = "alpha"\n'
        'service = "nosuchd"\ndeadline = 0\n')

    proc = docker_pair.cdd("run")

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no such service" in proc.stdout
    assert docker_pair.left_running(docker_pair.run_ids()) == []


def test_each_machine_s_failure_is_told_by_its_own_cause(docker_pair: Project) -> None:
    config = docker_pair.root / "cdd.toml"
    config.write_text(config.read_text()
                      .replace('machines = ["alpha", "beta"]',
                               'machines = ["alpha", "beta"]\n'
                               'env = { CDD_TEST_CAUSE = "alpha=package beta=hang" }')
                      .replace("provision = 300", "provision = 20"))

    proc = docker_pair.cdd("run")

    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = docker_pair.junit_errors()
    # each machine its own cause: alpha's package, beta's hang cut at its own timeout
    assert errors["pair.alpha.provision"] == ("E: Unable to locate package cdd-no-such-package "
                                              "(vagrant provision alpha exited 1)")
    assert errors["pair.beta.provision"] == ("vagrant provision beta timed out after 20 s "
                                             "while running: waiting for the cluster to form")
    beta = (docker_pair.root / "reports" / "logs" / "beta" / "provision.log").read_text()
    assert "cdd-no-such-package" not in beta, beta
    assert docker_pair.left_running(docker_pair.run_ids()) == []


def test_a_machine_vagrant_could_not_destroy_is_named_and_removed(docker_pair: Project) -> None:
    config = docker_pair.root / "cdd.toml"
    config.write_text(config.read_text().replace(
        'machines = ["alpha", "beta"]',
        'machines = ["alpha", "beta"]\nenv = { CDD_TEST_FAIL = "destroy" }'))

    proc = docker_pair.cdd("run")

    # Vagrant's failure is a note: the provider's own tools removed what it left
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_pair.junit_output("destroy") == \
        "beta: cannot release the storage of beta (vagrant destroy beta exited 1)"
    logs = docker_pair.root / "reports" / "logs"
    assert "storage of beta" not in (logs / "alpha" / "destroy.log").read_text()
    assert "storage of beta" in (logs / "beta" / "destroy.log").read_text()
    assert docker_pair.left_running(docker_pair.run_ids()) == []

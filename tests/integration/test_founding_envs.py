"""The founding environments, built for real: `cdd run` from scratch to destroyed.

Minutes each (the hand-built OpenStack about 8, the swarm about 1 on a 2-core host), so they
are marked `slow` and left out of the default run:

    scripts/test.sh -m slow        # or: python3 -m pytest tests/integration -m slow -s

Each runs a copy of the environment (with the shared scripts it loads by relative path) from a
temporary directory, on a private subnet of its own, so it can neither wait for nor disturb a
run of the same environment from the checkout. `-s` shows the wall time of every phase.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import REPO
from .conftest import Project

pytestmark = [pytest.mark.vagrant, pytest.mark.slow]

SHARED = ("lib", "openstack-base")
"""What the environments load from beside them (vagrant/lib, openstack-base's provisioners)."""


def copy_environment(tmp_path: Path, name: str, subnet: str) -> Project:
    for directory in (*SHARED, name):
        shutil.copytree(REPO / "vagrant" / directory, tmp_path / "vagrant" / directory,
                        ignore=shutil.ignore_patterns("reports", ".cdd", ".vagrant"))
    config = tmp_path / "vagrant" / name / "cdd.toml"
    text = config.read_text()
    start = text.index('CDD_SUBNET = "') + len('CDD_SUBNET = "')
    config.write_text(text[:start] + subnet + text[text.index('"', start):])
    return Project(tmp_path / "vagrant" / name)


@pytest.fixture
def founding(vagrant_host: None, tmp_path: Path) -> Iterator[list[Project]]:
    """Projects made by `copy_environment`; whatever a failed test leaves is destroyed."""
    projects: list[Project] = []
    yield projects
    for project in projects:
        project.clean_up(timeout=600)


def phase_times(project: Project) -> str:
    """Per phase, the longest machine (machines work in parallel) and the sum of the checks."""
    root = ET.parse(project.root / "reports" / "junit.xml").getroot()
    longest: dict[str, float] = {}
    for case in root.iter("testcase"):
        phase = (case.get("classname") or "").rsplit(".", 1)[-1]
        seconds = float(case.get("time") or 0)
        longest[phase] = max(longest.get(phase, 0.0), seconds)
    return ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in longest.items())


def run_and_judge(project: Project, expected: set[str], timeout: float) -> None:
    proc = project.cdd("run", timeout=timeout)
    (project.root / "cdd-run.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    root = ET.parse(project.root / "reports" / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0", tail
    names = {f"{c.get('classname')}/{c.get('name')}" for c in root.iter("testcase")}
    assert expected <= names, sorted(expected - names)
    assert any(n.endswith("environment.destroy-verified/destroy-verified") for n in names)
    assert project.left_running(project.run_ids()) == []
    assert project.ledgers() == []
    print(f"\n{project.root.name}: {phase_times(project)}")
    print((proc.stdout + proc.stderr).strip().splitlines()[-1])


def test_hand_built_openstack(founding: list[Project], tmp_path: Path) -> None:
    project = copy_environment(tmp_path, "openstack", "192.168.75")
    founding.append(project)
    run_and_judge(project, {
        "openstack.identity.check/token issued for admin",
        "openstack.identity.check/catalog lists identity, image, compute",
        "openstack.identity.check/tiny image uploaded to glance and listed",
        "openstack.identity.check/nova lists flavors with that token",
        "openstack.compute.check/nova-status upgrade check",
        "openstack.identity.check/keystone log free of tracebacks",
        "openstack.image.check/glance log free of tracebacks",
        "openstack.compute.check/nova and placement logs free of tracebacks",
        "openstack.host.check/identity API v3",
    }, timeout=3600)
    logs = project.root / "reports" / "logs"
    assert (logs / "identity" / "var_log_keystone_keystone.log").stat().st_size > 0
    assert (logs / "compute" / "var_log_nova_nova-api.log").stat().st_size > 0


def test_docker_swarm(founding: list[Project], tmp_path: Path) -> None:
    project = copy_environment(tmp_path, "docker-swarm", "192.168.76")
    founding.append(project)
    run_and_judge(project, {
        "docker-swarm.manager.check/three nodes ready",
        "docker-swarm.manager.check/web runs three replicas, one per node",
        "docker-swarm.node1.check/web answers on 8080 of every node",
        "docker-swarm.node2.check/web answers on 8080 of every node",
        "docker-swarm.host.check/web on node2 from the runner",
    }, timeout=1800)
    tasks = (project.root / "reports" / "logs" / "manager" / "tasks.log").read_text()
    assert {"manager", "node1", "node2"} <= set(tasks.split())

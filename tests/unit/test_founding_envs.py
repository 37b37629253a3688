"""Every environment under vagrant/ is a valid cdd project, and its scripts are strict bash.

The real builds are in tests/integration/test_founding_envs.py (marked slow); these take
seconds and catch a broken config or script before anyone waits minutes for a build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

CONFIGS = sorted((REPO / "vagrant").glob("*/cdd*.toml"))
SCRIPTS = sorted((REPO / "vagrant").glob("*/provision/*.sh"))
NEEDS_THE_INTERNET = {"devstack/cdd.toml", "openstack/cdd-dev.toml"}
"""They clone from opendev.org: defined and validated here, built only where the internet is."""


def test_the_founding_environments_are_all_there() -> None:
    found = {str(p.relative_to(REPO / "vagrant")) for p in CONFIGS}
    assert {"openstack/cdd.toml", "openstack/cdd-dev.toml", "docker-swarm/cdd.toml",
            "devstack/cdd.toml"} <= found


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "vagrant")))
def test_cdd_validate_passes(config: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    needs = "needs the internet" in proc.stdout
    assert needs == (str(config.relative_to(REPO / "vagrant")) in NEEDS_THE_INTERNET), proc.stdout


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "vagrant")))
def test_each_environment_has_a_private_subnet_of_its_own(config: Path) -> None:
    """Environments built at once on one host must not answer for each other. (A config that
    fixes no CDD_SUBNET gets a free one per run from cdd.)"""
    subnet = re.search(r'CDD_SUBNET = "([0-9.]+)"', config.read_text())
    if subnet is None:
        return
    others = [c for c in CONFIGS if c != config and f'"{subnet.group(1)}"' in c.read_text()]
    assert others == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO / "vagrant")))
def test_provisioning_scripts_are_strict_bash(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout

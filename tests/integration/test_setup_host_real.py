"""The host setup mends what a runner loses between jobs: lxc-net's DHCP server dies with
the session that started it while lxcbr0 and lxc-net's marker stay behind, and every
container then fails to get an address."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cdd_ci.infra.preflight import lxc_dhcp_pid

from ..conftest import REPO
from .conftest import Project

pytestmark = [pytest.mark.vagrant, pytest.mark.whole_host]


def test_a_dead_dhcp_server_is_named_at_once_and_setup_host_mends_it(pair: Project) -> None:
    pid = lxc_dhcp_pid()
    assert pid is not None, "scripts/setup-host.sh left no DHCP server on lxcbr0"
    os.kill(pid, signal.SIGKILL)
    assert Path("/run/lxc/network_up").exists()

    # cdd says what is wrong before building anything, instead of vagrant-lxc's
    # "error executing lxc-info" half a minute later
    run = pair.cdd("run")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "DHCP server (dnsmasq on lxcbr0) is not running" in run.stdout, run.stdout
    assert "Importing base box" not in run.stdout  # vagrant up never started
    assert pair.ledgers() == []
    assert pair.run_ids() and pair.left_running(pair.run_ids()) == []

    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup-host.sh")],
                          capture_output=True, text=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DHCP server is gone" in proc.stdout + proc.stderr
    assert lxc_dhcp_pid() not in (None, pid)

"""The host setup mends what a runner loses between jobs: lxc-net's DHCP server dies with
the session that started it while lxcbr0 and lxc-net's marker stay behind, and every
container then fails to get an address."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.vagrant

PID_FILE = Path("/run/lxc/dnsmasq.pid")


def dhcp_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    zombie = any(line.split()[1:2] == ["Z"] for line in status.splitlines()
                 if line.startswith("State:"))
    return pid if comm == "dnsmasq" and not zombie else None


def test_setup_host_starts_a_dead_dhcp_server_again(vagrant_host: None) -> None:
    pid = dhcp_pid()
    assert pid is not None, "scripts/setup-host.sh left no DHCP server on lxcbr0"
    os.kill(pid, signal.SIGKILL)
    assert Path("/run/lxc/network_up").exists()

    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup-host.sh")],
                          capture_output=True, text=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DHCP server is gone" in proc.stdout + proc.stderr
    assert dhcp_pid() not in (None, pid)

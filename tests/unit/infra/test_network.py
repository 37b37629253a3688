"""environment.needs_network: a runner without the internet refuses the environment at once.

Nothing here leaves this machine: "no network" is a closed port on 127.0.0.1 (9, discard,
which nothing here serves) and "network" a listener these tests open on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdd_ci.backend import Backend
from cdd_ci.config import Config, ConfigError, load_config
from cdd_ci.host.ledger import LedgerStore
from cdd_ci.infra import network
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode, Phase, Status
from cdd_ci.report.progress import QuietDisplay

from ..helpers import World, make_project

CLOSED = "127.0.0.1:9"


@pytest.fixture
def listener() -> Iterator[str]:
    """host:port of a socket on 127.0.0.1 that accepts connections (the kernel's backlog)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def project(tmp_path: Path, probe: str, *, needs: bool = True) -> Config:
    make_project(tmp_path)
    text = (tmp_path / "cdd.toml").read_text().replace(
        'machines = ["broker", "database"]\n',
        'machines = ["broker", "database"]\n'
        f'needs_network = {"true" if needs else "false"}\n'
        f'network_probe = "{probe}"\nnetwork_probe_timeout = 2\n')
    (tmp_path / "cdd.toml").write_text(text)
    return load_config(tmp_path / "cdd.toml")


def lifecycle(tmp_path: Path, world: World, probe: str, *, needs: bool = True,
              backend: Backend | None = None) -> Lifecycle:
    return Lifecycle(project(tmp_path, probe, needs=needs), backend or world.backend(),
                     QuietDisplay(), Cancellation())


# -- the probe -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "host", "port"), [
    ("https://opendev.org", "opendev.org", 443),
    ("http://deb.debian.org/debian", "deb.debian.org", 80),
    ("https://git.example.org:8443/x.git", "git.example.org", 8443),
    ("opendev.org:443", "opendev.org", 443),
    ("127.0.0.1:9", "127.0.0.1", 9),
    ("[::1]:80", "::1", 80),
])
def test_targets(text: str, host: str, port: int) -> None:
    assert network.parse_target(text) == network.Target(host, port)


@pytest.mark.parametrize("text", ["opendev.org", "ftp://example.org", "host:0", "host:99999",
                                  "http://:80", "https://example.org:port", ":443"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError):
        network.parse_target(text)


def test_a_closed_port_is_no_network() -> None:
    problem = network.probe(CLOSED, 2)
    assert problem is not None and "refused" in problem.lower()


def test_a_listener_is_network(listener: str) -> None:
    assert network.probe(listener, 2) is None


def test_no_answer_in_time_is_no_network() -> None:
    released = threading.Event()

    def hangs(address: tuple[str, int], timeout: float) -> socket.socket:
        released.wait(5)  # a name lookup that never returns
        raise OSError("too late")

    try:
        assert network.probe("opendev.org:443", 0.2, connect=hangs) == "no answer within 0.2 s"
    finally:
        released.set()


def test_bad_probe_in_the_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        project(tmp_path, "opendev.org")
    assert str(err.value) == (f"{tmp_path / 'cdd.toml'}: environment.network_probe: Value error,"
                              " expected an http(s) URL or host:port (got 'opendev.org')")


# -- the lifecycle with fakes ----------------------------------------------------------------

def test_no_network_fails_fast_builds_nothing_and_reports_an_error(tmp_path: Path) -> None:
    world = World()
    result = lifecycle(tmp_path, world, CLOSED).run()
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    preflight = [s for s in result.steps if s.phase is Phase.PREFLIGHT]
    assert [(s.name, s.status) for s in preflight] == [("network", Status.ERROR)]
    assert "needs the internet (environment.needs_network)" in preflight[0].message
    assert "cannot reach 127.0.0.1:9" in preflight[0].message
    assert {s.status for s in result.steps if s.phase is Phase.CHECK} == {Status.SKIPPED}
    assert world.calls == []  # no vagrant up, no destroy: nothing was built
    assert world.host.machines == {}
    assert LedgerStore(tmp_path / ".cdd").all() == []  # nor recorded
    report = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    case = next(c for c in report.iter("testcase") if c.get("name") == "network")
    assert case.get("classname") == "demo.environment.preflight"
    error = case.find("error")
    assert error is not None and "needs the internet" in error.get("message", "")


def test_cdd_up_is_refused_the_same_way(tmp_path: Path) -> None:
    world = World()
    result = lifecycle(tmp_path, world, CLOSED).build()
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert world.calls == [] and not result.kept


def test_with_network_the_run_goes_on(tmp_path: Path, listener: str) -> None:
    world = World()
    result = lifecycle(tmp_path, world, listener).run()
    assert result.exit_code() is ExitCode.OK
    assert (result.steps[0].phase, result.steps[0].status) == (Phase.PREFLIGHT, Status.PASSED)
    assert "up broker" in world.calls
    assert world.host.machines == {}


def test_an_environment_that_needs_no_network_is_not_probed(tmp_path: Path) -> None:
    world = World()
    asked: list[str] = []

    def network_probe(target: str, timeout: float) -> str | None:
        asked.append(target)
        return "unreachable"

    backend = Backend(**{**world.backend().__dict__, "network": network_probe})
    result = lifecycle(tmp_path, world, CLOSED, needs=False, backend=backend).run()
    assert result.exit_code() is ExitCode.OK
    assert asked == []
    assert not any(s.phase is Phase.PREFLIGHT for s in result.steps)


# -- the CLI ---------------------------------------------------------------------------------

def test_cdd_run_without_network_exits_3_with_one_line(tmp_path: Path) -> None:
    project(tmp_path, CLOSED)
    # a `vagrant` that leaves a mark if anything calls it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "vagrant"
    stub.write_text(f"#!/bin/sh\ntouch {tmp_path / 'vagrant-was-called'}\nexit 1\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    why = [ln for ln in proc.stderr.splitlines() if "needs the internet" in ln]
    assert len(why) == 1, proc.stderr
    assert "cannot reach 127.0.0.1:9" in why[0] and "nothing was built" in why[0]
    assert proc.stderr.strip().splitlines()[-1].endswith(": infrastructure failed (exit 3)")
    assert not (tmp_path / "vagrant-was-called").exists()
    assert (tmp_path / "reports" / "junit.xml").is_file()


def test_cdd_validate_says_the_environment_needs_the_internet(tmp_path: Path) -> None:
    project(tmp_path, CLOSED)
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "validate"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(", needs the internet: 127.0.0.1:9)")

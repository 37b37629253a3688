"""A host whose provider is known to be broken is refused before anything is built."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cdd_ci.host.ledger import LedgerStore
from cdd_ci.infra import preflight as hostcheck
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode, Phase, Status
from cdd_ci.report.progress import QuietDisplay

from ..helpers import World, make_project


def lxc_host(tmp_path: Path, *, started: bool = True, pid: str | None = "4242",
             comm: str = "dnsmasq", state: str = "S (sleeping)") -> dict[str, Path]:
    run, proc = tmp_path / "run-lxc", tmp_path / "proc"
    run.mkdir()
    if started:
        (run / "network_up").touch()
    if pid is not None:
        (run / "dnsmasq.pid").write_text(pid + "\n")
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "comm").write_text(comm + "\n")
    (proc / "4242" / "status").write_text(f"Name:\t{comm}\nState:\t{state}\n")
    return {"lxc_run": run, "proc": proc}


@pytest.mark.parametrize(("host", "broken"), [
    ({}, False),                                   # dnsmasq alive
    ({"started": False, "pid": None}, False),      # lxc-net not used: the admin's own bridge
    ({"pid": None}, True),                         # started, pid file gone
    ({"state": "Z (zombie)"}, True),               # killed, not yet reaped
    ({"comm": "sshd"}, True),                      # the pid was reused by another process
    ({"pid": "garbage"}, True),
])
def test_lxc_dhcp_server(tmp_path: Path, host: dict[str, object], broken: bool) -> None:
    said = hostcheck.problem("lxc", **lxc_host(tmp_path, **host))  # type: ignore[arg-type]
    assert (said is not None) is broken
    if broken:
        assert said is not None and "dnsmasq" in said and "setup-host.sh" in said
        assert "\n" not in said


def test_other_providers_are_not_second_guessed(tmp_path: Path) -> None:
    assert hostcheck.problem("docker", **lxc_host(tmp_path, pid=None)) is None


def test_a_broken_host_fails_fast_builds_nothing_and_reports_an_error(tmp_path: Path) -> None:
    world = World(host_problem="lxc-net is started but its DHCP server is not running")
    config = make_project(tmp_path)

    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()

    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    (preflight,) = [s for s in result.steps if s.phase is Phase.PREFLIGHT]
    assert (preflight.name, preflight.status) == ("host", Status.ERROR)
    assert "DHCP server is not running; nothing was built" in preflight.message
    assert {s.status for s in result.steps if s.phase is Phase.CHECK} == {Status.SKIPPED}
    assert world.calls == [] and world.host.machines == {}
    assert LedgerStore(tmp_path / ".cdd").all() == []
    report = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    case = next(c for c in report.iter("testcase") if c.get("name") == "host")
    error = case.find("error")
    assert error is not None and "DHCP server" in error.get("message", "")

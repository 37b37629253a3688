"""Destroying a run from its ledger: what it asks Vagrant, and that it never says "nothing
left" without reason to believe it."""

from __future__ import annotations

import time

from cdd_ci.host.ledger import Ledger
from cdd_ci.host.teardown import destroy_run
from cdd_ci.infra.providers import machine_name
from cdd_ci.models import Phase, Status
from tests.fakes.infra import FakeEnvironment, FakeHost

RUN = "20261203120000-abcdef"
MACHINES = ["broker", "database"]


def built(**fail: set[str]) -> tuple[Ledger, FakeHost, FakeEnvironment]:
    host = FakeHost()
    for machine in MACHINES:
        host.machines[machine_name(RUN, machine)] = "running"
    ledger = Ledger(RUN, "env", "/nowhere", "fake", list(MACHINES), {}, time.time())
    return ledger, host, FakeEnvironment(host, RUN, list(MACHINES), **fail)


def test_a_clean_destroy_is_verified_by_the_provider_without_asking_vagrant_again() -> None:
    ledger, host, environment = built()
    destroy, verified = destroy_run(ledger, environment, host, timeout=10)
    assert (destroy.status, verified.status) == (Status.PASSED, Status.PASSED)
    assert verified.phase is Phase.VERIFY and host.machines == {}
    # Vagrant said each machine is gone and dropped its id: its status is not asked for
    assert environment.status_asked == 0


def test_a_failed_vagrant_destroy_made_good_by_the_provider_is_looked_at_twice() -> None:
    ledger, host, environment = built(fail_destroy={"broker"})
    destroy, verified = destroy_run(ledger, environment, host, timeout=10)
    assert host.machines == {}
    assert "removed at the provider level" in destroy.message
    assert verified.status is Status.PASSED
    assert environment.status_asked == 1


def test_a_machine_vagrant_still_holds_after_destroy_said_yes_is_found() -> None:
    ledger, host, environment = built(stale_id={"database"})
    _, verified = destroy_run(ledger, environment, host, timeout=10)
    assert verified.status is Status.ERROR
    assert verified.message == "left behind: vagrant database (running)"
    assert environment.status_asked == 1


def test_machines_are_powered_off_before_a_vagrant_destroy_that_would_shut_them_down() -> None:
    ledger, host, environment = built()
    destroy_run(ledger, environment, host, timeout=10)
    assert sorted(host.stopped) == sorted(machine_name(RUN, m) for m in MACHINES)
    assert host.machines == {}


def test_where_vagrant_pulls_the_plug_itself_its_destroy_is_not_kept_waiting() -> None:
    ledger, host, environment = built()
    host.plug_pulled_by_vagrant = True
    destroy, verified = destroy_run(ledger, environment, host, timeout=10)
    assert host.stopped == []
    assert (destroy.status, verified.status) == (Status.PASSED, Status.PASSED)
    assert host.machines == {}


def test_without_a_vagrantfile_the_provider_stops_what_it_then_removes() -> None:
    ledger, host, _ = built()
    host.plug_pulled_by_vagrant = True
    _, verified = destroy_run(ledger, None, host, timeout=10)
    assert len(host.stopped) == len(MACHINES)
    assert verified.status is Status.PASSED and host.machines == {}

"""What a run left at the provider level, found by name, whatever Vagrant remembers.

Vagrant forgets a machine whose `up` was killed before it wrote `.vagrant/machines/...`,
which is exactly when a machine is most likely to leak. The project's Vagrantfiles name
every machine `cdd-<run_id>-<machine>` (docker also labels it `cdd.run=<run_id>`), so the
provider's own listing finds it, and the provider's own tools remove it. One module per
provider says how (`lxc.py`, `docker.py`, `libvirt.py`, `virtualbox.py`); this one holds
what they share and is the only one the rest of cdd calls.

A provider whose tool is not installed, or whose daemon is not running, has nothing on
this host to sweep (`available()`); a run that used it still asks it (`find`). A listing
that fails or times out is `ListingFailed`, never "nothing there": a verification that had
not looked must not say that nothing is left. The run id embeds its start time (UTC), so a
machine found here with no ledger anywhere still has an age (`started_at`), which is what
the reaper judges it by.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cdd_ci.infra.providers import docker, libvirt, lxc, virtualbox
from cdd_ci.infra.providers.base import (
    NAME_RE,
    Driver,
    ListingFailed,
    Resource,
    machine_name,
    run_tolerating_failure,
    started_at,
)

__all__ = ["NAME_RE", "ListingFailed", "Provider", "RealProvider", "Resource", "available",
           "find", "machine_name", "pulled_by_vagrant", "remove", "started_at", "stop"]

DRIVERS: dict[str, Driver] = {
    driver.name: driver
    for driver in (lxc.DRIVER, docker.DRIVER, libvirt.DRIVER, virtualbox.DRIVER)
}
PROVIDERS = tuple(DRIVERS)
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 0.0)


def available() -> list[str]:
    """The providers in service here (tool installed, daemon running): the ones to sweep."""
    return [name for name, driver in DRIVERS.items() if driver.in_service()]


def find(provider: str, run_ids: Sequence[str] | None = None) -> list[Resource]:
    """This host's cdd machines for `provider` (all runs, or only `run_ids`).

    Raises ListingFailed when the provider's tool is there but its listing fails.
    """
    driver = DRIVERS.get(provider)
    if driver is None or not driver.installed():
        return []
    found = [r for r in driver.listing() if run_ids is None or r.run_id in run_ids]
    return sorted(found, key=lambda r: r.name)


def stop(resource: Resource) -> None:
    """Power a machine off at once, without a graceful shutdown.

    The machine is about to be destroyed, so nothing in it needs to be saved, and a graceful
    shutdown of RabbitMQ or MariaDB can take longer than a cancelled job has left.
    """
    driver = DRIVERS.get(resource.provider)
    if driver is not None:
        run_tolerating_failure(driver.stop_argv(resource.name))  # already stopped is fine


def pulled_by_vagrant(resource: Resource) -> bool:
    """Whether Vagrant's destroy powers this machine off at once by itself."""
    driver = DRIVERS.get(resource.provider)
    return driver is not None and driver.vagrant_pulls_the_plug


def remove(resource: Resource) -> None:
    """Remove one machine with the provider's own tools; gone already counts as removed."""
    driver = DRIVERS.get(resource.provider)
    if driver is None:
        return
    # a machine still being created (its run was killed a moment ago) may refuse removal
    # for a few seconds: try again rather than report a leak that is about to be fixable
    for delay in RETRY_DELAYS:
        for argv in driver.remove_argvs(resource.name):
            run_tolerating_failure(argv)  # an early one may fail: already stopped
        if not any(r.name == resource.name for r in driver.listing()):
            return
        time.sleep(delay)
    raise RuntimeError(f"{resource} is still there after removal")


class Provider(Protocol):
    """Provider-level listing and removal: what teardown and the reaper need (faked in
    tests/fakes/infra.py)."""

    def find(self, provider: str, run_ids: Sequence[str] | None = None) -> list[Resource]:
        """Raises ListingFailed when the provider cannot say what exists."""
        ...

    def stop(self, resource: Resource) -> None: ...

    def pulled_by_vagrant(self, resource: Resource) -> bool:
        """Vagrant's destroy powers it off at once (no need to stop it first)."""
        ...

    def remove(self, resource: Resource) -> None: ...


@dataclass(frozen=True)
class RealProvider:
    """The providers of this host, through their drivers."""

    def find(self, provider: str, run_ids: Sequence[str] | None = None) -> list[Resource]:
        return find(provider, run_ids)

    def stop(self, resource: Resource) -> None:
        stop(resource)

    def pulled_by_vagrant(self, resource: Resource) -> bool:
        return pulled_by_vagrant(resource)

    def remove(self, resource: Resource) -> None:
        remove(resource)

"""Each run gets a private subnet no other recorded run on the host holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdd_ci.host.ledger import new_ledger
from cdd_ci.host.subnets import allocate

from ..helpers import make_project


@pytest.mark.parametrize(("provider", "low", "high"), [
    ("lxc", 100, 199), ("docker", 100, 199), ("libvirt", 100, 199), ("virtualbox", 56, 63),
])
def test_allocated_from_the_provider_pool(provider: str, low: int, high: int) -> None:
    subnet = allocate("20261124000000-abcdef", provider, [])
    assert subnet.startswith("192.168.") and low <= int(subnet.split(".")[2]) <= high


def test_never_one_in_use_while_any_is_free() -> None:
    taken = [f"192.168.{n}" for n in range(56, 63)]
    assert allocate("20261124000000-abcdef", "virtualbox", taken) == "192.168.63"
    first = allocate("x", "lxc", [])
    assert allocate("x", "lxc", [first]) != first


def test_full_pool_still_runs() -> None:
    assert allocate("r", "virtualbox", [f"192.168.{n}" for n in range(56, 64)]).startswith(
        "192.168.")


def test_the_ledger_records_the_subnet_unless_the_config_fixes_it(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    ledger = new_ledger(config, "run", "20261124000000-abcdef", subnets_in_use=lambda: [])
    assert ledger.vagrant_env["CDD_SUBNET"] == allocate("20261124000000-abcdef", "fake", [])

    fixed = make_project(tmp_path, '\n[environment.env]\nCDD_SUBNET = "10.9.9"\n')
    assert new_ledger(fixed, "run", subnets_in_use=lambda: []).vagrant_env["CDD_SUBNET"] == \
        "10.9.9"

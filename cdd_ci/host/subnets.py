"""A private /24 per run, so environments that exist at the same time never clash.

The project's Vagrantfiles put their machines' private addresses in `$CDD_SUBNET`. Two runs
on one host with the same subnet would answer for each other on the bridge: a run kept for
debugging beside this morning's build, two projects, a developer's `cdd up` beside CI. When
the config does not fix `CDD_SUBNET`, each run gets one that no other recorded run on this
host holds. VirtualBox only accepts host-only networks in 192.168.56.0/21 by default, so it
draws from there; the other providers from 192.168.100-199.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

VARIABLE = "CDD_SUBNET"
POOLS = {"virtualbox": range(56, 64)}
DEFAULT_POOL = range(100, 200)


def allocate(run_id: str, provider: str, in_use: Iterable[str]) -> str:
    """The first free subnet, probing from a start drawn from the run id.

    Starting from the run id's hash (not from the first subnet) makes two runs that start at
    the same moment, and so cannot see each other's record yet, unlikely to pick the same one.
    """
    pool = [f"192.168.{n}" for n in POOLS.get(provider, DEFAULT_POOL)]
    taken = set(in_use)
    start = int(hashlib.sha256(run_id.encode()).hexdigest(), 16) % len(pool)
    for i in range(len(pool)):
        candidate = pool[(start + i) % len(pool)]
        if candidate not in taken:
            return candidate
    # every subnet is held: share the least bad one rather than refuse to run
    return pool[start]

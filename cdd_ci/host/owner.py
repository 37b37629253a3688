"""The cdd process that owns a live run, seen from another process (`cdd destroy`).

A cancelled job's shell may not pass the cancel on (a `run:` step without `exec`): the
owner then goes on building while the job's `if: always()` step tries to destroy. Such an
owner is asked to stop as a user would (SIGTERM: it cancels its build and destroys what it
built), given a bounded time, and then stopped outright, so that whoever asked can destroy
from the ledger. Only the process the ledger names, checked to be that same process (its
pid and start time) on this host, is ever signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

from cdd_ci.host.ledger import LedgerStore
from cdd_ci.infra import proctree

POLL = 0.5
AFTER_KILL = 10.0
"""A killed owner's lock goes with it at once; this is slack for a loaded host."""


def stop(store: LedgerStore, run_id: str, grace: float, say: Callable[[str], None]) -> bool:
    """Make a live run free to destroy; returns whether it is free (or forgotten) now."""
    try:
        ledger = store.read(run_id)
    except (OSError, ValueError, TypeError):
        return True  # forgotten meanwhile: its owner finished
    found = proctree.read(ledger.pid)
    its_owner = (
        ledger.host == socket.gethostname()
        and ledger.pid != os.getpid()
        and found is not None
        and proctree.alive(ledger.pid, ledger.pid_started)
        and "cdd" in found.command
    )
    if not its_owner:
        # another cdd destroy, `cdd down` or the reaper is releasing it: give it the same time
        say(f"run {run_id} is being released by another cdd: waiting up to {grace:.0f}s")
        return _wait_free(store, run_id, grace)
    say(f"run {run_id} is live: asking its cdd (pid {ledger.pid}) to stop and destroy what "
        f"it built (up to {grace:.0f}s)")
    _signal(ledger.pid, signal.SIGTERM)
    if _wait_free(store, run_id, grace):
        return True
    say(f"its cdd (pid {ledger.pid}) did not finish in {grace:.0f}s: stopping it and "
        "destroying from the ledger")
    if proctree.alive(ledger.pid, ledger.pid_started):
        _signal(ledger.pid, signal.SIGKILL)
    return _wait_free(store, run_id, AFTER_KILL)


def _wait_free(store: LedgerStore, run_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while store.is_live(run_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

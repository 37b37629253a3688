"""What cdd has on this host: every run, from three sources that fail differently.

    the host index    ledgers of every project (host/index.py): what each run meant to
                      create, whether its process is alive, what it was doing
    the providers     every provider whose tool is installed, listed by machine name
                      (infra/providers/): finds what no ledger knows of
    Vagrant's index   `vagrant global-status --prune`: machines Vagrant itself remembers,
                      counted when their Vagrant name is a cdd name (`cdd-<run id>-...`)

They are merged by run id into one `HostRun` each. `cdd status` shows them; `cdd reap`
judges them (reaper.py). Nothing here changes anything, except that pruning Vagrant's
index drops entries of machines that no longer exist.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cdd_ci.host.index import HostIndex, IndexEntry
from cdd_ci.host.ledger import Ledger, LedgerPhase, LedgerStore
from cdd_ci.infra import proctree
from cdd_ci.infra.providers import NAME_RE, ListingFailed, Provider, Resource, started_at
from cdd_ci.infra.vagrant import GlobalEntry


@dataclass
class HostRun:
    """One run id and everything this host has of it."""

    run_id: str
    ledger: Ledger | None = None
    store: LedgerStore | None = None
    """The ledger's project store: where the run is locked, released and forgotten."""
    live: bool = False
    """Its process holds the lock (only known for a run with a ledger)."""
    resources: list[Resource] = field(default_factory=list)
    vagrant: list[GlobalEntry] = field(default_factory=list)
    orphaned: bool = False
    """Its project's ledger is gone (a cleaned workspace): known from the index's copy."""

    @property
    def started_at(self) -> float | None:
        return self.ledger.started_at if self.ledger else started_at(self.run_id)

    @property
    def environment(self) -> str:
        return self.ledger.environment if self.ledger else ""

    @property
    def machines_left(self) -> list[str]:
        names = {r.machine for r in self.resources}
        names |= {m.group(2) for e in self.vagrant if (m := NAME_RE.match(e.name))}
        return sorted(names)

    @property
    def stage(self) -> str:
        """How far the run got, in words, from its ledger."""
        if self.ledger is None:
            return "unrecorded"
        phase = self.ledger.phase
        if phase is not LedgerPhase.CREATED:
            return {LedgerPhase.CHECKING: "checks",
                    LedgerPhase.UP: "up (cdd up)"}.get(phase, phase.value)
        states = set(self.ledger.machine_states.values())
        if not states:
            return "up"
        if "up" in states:
            return "provision"
        return "provisioned"


@dataclass
class Inventory:
    runs: list[HostRun]
    stale: list[IndexEntry]
    """Index pointers whose ledger is gone."""
    problems: list[str]
    """Sources that could not be read: a partial picture, said out loud."""
    index: HostIndex | None = None
    host: str = field(default_factory=socket.gethostname)


def gather(
    index: HostIndex,
    provider: Provider,
    providers: Sequence[str],
    vagrant_index: Callable[[], list[GlobalEntry]] | None = None,
) -> Inventory:
    """Everything cdd has on this host, merged by run id, oldest first."""
    runs: dict[str, HostRun] = {}
    stale: list[IndexEntry] = []
    problems: list[str] = []
    for entry in index.entries():
        store = LedgerStore(entry.state_dir, index)
        try:
            ledger = store.read(entry.run_id)
        except FileNotFoundError:
            copy = _copy(entry)
            if copy is None:
                stale.append(entry)
            else:
                # the workspace is gone, the index's copy is not: no lock to ask, so the
                # owner's liveness is its process, checked by pid and start time
                live = copy.host == socket.gethostname() and proctree.alive(copy.pid,
                                                                             copy.pid_started)
                runs[entry.run_id] = HostRun(entry.run_id, copy, None, live, orphaned=True)
            continue
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"ledger of run {entry.run_id} unreadable: {exc}")
            continue
        runs[entry.run_id] = HostRun(entry.run_id, ledger, store, store.is_live(entry.run_id))
    wanted = list(dict.fromkeys([*providers, *(r.ledger.provider for r in runs.values()
                                               if r.ledger)]))
    for name in wanted:
        try:
            found = provider.find(name)
        except ListingFailed as exc:  # one provider's failure must not hide the others
            problems.append(str(exc))
            continue
        for resource in found:
            runs.setdefault(resource.run_id, HostRun(resource.run_id)).resources.append(resource)
    if vagrant_index is not None:
        try:
            entries = vagrant_index()
        except Exception as exc:
            problems.append(f"vagrant global-status failed: {exc}")
            entries = []
        for known in entries:
            match = NAME_RE.match(known.name)
            if match:
                runs.setdefault(match.group(1), HostRun(match.group(1))).vagrant.append(known)
    ordered = sorted(runs.values(), key=lambda r: (r.started_at or 0.0, r.run_id))
    return Inventory(ordered, stale, problems, index)


def _copy(entry: IndexEntry) -> Ledger | None:
    if not entry.ledger:
        return None
    try:
        return Ledger.from_json(entry.ledger)
    except (ValueError, TypeError):
        return None


GLOBAL_STATUS_TIMEOUT = 120.0


def on_this_host(*, vagrant: bool, prune: bool = False) -> Inventory:
    """The real inventory: this user's host index, every installed provider and, if asked,
    Vagrant's own index (slow: it loads every Vagrantfile it knows; `prune` also drops the
    entries of machines that are gone, which only the reaper asks for).
    """
    import os

    from cdd_ci.infra.providers import RealProvider, available
    from cdd_ci.infra.vagrant import global_status
    from cdd_ci.text import without_tokens

    env = without_tokens(os.environ)
    vagrant_index = (lambda: global_status(env, prune=prune, timeout=GLOBAL_STATUS_TIMEOUT)) \
        if vagrant else None
    return gather(HostIndex.from_environ(), RealProvider(), available(), vagrant_index)

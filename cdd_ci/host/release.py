"""Releasing a recorded run from outside the process that started it.

`cdd down`, `cdd destroy`, a run clearing what earlier runs left, and the reaper all do
the same thing to a run they do not own: take its lock (so no one else is releasing it at
the same moment, and a live run is never touched), optionally save what the config wants
kept, destroy from the ledger, forget the run once nothing of it is left, and close its
hours in the run history. Only the lock decides who acts; everything else is idempotent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cdd_ci.config import HISTORY_URL_VARIABLE
from cdd_ci.history import store as history
from cdd_ci.host.ledger import Ledger, LedgerStore
from cdd_ci.host.teardown import destroy_run
from cdd_ci.infra import proctree
from cdd_ci.infra.providers import Provider
from cdd_ci.infra.vagrant import Environment
from cdd_ci.models import ENVIRONMENT, Phase, Status, StepResult
from cdd_ci.words import plural


@dataclass
class Released:
    """What became of one run."""

    run_id: str
    busy: bool = False
    """Someone holds the run's lock (it is live, or another cdd is releasing it)."""
    steps: list[StepResult] = field(default_factory=list)
    history_problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.busy and all(s.ok for s in self.steps)

    @property
    def gone(self) -> bool:
        """The machines are verified gone (the harvest may still have failed)."""
        teardown = [s for s in self.steps if s.name in ("destroy", "destroy-verified")]
        return not self.busy and bool(teardown) and all(s.ok for s in teardown)


def release_run(
    store: LedgerStore,
    run_id: str,
    environment_for: Callable[[Ledger], Environment | None],
    provider: Provider,
    *,
    command: str,
    timeout: float,
    save: Callable[[Ledger], list[StepResult]] | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    clock: Callable[[], float] = time.time,
    stop_processes: Callable[[str], StepResult | None] | None = None,
    history_location: str = "",
) -> Released:
    """Destroy one recorded run under its lock; `save` runs first (`cdd down`'s harvest).

    The ledger is read again once the lock is held: what it says now is what counts (the
    run may have been forgotten, or its hold extended, since whoever called us looked).
    `history_location`: the caller's own history (its config's, password included), used
    when it is the one the ledger names without its password.
    """
    stop_processes = stop_processes or stop_run_processes
    with store.hold(run_id) as held:
        if not held:
            # a run forgotten meanwhile (its owner finished its teardown) is not busy
            return Released(run_id, busy=store.run_dir(run_id).is_dir())
        try:
            ledger = store.read(run_id)
        except (OSError, ValueError, TypeError):
            return Released(run_id)  # forgotten meanwhile: nothing left to do
        started = clock()
        timeline = history.Timeline(clock)
        released = Released(run_id)
        if save is not None:
            with timeline.span("harvest"):
                released.steps.extend(save(ledger))
        environment = environment_for(ledger) if Path(ledger.directory).is_dir() else None
        with timeline.span("destroy"):
            # What a dead owner left running (a `vagrant up` still creating a machine) would
            # fail the destroy, or bring a machine back after it: stop the run's whole tree.
            stopped = stop_processes(run_id)
            if stopped is not None:
                released.steps.append(stopped)
                if on_step:
                    on_step(stopped)
            released.steps.extend(destroy_run(ledger, environment, provider, timeout=timeout,
                                              on_step=on_step))
        if released.gone:
            store.forget(run_id)
        released.history_problem = record(ledger, command, started, clock(), timeline,
                                          released, history_location)
        return released


def stop_run_processes(run_id: str) -> StepResult | None:
    """Stop what is left of a run's processes; a step only when there was something."""
    started = time.monotonic()
    found = proctree.of_run(run_id)
    if not found:
        return None
    survivors = proctree.stop(found)
    names = ", ".join(sorted({p.command.split(" ", 1)[0].rsplit("/", 1)[-1] for p in found}))
    return StepResult(
        Phase.DESTROY, ENVIRONMENT, "stop-processes",
        Status.ERROR if survivors else Status.PASSED,
        duration=time.monotonic() - started,
        message=(f"{len(survivors)} of the run's processes outlived SIGKILL: "
                 f"{', '.join(survivors)}") if survivors else
        f"stopped {plural(len(found), 'process', 'processes')} its cdd left running ({names})",
    )


def record(
    ledger: Ledger,
    command: str,
    started: float,
    finished: float,
    timeline: history.Timeline,
    released: Released,
    configured: str = "",
) -> str:
    """Close the run's hours in the history its ledger names; returns a problem, or ""."""
    if not ledger.history:
        return ""
    start = history.RunStart(
        ledger.run_id, ledger.environment, ledger.provider, ledger.command,
        ledger.started_at, tuple(history.MachineSpec(m) for m in ledger.machines),
        host=ledger.host)
    outcome = "released" if released.ok else (
        "teardown-failed" if not released.gone else "harvest-failed")
    try:
        # this process's own location of the same history has the password the ledger lacks
        location = history.usable_location(
            ledger.history, configured or os.environ.get(HISTORY_URL_VARIABLE, ""))
        history.open_history(location).note(
            start, command=command, started_at=started, finished_at=finished,
            outcome=outcome, spans=timeline.spans, released=released.gone)
    except history.HistoryError as exc:
        return f"run history not updated: {exc}"
    return ""

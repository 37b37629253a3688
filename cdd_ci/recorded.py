"""Commands on an environment that an earlier command left up: `cdd check`, `cdd down`,
`cdd destroy`. They know nothing of the process that built it: the ledger is enough.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cdd_ci.backend import Backend
from cdd_ci.checks import harvest
from cdd_ci.checks import smoke as checks
from cdd_ci.config import Config
from cdd_ci.host import owner
from cdd_ci.host.ledger import Ledger, LedgerStore
from cdd_ci.host.release import release_run
from cdd_ci.infra.ssh import Shell, Shells, SshError
from cdd_ci.infra.vagrant import VagrantError
from cdd_ci.lifecycle import SSH_OPEN_TIMEOUT
from cdd_ci.models import ENVIRONMENT, Phase, RunResult, Status, StepResult
from cdd_ci.report.progress import Display
from cdd_ci.words import plural

OWNER_GRACE = 60.0
"""How long `cdd destroy` gives a live run's own cdd to tear down once asked to stop.

A cancelled GitHub job ends about 5 minutes after the cancel, whatever is still running:
this, plus the destroy that follows (`[timeouts] destroy`, 120 s by default), fits in it."""


def destroy_recorded(
    config: Config, backend: Backend, display: Display, run_id: str | None = None,
    *, owner_grace: float = OWNER_GRACE,
) -> list[StepResult]:
    """`cdd destroy`: tear down every recorded run of this project from its ledger alone.

    A run whose cdd is still alive did not get its job's cancel (a shell that did not pass
    the signal on) or is stuck: that cdd is asked to stop (SIGTERM, so it destroys what it
    built itself), given `owner_grace` seconds, then stopped outright, and the run is
    destroyed from its ledger. Only the process the ledger names is ever signalled.
    """
    store = LedgerStore(config.state_dir)
    ledgers = [led for led in store.all() if run_id is None or led.run_id == run_id]
    steps: list[StepResult] = []
    for ledger in ledgers:
        display.phase(f"destroying run {ledger.run_id} ({', '.join(ledger.machines)})")
        if store.is_live(ledger.run_id):
            owner.stop(store, ledger.run_id, owner_grace, display.warn)
            if not store.run_dir(ledger.run_id).is_dir():
                display.phase(f"run {ledger.run_id}: its cdd destroyed it and verified it gone")
                continue
        released = release_run(store, ledger.run_id, lambda led: backend.environment(led, None),
                               backend.provider, command="destroy",
                               timeout=config.timeouts.destroy, on_step=display.step,
                               history_location=config.history_path)
        if released.busy:
            steps.append(StepResult(Phase.DESTROY, ENVIRONMENT, "destroy", Status.ERROR,
                                    message=f"run {ledger.run_id} is live (another cdd holds "
                                            "it and did not let go): not destroyed"))
            display.step(steps[-1])
        steps.extend(released.steps)
        if released.history_problem:
            display.warn(released.history_problem)
    return steps


def down_recorded(
    config: Config, backend: Backend, display: Display, run_id: str | None = None
) -> RunResult:
    """`cdd down`: the evening after `cdd up`. Save what the config's `[[harvest]]` names,
    then destroy the environment and release everything it held.

    The copies go to `reports/saved/<run id>/<machine>/`, which later runs do not clear.
    A failed copy is reported (exit 3) but does not keep the machines: they would only be
    reaped later, unsaved all the same.
    """
    store = LedgerStore(config.state_dir)
    kept = [led for led in store.all()
            if led.phase.kept_by_design and run_id in (None, led.run_id)]
    if not kept:
        raise LookupError("no environment is up here (`cdd status` lists this host's)")
    ledger = kept[-1]
    result = RunResult(ledger.run_id, ledger.environment, ledger.provider, ledger.machines,
                       started_at=time.time())
    out_dir = config.report_dir / "saved" / ledger.run_id

    def save(led: Ledger) -> list[StepResult]:
        if not config.harvest:
            return []
        display.phase(f"saving what [[harvest]] names to {out_dir}")
        try:
            pool = backend.shells(backend.environment(led, None).ssh_config(
                led.machines, timeout=SSH_OPEN_TIMEOUT), None)
        except VagrantError as exc:
            return [StepResult(Phase.HARVEST, ENVIRONMENT, "harvest", Status.ERROR,
                               message=f"machines unreachable, nothing saved: {exc}")]
        steps: list[StepResult] = []
        try:
            opened: dict[str, Shell] = {}
            for machine in led.machines:
                try:
                    pool.open(machine, timeout=SSH_OPEN_TIMEOUT)
                    opened[machine] = pool.shells[machine]
                except SshError as exc:
                    steps.append(StepResult(Phase.HARVEST, machine, "harvest", Status.ERROR,
                                            message=f"unreachable, nothing saved: {exc}"))
            steps += [s for s in harvest.harvest(config, opened, out_dir,
                                                 timeout=config.timeouts.harvest)
                      if s.machine in opened]
        finally:
            pool.close()
        for step in steps:
            display.step(step)
        return steps

    display.phase(f"down: run {ledger.run_id} ({', '.join(ledger.machines)})")
    released = release_run(store, ledger.run_id, lambda led: backend.environment(led, None),
                           backend.provider, command="down", timeout=config.timeouts.destroy,
                           save=save, on_step=display.step,
                           history_location=config.history_path)
    if released.busy:
        result.add(StepResult(Phase.DESTROY, ENVIRONMENT, "destroy", Status.ERROR,
                              message=f"run {ledger.run_id} is in use by another cdd "
                                      "(its lock is held): try again when it has finished"))
    result.steps.extend(released.steps)
    if released.history_problem:
        display.warn(released.history_problem)
    result.finished_at = time.time()
    return result


@dataclass
class _Link:
    pool: Shells
    opened: dict[str, Shell]
    errors: dict[str, str]
    """Machine -> why its connection failed."""


def _open_all(pool: Shells, machines: Sequence[str]) -> _Link:
    """Open every machine's connection at once."""
    opened: dict[str, Shell] = {}
    errors: dict[str, str] = {}

    def one(machine: str) -> None:
        try:
            pool.open(machine, timeout=SSH_OPEN_TIMEOUT)
            opened[machine] = pool.shells[machine]
        except SshError as exc:
            errors[machine] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as threads:
        list(threads.map(one, machines))
    return _Link(pool, {m: opened[m] for m in machines if m in opened}, errors)


def check_recorded(config: Config, backend: Backend, display: Display) -> RunResult:
    """`cdd check`: the smoke checks against the run that is up now (kept by `cdd up`)."""
    store = LedgerStore(config.state_dir)
    kept = [led for led in store.all() if led.phase.kept_by_design]
    if not kept:
        raise LookupError("no environment is up: start one with `cdd up`")
    ledger = kept[-1]
    result = RunResult(ledger.run_id, ledger.environment, ledger.provider, ledger.machines,
                       started_at=time.time(), kept=True)
    cached = store.ssh_config(ledger.run_id)
    link = _open_all(backend.shells(cached, None), ledger.machines) if cached else None
    if link is not None and link.errors:  # stale (a machine restarted, say): ask Vagrant
        link.pool.close()
        store.drop_ssh_config(ledger.run_id)
        link = None
    if link is None:
        try:
            text = backend.environment(ledger, None).ssh_config(ledger.machines,
                                                                 timeout=SSH_OPEN_TIMEOUT)
        except VagrantError as exc:
            result.add(StepResult(Phase.CHECK, ENVIRONMENT, "ssh-config", Status.ERROR,
                                  message=str(exc)))
            return result
        link = _open_all(backend.shells(text, None), ledger.machines)
        if not link.errors:
            store.keep_ssh_config(ledger.run_id, text)
    pool, opened = link.pool, link.opened
    try:
        for machine, message in link.errors.items():
            result.add(StepResult(Phase.CHECK, machine, "ssh", Status.ERROR, message=message))
        display.phase(f"check: {plural(len(checks.plan(config)), 'check')} on run "
                      f"{ledger.run_id}")
        result.steps.extend(checks.run_checks(
            config, opened, pool.addresses,
            deadline=time.monotonic() + config.timeouts.check, on_step=display.step))
    finally:
        pool.close()
    result.finished_at = time.time()
    return result

"""`cdd reap`: the sweep outside any run that finishes what in-process cleanup could not.

A run destroys its machines in its own `finally`; SIGKILL, a lost runner or a power cut
skip that. The reaper, run from cron or CI, looks at everything cdd has on this host
(inventory.py) and destroys what is over. The rules, in order:

1. A run whose process holds its lock is **live**: never touched, whatever its age. (A run
   stuck for hours is its job's timeout's business: once its process dies, the lock goes
   with it and the rules below apply.)
2. A run recorded on another host (a project on a shared disk) is not this host's to judge.
3. A run **held** for debugging (`cdd run --hold-on-failure`) is kept until its hold
   expires, then reaped, whatever `--older-than` says: the hold is the user's explicit word.
4. An environment kept on purpose (`cdd up`, `--destroy never|passing`) has no live
   process by design: it is reaped once older than `--older-than` (a forgotten `cdd down`).
5. Any other recorded run whose process is gone is **over** (killed during up, provision,
   checks or teardown): reaped at once.
6. Machines that no ledger on this host knows of are reaped only once older than
   `--older-than`, by the time in their run id: their run may be recorded elsewhere (a
   private index, another user) and still going.

A run with a ledger is destroyed from it (Vagrant, then the provider's tools, then a check
that nothing is left) under its lock, and its hours are closed in its history; machines
with no ledger are removed with the provider's own tools. Everything is idempotent: a
second reaper, or a run clearing the same leftovers, finds the lock held or nothing left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cdd_ci.durations import format_duration, format_time
from cdd_ci.host.inventory import HostRun, Inventory
from cdd_ci.host.ledger import Ledger
from cdd_ci.host.release import release_run, stop_run_processes
from cdd_ci.infra.providers import ListingFailed, Provider
from cdd_ci.infra.vagrant import Environment, GlobalEntry
from cdd_ci.models import ExitCode
from cdd_ci.words import plural

DEFAULT_OLDER_THAN = 6 * 3600.0
DESTROY_TIMEOUT = 300.0
PARALLEL = 4
"""Runs destroyed at once: enough to clear a backlog, few enough not to swamp the host."""


@dataclass(frozen=True)
class Verdict:
    reap: bool
    reason: str


def judge(run: HostRun, *, now: float, older_than: float, host: str) -> Verdict:
    """What the rules in the module docstring say about one run, at `now`."""
    limit = format_duration(older_than)
    started = run.started_at
    age = now - started if started is not None else None
    ledger = run.ledger
    if ledger is None:
        if age is None:
            return Verdict(False, "no ledger here and no time in its run id: left alone")
        if age > older_than:
            return Verdict(True, f"no ledger on this host, {format_duration(age)} old "
                                 f"(over {limit})")
        return Verdict(False, f"no ledger on this host, {format_duration(age)} old: "
                              f"reaped once over {limit} (it may be recorded elsewhere)")
    if run.live:
        return Verdict(False, f"live: its cdd process (pid {ledger.pid}) is running")
    if ledger.host and ledger.host != host:
        return Verdict(False, f"recorded on host {ledger.host}, not this one")
    if ledger.hold_until:
        if ledger.hold_until > now:
            return Verdict(False, f"held for debugging until {format_time(ledger.hold_until)}")
        return Verdict(True, f"its hold expired at {format_time(ledger.hold_until)}")
    age = age or 0.0
    if ledger.phase.kept_by_design:
        what = "up since `cdd up`" if ledger.command == "up" else f"kept ({ledger.phase})"
        if age > older_than:
            return Verdict(True, f"{what} for {format_duration(age)}, over {limit} "
                                 "(a forgotten `cdd down`?)")
        return Verdict(False, f"{what} for {format_duration(age)}: reaped once over {limit}")
    return Verdict(True, f"its cdd process is gone (stopped during {run.stage})")


@dataclass
class Reaped:
    run: HostRun
    reason: str
    freed: list[str] = field(default_factory=list)
    problem: str = ""


@dataclass
class ReapReport:
    dry_run: bool
    reaped: list[Reaped] = field(default_factory=list)
    kept: list[tuple[HostRun, Verdict]] = field(default_factory=list)
    stale_pointers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Reaped]:
        return [r for r in self.reaped if r.problem]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """The one line a cron mail or a job log ends with."""
        machines = sum(len(r.freed) for r in self.reaped if not r.problem)
        verb = "would free" if self.dry_run else "freed"
        freed = len(self.reaped) - len(self.failed)
        stale = (f"; {plural(self.stale_pointers, 'stale index entry', 'stale index entries')}"
                 " dropped" if self.stale_pointers and not self.dry_run else "")
        return (f"cdd reap: {verb} {plural(freed, 'run')}, {plural(machines, 'machine')}; "
                f"{len(self.kept)} kept; {len(self.failed)} failed{stale}")

    def exit_code(self) -> ExitCode:
        """Machines it could not destroy are a teardown failure; a provider it could not
        list is an infrastructure one (what is there is not known)."""
        if self.failed:
            return ExitCode.TEARDOWN
        return ExitCode.INFRASTRUCTURE if self.problems else ExitCode.OK


def reap(
    inventory: Inventory,
    *,
    environment_for: Callable[[Ledger], Environment | None],
    provider: Provider,
    vagrant_destroy: Callable[[GlobalEntry], None] | None = None,
    older_than: float = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    timeout: float = DESTROY_TIMEOUT,
    clock: Callable[[], float] = time.time,
    on_event: Callable[[str], None] = lambda _: None,
) -> ReapReport:
    """Destroy every run of the inventory the rules condemn; report what was freed.

    Condemned runs are destroyed side by side (each under its own lock): a host with a
    dozen leaked runs should not wait a dozen destroys in a row. What happened is reported
    in the inventory's order, whatever order the destroys finish in.
    """
    report = ReapReport(dry_run, problems=list(inventory.problems))
    now = clock()
    condemned: list[Reaped] = []
    for run in inventory.runs:
        verdict = judge(run, now=now, older_than=older_than, host=inventory.host)
        if verdict.reap:
            condemned.append(Reaped(run, verdict.reason))
        else:
            report.kept.append((run, verdict))

    def destroy(reaped: Reaped) -> Reaped:
        run = reaped.run
        if dry_run:
            reaped.freed = run.machines_left
        elif run.ledger is not None and run.store is not None:
            _release(run, reaped, environment_for, provider, timeout, clock)
        else:
            _remove(run, reaped, provider, vagrant_destroy, timeout)
            if run.orphaned and not reaped.problem and inventory.index is not None:
                inventory.index.unregister(run.run_id)  # its copy was all that was left
        return reaped

    if condemned:
        with ThreadPoolExecutor(max_workers=1 if dry_run else PARALLEL) as pool:
            report.reaped = list(pool.map(destroy, condemned))
    done = {id(r.run): r for r in report.reaped}
    for run in inventory.runs:
        if id(run) not in done:
            reason = next(v.reason for k, v in report.kept if k is run)
            on_event(f"kept   {_label(run)}: {reason}")
            continue
        reaped = done[id(run)]
        verb = "would free" if dry_run else "FAILED" if reaped.problem else "freed"
        on_event(f"{verb} {_label(run)}: {reaped.reason}; "
                 + (reaped.problem or _what(reaped.freed)))
    for entry in inventory.stale:
        report.stale_pointers += 1
        if not dry_run and inventory.index is not None:
            try:
                inventory.index.unregister(entry.run_id)
            except OSError as exc:
                report.problems.append(f"stale index entry {entry.run_id}: {exc}")
    return report


def _release(
    run: HostRun,
    reaped: Reaped,
    environment_for: Callable[[Ledger], Environment | None],
    provider: Provider,
    timeout: float,
    clock: Callable[[], float],
) -> None:
    assert run.store is not None and run.ledger is not None
    released = release_run(run.store, run.run_id, environment_for, provider,
                           command="reap", timeout=timeout, clock=clock)
    if released.busy:
        reaped.problem = "taken by another cdd meanwhile: left to it"
        return
    if not released.gone and released.steps:
        reaped.problem = "; ".join(s.message for s in released.steps if not s.ok)
        return
    reaped.freed = run.machines_left
    if released.history_problem:
        reaped.freed.append(f"({released.history_problem})")


def _remove(
    run: HostRun,
    reaped: Reaped,
    provider: Provider,
    vagrant_destroy: Callable[[GlobalEntry], None] | None,
    timeout: float,
) -> None:
    problems: list[str] = []
    stopped = stop_run_processes(run.run_id)
    if stopped is not None and not stopped.ok:
        problems.append(stopped.message)
    for entry in run.vagrant:
        if vagrant_destroy is None:
            continue
        try:
            vagrant_destroy(entry)
        except Exception as exc:  # the provider's tools below may still succeed
            problems.append(f"vagrant destroy {entry.id}: {exc}")
    for resource in run.resources:
        try:
            provider.remove(resource)
        except Exception as exc:
            problems.append(f"{resource}: {exc}")
    try:
        left = [str(r) for p in {r.provider for r in run.resources}
                for r in provider.find(p, [run.run_id])]
    except ListingFailed as exc:
        reaped.problem = f"could not verify that it is gone: {exc}"
        return
    if left:
        reaped.problem = f"left behind: {', '.join(left)}" + (
            f" ({'; '.join(problems)})" if problems else "")
        return
    reaped.freed = run.machines_left


def _label(run: HostRun) -> str:
    env = f" {run.environment}" if run.environment else ""
    command = f" (cdd {run.ledger.command})" if run.ledger else ""
    return f"run {run.run_id}{env}{command}"


def _what(machines: list[str]) -> str:
    return f"machines: {', '.join(machines)}" if machines else "nothing was left of it"

"""Destroy a run's machines from its ledger alone, then prove they are gone.

Used by the run's own `finally`, by `cdd destroy` in a later process, and by the reaper.
Every step is guarded so that one failure cannot skip the next: Vagrant's destroy first
(it also removes networks and Vagrant's own records), then the provider's own tools for
anything Vagrant did not know about, then a check that nothing of the run is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cdd_ci.host.ledger import Ledger
from cdd_ci.infra.providers import ListingFailed, Provider, Resource
from cdd_ci.infra.vagrant import Environment, VagrantError
from cdd_ci.models import ENVIRONMENT, Phase, Status, StepResult

STATUS_TIMEOUT = 60.0


def destroy_run(
    ledger: Ledger,
    environment: Environment | None,
    provider: Provider,
    *,
    timeout: float,
    log_dir: Path | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Return the `destroy` and `destroy-verified` steps; never raises for a teardown error.

    `environment` is None when the Vagrantfile directory is gone: the provider's own
    tools then do all the work.
    """
    started = time.monotonic()
    problems: list[str] = []
    # power off first, all at once, where Vagrant's destroy would shut each machine down
    # politely (a graceful stop can outlast a cancelled job); where it pulls the plug itself,
    # its destroy does that beside the others' instead of after a step of ours
    running = [r for r in _safe_find(provider, ledger, problems)
               if environment is None or not provider.pulled_by_vagrant(r)]
    if running:
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            list(pool.map(provider.stop, running))
    destroyed: set[str] = set()
    if environment is not None:
        # a process per machine on every provider (see BUILT_TOGETHER in infra/vagrant.py)
        def one(machine: str) -> str:
            log = log_dir / machine / "destroy.log" if log_dir else None
            try:
                environment.destroy(machine, timeout=timeout, log=log)
                destroyed.add(machine)
                return ""
            except VagrantError as exc:
                return f"{machine}: {exc}"

        with ThreadPoolExecutor(max_workers=max(1, len(ledger.machines))) as pool:
            problems += [p for p in pool.map(one, ledger.machines) if p]
    swept: list[str] = []
    for resource in _safe_find(provider, ledger, problems):
        try:
            provider.remove(resource)
            swept.append(resource.name)
        except (RuntimeError, ListingFailed) as exc:  # the verification below still runs
            problems.append(f"{resource}: {exc}")
    verified = verify_gone(ledger, environment, provider, destroyed=destroyed)
    # a failed `vagrant destroy` that the sweep made good is a note, not a teardown failure
    message = "; ".join(problems) if problems else "all machines destroyed"
    if swept:
        message += f"; removed at the provider level: {', '.join(swept)}"
    destroy = StepResult(
        Phase.DESTROY, ENVIRONMENT, "destroy",
        Status.ERROR if problems and not verified.ok else Status.PASSED,
        duration=time.monotonic() - started - verified.duration,
        message=message,
        output="\n".join(problems),
    )
    for step in (destroy, verified):
        if on_step:
            on_step(step)
    return [destroy, verified]


def verify_gone(
    ledger: Ledger, environment: Environment | None, provider: Provider,
    *, destroyed: set[str] | frozenset[str] = frozenset(),
) -> StepResult:
    """`destroyed`: the machines whose `vagrant destroy` succeeded in this teardown."""
    started = time.monotonic()
    try:
        left = _still_there(environment, provider, ledger, destroyed)
    except ListingFailed as exc:
        # not having looked is not "nothing left": the machines may all still be there
        return StepResult(
            Phase.VERIFY, ENVIRONMENT, "destroy-verified", Status.ERROR,
            duration=time.monotonic() - started,
            message=f"could not verify that the run's machines are gone: {exc}",
        )
    return StepResult(
        Phase.VERIFY, ENVIRONMENT, "destroy-verified",
        Status.ERROR if left else Status.PASSED,
        duration=time.monotonic() - started,
        message=f"left behind: {', '.join(left)}" if left else "nothing of the run is left",
    )


def _still_there(
    environment: Environment | None, provider: Provider, ledger: Ledger,
    destroyed: set[str] | frozenset[str],
) -> list[str]:
    left = [str(r) for r in provider.find(ledger.provider, [ledger.run_id])]
    # Vagrant's second look (`vagrant status`, a Ruby start-up on every run's critical path)
    # finds machines the provider listing cannot name: a Vagrantfile that does not name them
    # after the run. It is needed only where Vagrant's own destroy failed, or succeeded and
    # still left the machine's id behind (Vagrant deletes it with the machine).
    doubtful = [m for m in ledger.machines
                if m not in destroyed or (environment is not None and environment.known(m))]
    if environment is not None and doubtful:
        try:
            left += [
                f"vagrant {s.name} ({s.state})"
                for s in environment.status(timeout=STATUS_TIMEOUT)
                if s.exists and s.name in ledger.machines
            ]
        except VagrantError:
            pass  # the provider's own listing above is authoritative; Vagrant's is a second look
    return left


def _safe_find(provider: Provider, ledger: Ledger, problems: list[str]) -> list[Resource]:
    try:
        return provider.find(ledger.provider, [ledger.run_id])
    except ListingFailed as exc:
        problems.append(str(exc))
        return []

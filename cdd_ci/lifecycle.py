"""The run, top to bottom: the only place that knows the phase order and the destroy rule.

    preflight (an environment that needs the internet, on a runner without it, stops
    here: reported, nothing built) -> lock and record the run (write-ahead, and in the
    run history) -> `phases()`: clear leftovers of earlier runs -> up -> provision ->
    connect -> checks -> inventory
    finally: `decide()` the machines' fate -> harvest logs -> destroy (or hold, or keep,
             or leave up for `cdd up`) -> verify nothing is left -> write the report ->
             close the run's record in the history

The `finally` runs whatever happened before it: a failed check, a failed provisioner, a
timeout, any exception, SIGINT or SIGTERM (turned into Interrupted by infra/signals.py).
A bug caught there keeps its traceback in reports/logs/debug.log.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from typing import IO

from cdd_ci.backend import Backend
from cdd_ci.checks import harvest, packages
from cdd_ci.checks import smoke as checks
from cdd_ci.config import Config, DestroyPolicy
from cdd_ci.durations import format_duration, format_time
from cdd_ci.history import store as history
from cdd_ci.host.inventory import HostRun
from cdd_ci.host.ledger import LedgerPhase, LedgerStore, claim_directory, new_ledger
from cdd_ci.host.reaper import DEFAULT_OLDER_THAN, judge
from cdd_ci.host.release import release_run
from cdd_ci.host.teardown import destroy_run
from cdd_ci.infra import git
from cdd_ci.infra.signals import Cancellation, Interrupted
from cdd_ci.infra.ssh import Shell, Shells, SshError
from cdd_ci.infra.vagrant import BOOTED, Installation, MachineUp, Provisioning, VagrantError
from cdd_ci.models import ENVIRONMENT, Package, Phase, RunResult, Status, StepResult
from cdd_ci.report import junit
from cdd_ci.report.progress import Display
from cdd_ci.text import Scrubber
from cdd_ci.words import plural

DEBUG_LOG = "debug.log"
"""In the report's logs: the tracebacks of bugs caught so that teardown still runs."""
SSH_OPEN_TIMEOUT = 60.0
"""`vagrant ssh-config`'s output, kept in the run's directory while `cdd up` keeps it: the
addresses do not change while the machines run, and asking Vagrant again costs `cdd check`
a Ruby start-up (about 1.5 s, most of its time). Dropped when a connection fails."""


class _Stop(Exception):
    """A phase already recorded why the run cannot go on: straight to the teardown."""


class Fate(Enum):
    """What happens to the machines when the command ends."""

    DESTROY = "destroy"
    KEEP = "keep"
    """`--destroy never`, or `--destroy passing` after a failure: until `cdd destroy`."""
    HOLD = "hold"
    """`--hold-on-failure`: a failed environment kept for debugging, until a deadline."""
    STAY_UP = "stay up"
    """`cdd up`: the environment is the product of the command, up for the day."""


def decide(result: RunResult, policy: DestroyPolicy, *, stays_up: bool,
           hold_for: float) -> Fate:
    """The one destroy rule. A cancelled run is destroyed whatever else was asked (only
    `--destroy never` keeps it): a cancelled job's machines are nobody's to debug."""
    if stays_up and (result.passed or policy is not DestroyPolicy.ALWAYS):
        return Fate.STAY_UP
    if result.interrupted_by:
        return Fate.KEEP if policy is DestroyPolicy.NEVER else Fate.DESTROY
    if policy is DestroyPolicy.NEVER:
        return Fate.KEEP
    if not result.passed and hold_for > 0:
        return Fate.HOLD
    if policy is DestroyPolicy.PASSING and not result.passed:
        return Fate.KEEP
    return Fate.DESTROY


class Lifecycle:
    """One run of one environment."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        display: Display,
        cancellation: Cancellation,
        *,
        policy: DestroyPolicy | None = None,
        command: str = "run",
        run_id: str | None = None,
        hold_on_failure: float = 0.0,
        clock: Callable[[], float] = time.time,
        reporters: Sequence[Callable[[RunResult], None]] = (),
    ) -> None:
        self.config = config
        self.reporters = list(reporters)
        """Called after teardown, before the JUnit report is written (see report/reporters.py)."""
        self.backend = backend
        self.display = display
        self.cancellation = cancellation
        self.policy = policy or config.destroy
        self.store = LedgerStore(config.state_dir)
        self.ledger = new_ledger(config, command, run_id)
        self.log_dir = config.report_dir / "logs"
        self.result = RunResult(
            run_id=self.ledger.run_id,
            environment=config.environment.name,
            provider=config.environment.provider,
            machines=list(config.environment.machines),
            started_at=self.ledger.started_at,
        )
        self._ledger_lock = threading.Lock()
        self._vagrant = backend.environment(self.ledger, cancellation.build)
        self._shells: Shells | None = None
        self._open: dict[str, Shell] = {}
        self._directory: IO[str] | None = None
        self._ssh_config = ""
        self._booted: set[str] = set()
        self._ssh_config_answer: Future[str] | None = None
        """`vagrant ssh-config` of every machine, asked once the last one answers SSH: one
        Ruby start-up (1.5 s of CPU or more) for the whole environment, while Vagrant sets
        hostnames and provisions, rather than on the path between provisioning and the
        checks (which wait for the last machine anyway)."""
        self._ssh_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssh-config")
        self.hold_on_failure = hold_on_failure
        """Seconds to keep a failed environment for debugging (0: destroy as usual)."""
        self.clock = clock
        self.timeline = history.Timeline(clock)
        self._history_event = 0
        self._released_at: float | None = None
        self._cancel_told = False
        self._plugin_list: list[Package] = []

    # -- the sequence ------------------------------------------------------------------

    def run(self) -> RunResult:
        """`cdd run`: build, check, always tear down (per policy), always report."""
        return self._execute(stays_up=False)

    def build(self) -> RunResult:
        """`cdd up`: the same build and checks, but the environment stays for the day.

        A failed build is still destroyed (there is nothing useful to keep up), unless the
        policy says otherwise. Once built, the lock is let go: from then on the reaper judges
        the environment by its age, which is what catches a forgotten `cdd down`.
        """
        return self._execute(stays_up=True)

    def phases(self) -> tuple[Callable[[], None], ...]:
        """The build, in order, the same for both commands. A phase that fails stops it;
        what follows (teardown, report) is `_execute`'s `finally`."""
        return (self._fresh_reports, self.claim_directory, self.clear_leftovers, self.up,
                self.connect, self.check, self.inventory)

    def _execute(self, *, stays_up: bool) -> RunResult:
        if not self.preflight():
            return self.result
        # locked before it is recorded: no reaper may ever find the run and think it dead
        lock = self.store.acquire(self.ledger.run_id)
        self._record(LedgerPhase.CREATED)
        self._begin_history()
        try:
            self._attempt(*self.phases())
        finally:
            self._mask_signals()
            self.conclude(decide(self.result, self.policy, stays_up=stays_up,
                                 hold_for=self.hold_on_failure))
            self._release_directory()
            self.report()
            self._finish_history()
            lock.close()
        return self.result

    def _attempt(self, *phases: Callable[[], None]) -> None:
        """The phases in order, until one stops the run. How it stopped goes into the result
        and nothing propagates, so the caller's `finally` tears down from a known state."""
        try:
            for phase in phases:
                phase()
        except Interrupted as exc:
            self.result.interrupted_by = exc.signame
        except _Stop:
            pass  # already reported as a step
        except Exception as exc:  # a bug must not skip teardown; it is reported instead
            self.result.add(StepResult(Phase.INTERNAL, ENVIRONMENT, "internal error",
                                       Status.ERROR, message=self._bug(exc)))

    # -- phases ------------------------------------------------------------------------

    def preflight(self) -> bool:
        """Before anything is recorded or built: can this runner build the environment?

        A host whose provider is known to be broken, or a runner without the internet for an
        environment that needs it (`environment.needs_network`), is refused rather than
        half-built: one infrastructure error in the report (exit 3), its checks skipped, and
        nothing to tear down.
        """
        if self._host_ready() and self._network_ready():
            return True
        self._fresh_reports()
        self._skip_checks()
        self.report()
        return False

    def _host_ready(self) -> bool:
        problem = self.backend.host(self.config.environment.provider)
        if problem is None:
            return True  # the usual case, not worth a line in every report
        self.display.step(self.result.add(StepResult(
            Phase.PREFLIGHT, ENVIRONMENT, "host", Status.ERROR,
            message=f"{problem}; nothing was built")))
        return False

    def _network_ready(self) -> bool:
        env = self.config.environment
        if not env.needs_network:
            return True
        self.display.phase(f"preflight: connecting to {env.network_probe} "
                           "(environment.needs_network)")
        started = time.monotonic()
        problem = self.backend.network(env.network_probe, env.network_probe_timeout)
        step = self.result.add(StepResult(
            Phase.PREFLIGHT, ENVIRONMENT, "network",
            Status.PASSED if problem is None else Status.ERROR,
            duration=time.monotonic() - started,
            message=f"reached {env.network_probe}" if problem is None else
            f"{env.name} needs the internet (environment.needs_network), and this runner "
            f"cannot reach {env.network_probe}: {problem}; nothing was built"))
        self.display.step(step)
        return problem is None

    def claim_directory(self) -> None:
        """Take turns with other runs of the same Vagrantfile directory (see host/ledger.py)."""
        started = time.monotonic()
        try:
            self._directory = claim_directory(
                self.config.vagrant_dir, timeout=self.config.timeouts.up,
                on_wait=self.display.warn)
        except TimeoutError as exc:
            self.result.add(StepResult(Phase.CLEANUP, ENVIRONMENT, "environment directory",
                                       Status.ERROR, duration=time.monotonic() - started,
                                       message=str(exc)))
            raise _Stop from None

    def _release_directory(self) -> None:
        if self._directory is not None:
            self._directory.close()
            self._directory = None

    def clear_leftovers(self) -> None:
        """Tear down what earlier runs of this project left, by the reaper's rules: a killed
        run's machines at once; an environment kept on purpose (`cdd up`, --destroy never,
        a hold) only once `cdd reap` would take it too, so a developer's day is not cut short
        by a run in the same checkout."""
        for old in self.store.all():
            if old.run_id == self.ledger.run_id or self.store.is_live(old.run_id):
                continue
            verdict = judge(HostRun(old.run_id, ledger=old, store=self.store),
                            now=self.clock(), older_than=DEFAULT_OLDER_THAN,
                            host=socket.gethostname())
            if not verdict.reap:
                self.display.warn(f"run {old.run_id}: {verdict.reason}: left as it is")
                continue
            self.display.phase(f"clearing leftovers of run {old.run_id}")
            with self.timeline.span("cleanup"):
                released = release_run(
                    self.store, old.run_id, lambda led: self.backend.environment(led, None),
                    self.backend.provider, command="cleanup",
                    timeout=self.config.timeouts.destroy, clock=self.clock,
                    history_location=self.config.history_path)
            if released.busy:
                continue  # another cdd took it between our look and our lock
            steps = released.steps
            self.result.add(StepResult(
                Phase.CLEANUP, ENVIRONMENT, f"clear leftovers of {old.run_id}",
                Status.PASSED if released.ok else Status.ERROR,
                duration=sum(s.duration for s in steps),
                message="; ".join(s.message for s in steps),
            ))

    def up(self) -> None:
        """Create and provision every machine, in parallel where the provider allows: in
        one `vagrant up` where Vagrant builds them on threads, else one each."""
        machines = self.config.environment.machines
        self.display.phase(f"up: {', '.join(machines)} ({self.config.environment.provider})")
        parallel = self.config.environment.parallel
        together = parallel and len(machines) > 1 and self._vagrant.builds_together()
        workers = len(machines) if parallel and not together else 1
        with ThreadPoolExecutor(max_workers=workers + 1) as pool:
            # a Ruby start-up of its own: asked while the machines come up, not after
            asked = pool.submit(self._installation)
            if together:
                self._up_together(machines)
            else:
                list(pool.map(self._up_one, machines))
        installation = asked.result()
        self.result.vagrant_version = installation.version
        self._plugin_list = list(installation.plugins)
        if self.cancellation.cancelled:
            raise Interrupted(self.cancellation.signame)

    def _up_one(self, machine: str) -> None:
        """One `vagrant up` that also provisions (a separate `vagrant provision` would put one
        more Ruby start-up on the machine's critical path); the line where Vagrant starts
        the first provisioner splits it into the report's up and provision steps, each with
        its own timeout and log."""
        if self.cancellation.cancelled:
            return
        build = _Build(self, machine)
        try:
            self._vagrant.up(machine, timeout=self.config.timeouts.up, log=build.want.log,
                             on_line=build.want.on_line, provision=build.want.provision)
        except VagrantError as exc:
            build.failed(exc)
            return
        build.succeeded()

    def _up_together(self, machines: list[str]) -> None:
        """The same, all machines in one `vagrant up`: the same steps and logs per machine."""
        if self.cancellation.cancelled:
            return
        builds = [_Build(self, m) for m in machines]
        try:
            failed = self._vagrant.up_together([b.want for b in builds],
                                               timeout=self.config.timeouts.up)
        except VagrantError as exc:  # Vagrant did not run at all: every machine failed
            failed = {m: exc for m in machines}
        for build in builds:
            if build.want.name in failed:
                build.failed(failed[build.want.name])
            else:
                build.succeeded()

    def _ask_ssh_config(self, machine: str) -> None:
        """The machine answers SSH (Vagrant's "booted and ready", else its provisioning
        began); once all of them do, their ssh-config is asked, once (a `vagrant up` retried
        on a locked machine prints it all again), unless their own `vagrant up` writes it."""
        machines = self.config.environment.machines
        with self._ledger_lock:
            self._booted.add(machine)
            if self._ssh_config_answer is None and self._booted.issuperset(machines) \
                    and not self._vagrant.writes_ssh_config():
                self._ssh_config_answer = self._ssh_pool.submit(
                    self._vagrant.ssh_config, list(machines), timeout=SSH_OPEN_TIMEOUT)

    def connect(self) -> None:
        """One multiplexed SSH connection per machine that came up."""
        ready = [m for m in self.config.environment.machines
                 if self.ledger.machine_states.get(m) == "provisioned"]
        if not ready:
            return
        try:
            text = self._asked_ssh_config(ready)
        except VagrantError as exc:
            self.result.add(StepResult(Phase.CHECK, ENVIRONMENT, "ssh-config", Status.ERROR,
                                       message=str(exc), output=exc.output[-4000:]))
            return
        self._ssh_config = text
        self._shells = self.backend.shells(text, self.cancellation.build)
        shells = self._shells

        def open_one(machine: str) -> None:
            try:
                shells.open(machine, timeout=SSH_OPEN_TIMEOUT)
                self._open[machine] = shells.shells[machine]
            except SshError as exc:
                self.result.add(StepResult(Phase.CHECK, machine, "ssh", Status.ERROR,
                                           message=str(exc)))

        with ThreadPoolExecutor(max_workers=len(ready)) as pool:
            list(pool.map(open_one, ready))

    def _asked_ssh_config(self, machines: list[str]) -> str:
        """What the machines' `vagrant up` wrote of how to reach them, else what `vagrant
        ssh-config` said while they provisioned; asked now, for the machines that are ready,
        if it was never asked (one of them did not come up) or its answer failed."""
        try:
            written = self._vagrant.ssh_config_written(machines)
            if written:
                return written
            if self._ssh_config_answer is not None:
                return self._ssh_config_answer.result(timeout=SSH_OPEN_TIMEOUT)
        except (VagrantError, TimeoutError):
            pass  # asked again below, as if never asked
        finally:
            self._ssh_pool.shutdown(wait=False, cancel_futures=True)
        return self._vagrant.ssh_config(machines, timeout=SSH_OPEN_TIMEOUT)

    def check(self) -> None:
        if not self.config.checks or self._failed_before_checks():
            self._skip_checks()
            return
        self.display.phase(f"check: {plural(len(checks.plan(self.config)), 'check')}")
        self._record(LedgerPhase.CHECKING)
        addresses = self._shells.addresses if self._shells else {}
        with self.timeline.span("check"):
            for step in checks.run_checks(
                self.config, self._open, addresses,
                deadline=time.monotonic() + self.config.timeouts.check,
                on_step=self.display.step, cancelled=self.cancellation.event,
            ):
                self.result.add(step)
        if self.cancellation.cancelled:
            raise Interrupted(self.cancellation.signame)

    def inventory(self) -> None:
        """Boxes, packages and Vagrant's versions, for "what changed" when a later run fails
        (checks/packages.py): bounded in time, and never a failure of the run."""
        self.result.inventory = packages.take(
            self._open, self.config.environment.machines, self._vagrant.box,
            vagrant_version=self.result.vagrant_version, plugins=self._plugin_list,
            timeout=self.config.timeouts.inventory)
        try:
            history.open_history(self.config.history_path).record_inventory(
                self.ledger.run_id, self.result.inventory)
        except Exception as exc:  # history never decides a run: warn, and go on
            self.display.warn(f"run history not written: {exc}")

    def harvest(self) -> None:
        self._mask_signals()
        if self.result.interrupted_by:
            return  # seconds count now: destroy first
        if self._shells is None and not self._open:
            return
        self.display.phase("harvest: copying logs off the machines")
        try:
            with self.timeline.span("harvest"):
                steps = harvest.harvest(self.config, self._open, self.log_dir,
                                        timeout=self.config.timeouts.harvest)
        except Exception as exc:  # harvest must never block destroy
            steps = [StepResult(Phase.HARVEST, ENVIRONMENT, "harvest", Status.ERROR,
                                message=self._bug(exc))]
        for step in steps:
            self.display.step(step)
            self.result.add(step)
        self._close_shells()

    def conclude(self, fate: Fate) -> None:
        """Carry out what `decide` said. Logs come off the machines first, whatever the
        fate, except for an environment that stays up (its machines are still there to ask)."""
        if fate is Fate.STAY_UP:
            self._close_shells()
            self.result.kept = True
            self._record(LedgerPhase.UP)
            self._keep_ssh_config()
            return
        self.harvest()
        self._close_shells()
        if fate is Fate.HOLD:
            self._hold()
        elif fate is Fate.KEEP:
            self.result.kept = True
            self.display.warn(
                f"KEEPING the environment (--destroy {self.policy.value}): machines of run "
                f"{self.ledger.run_id} are still running and cost money until "
                f"`cdd destroy` removes them"
            )
            self._record(LedgerPhase.KEPT)
        else:
            self.destroy()

    def destroy(self) -> None:
        self.display.phase("destroy")
        self._record(LedgerPhase.DESTROYING)
        try:
            with self.timeline.span("destroy"):
                steps = destroy_run(
                    self.ledger, self.backend.environment(self.ledger, None),
                    self.backend.provider, timeout=self.config.timeouts.destroy,
                    log_dir=self.log_dir, on_step=self.display.step,
                )
        except Exception as exc:  # even then, report rather than crash
            steps = [StepResult(Phase.DESTROY, ENVIRONMENT, "destroy", Status.ERROR,
                                message=self._bug(exc))]
        self.result.steps.extend(steps)
        if all(s.ok for s in steps):
            self._released_at = self.clock()
            self.store.forget(self.ledger.run_id)
        else:
            self._record(LedgerPhase.DESTROY_FAILED)

    def report(self) -> None:
        self._mask_signals()
        self.result.finished_at = time.time()
        self.result.commit = self.result.commit or git.head(self.config.root)
        for reporter in self.reporters:
            try:
                reporter(self.result)
            except Exception as exc:  # issues and summaries inform; they never decide the run
                self.display.warn(f"reporting failed: {self._bug(exc)}")
        try:
            junit.write(self.result, self.config.report_dir / "junit.xml")
        except OSError as exc:
            self.display.warn(f"could not write the JUnit report: {exc}")

    # -- helpers -----------------------------------------------------------------------

    def _record_step(self, step: StepResult, wall: float) -> None:
        self.result.add(step)
        self.timeline.add(step.phase.value, step.machine, wall, step.status.value)
        self.display.step(step)

    def _failed_before_checks(self) -> bool:
        return any(not s.ok for s in self.result.steps
                   if s.phase in (Phase.PREFLIGHT, Phase.UP, Phase.PROVISION))

    def _skip_checks(self) -> None:
        if self.config.checks and self._failed_before_checks():
            for job in checks.plan(self.config):
                self.result.add(StepResult(Phase.CHECK, job.target, job.check.name,
                                           Status.SKIPPED, message="environment did not come up"))

    def _hold(self) -> None:
        self.ledger.hold_until = self.clock() + self.hold_on_failure
        self.result.kept = True
        self.result.hold_until = self.ledger.hold_until
        self.display.warn(
            f"HOLDING the failed environment of run {self.ledger.run_id} for debugging until "
            f"{format_time(self.ledger.hold_until)} ({format_duration(self.hold_on_failure)}): its "
            f"machines keep running until then. `cdd destroy --run-id {self.ledger.run_id}` "
            f"frees them sooner; after that, `cdd reap` destroys them"
        )
        self._record(LedgerPhase.HELD)

    def _begin_history(self) -> None:
        env = self.config.environment
        start = history.RunStart(
            self.ledger.run_id, env.name, env.provider, self.ledger.command,
            self.ledger.started_at,
            tuple(history.MachineSpec(m, env.resources_of(m).cpus,
                                      env.resources_of(m).memory_mb) for m in env.machines),
            host=self.ledger.host)
        if self.store.index_error:
            self.display.warn(f"run not in the host index ({self.store.index_error}): "
                              "`cdd reap` finds its machines by name only")
        try:
            self._history_event = history.open_history(self.config.history_path).begin(start)
        except Exception as exc:  # history never decides a run: warn, and go on
            self.display.warn(f"run history not written: {exc}")

    def _finish_history(self) -> None:
        if not self._history_event:
            return
        try:
            history.open_history(self.config.history_path).finish(
                self._history_event, finished_at=self.result.finished_at or self.clock(),
                outcome=history.outcome_of(self.result), spans=self.timeline.spans,
                released_at=self._released_at, released_by=self.ledger.command,
                hold_until=self.ledger.hold_until or None,
                commit=self.result.commit)
        except Exception as exc:  # the verdict is already decided; only the record is lost
            self.display.warn(f"run history not written: {exc}")

    def _bug(self, exc: Exception) -> str:
        """A caught bug: one line for the report, the traceback kept in the debug log."""
        scrub = Scrubber.from_env(os.environ, self.ledger.vagrant_env)
        line = scrub(f"{type(exc).__name__}: {exc}")
        path = self.log_dir / DEBUG_LOG
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(f"--- run {self.ledger.run_id} at {format_time(self.clock())}\n")
                log.write(scrub("".join(traceback.format_exception(exc))))
        except OSError:
            return line
        return f"{line} (traceback in {path})"

    def _mask_signals(self) -> None:
        """From here on a signal only marks the run interrupted; teardown must finish."""
        self.cancellation.shield()
        if self.cancellation.cancelled and not self.result.interrupted_by:
            self.result.interrupted_by = self.cancellation.signame
        if self.result.interrupted_by and not self._cancel_told:
            self._cancel_told = True
            self._tell_cancelled()

    def _tell_cancelled(self) -> None:
        """GitHub's runner SIGKILLs a cancelled step ten seconds after its SIGINT, maybe in
        the middle of destroy: the log and the report say "cancelled" before it starts (the
        job's always() step finishes the destroy from the ledger)."""
        self.display.warn(f"cancelled by {self.result.interrupted_by}: destroying the "
                          f"environment of run {self.ledger.run_id} now")
        try:
            junit.write(self.result, self.config.report_dir / "junit.xml")
        except OSError:
            pass  # the final report tries again, and says why if it cannot

    def _close_shells(self) -> None:
        self._ssh_pool.shutdown(wait=False, cancel_futures=True)
        if self._shells is not None:
            self._shells.close()
            self._shells = None
            self._open = {}

    def _fresh_reports(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.config.report_dir / "junit.xml").unlink(missing_ok=True)

    def _installation(self) -> Installation:
        try:
            return self._vagrant.installation(timeout=self.config.timeouts.inventory)
        except VagrantError:
            return Installation("", ())  # the inventory informs: a run never fails for it

    def _keep_ssh_config(self) -> None:
        if self._ssh_config and all(self.ledger.machine_states.get(m) == "provisioned"
                                    for m in self.ledger.machines):
            self.store.keep_ssh_config(self.ledger.run_id, self._ssh_config)

    def _record(self, phase: LedgerPhase) -> None:
        with self._ledger_lock:
            self.ledger.phase = phase
            self.store.write(self.ledger)

    def _note_box(self, machine: str) -> None:
        """The report says which box each run was built from: a new box is a likely culprit."""
        box = self._vagrant.box(machine)
        if box:
            with self._ledger_lock:
                boxes = set(filter(None, self.result.box.split(", ")))
                self.result.box = ", ".join(sorted(boxes | {box}))

    def _set_state(self, machine: str, state: str) -> None:
        with self._ledger_lock:
            self.ledger.machine_states[machine] = state
            self.store.write(self.ledger)


class _Build:
    """One machine's way through `vagrant up`, as the report tells it: an up step until its
    first provisioner starts, then a provision step, each timed from its own start."""

    def __init__(self, run: Lifecycle, machine: str) -> None:
        self.run = run
        self.started, self.wall = time.monotonic(), run.clock()
        self.provisioning: tuple[float, float] | None = None
        """When provisioning began (monotonic, wall clock): set once the machine is up."""
        logs = run.log_dir / machine
        self.want = MachineUp(
            machine, logs / "up.log", self._on_line,
            Provisioning(run.config.timeouts.provision, logs / "provision.log", self.came_up),
            finished=self.succeeded)
        self.told = False

    def came_up(self) -> None:
        if self.provisioning is not None:
            return  # its `vagrant up` was run again: it came up once
        run, machine = self.run, self.want.name
        self.provisioning = (time.monotonic(), run.clock())
        run._record_step(StepResult(Phase.UP, machine, "up", Status.PASSED,
                                    duration=self.provisioning[0] - self.started), self.wall)
        run._set_state(machine, "up")
        run._note_box(machine)
        run._ask_ssh_config(machine)

    def _on_line(self, text: str) -> None:
        self.run.display.line(self.want.name, text)
        if BOOTED in text:
            self.run._ask_ssh_config(self.want.name)

    def failed(self, exc: VagrantError) -> None:
        if self.told:
            return
        if self.run.cancellation.cancelled:
            return  # killed on purpose: not a failure of the environment
        self.told = True
        phase, (since, at) = (Phase.PROVISION, self.provisioning) if self.provisioning else \
            (Phase.UP, (self.started, self.wall))
        self.run._record_step(StepResult(phase, self.want.name, phase.value, Status.ERROR,
                                         duration=time.monotonic() - since, message=str(exc),
                                         output=exc.output[-20_000:]), at)

    def succeeded(self) -> None:
        """Told as soon as it is known: the machines built with it may still be building."""
        if self.told:
            return
        self.told = True
        if self.provisioning is None:
            self.came_up()  # a Vagrantfile without provisioners
        assert self.provisioning is not None
        since, at = self.provisioning
        self.run._record_step(StepResult(Phase.PROVISION, self.want.name, "provision",
                                         Status.PASSED, duration=time.monotonic() - since), at)
        self.run._set_state(self.want.name, "provisioned")

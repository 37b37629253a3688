"""The run, top to bottom: the only place that knows the phase order and the destroy rule.

    preflight (an environment that needs the internet, on a runner without it, stops
    here: reported, nothing built) -> lock and record the run (write-ahead, and in the
    run history) -> clear leftovers of earlier runs -> up -> provision -> connect -> checks
    finally: harvest logs -> destroy (or hold, or keep) -> verify nothing is left
             -> write the report -> close the run's record in the history

The `finally` runs whatever happened before it: a failed check, a failed provisioner, a
timeout, any exception, SIGINT or SIGTERM (turned into Interrupted by signals.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from cdd_ci import checks, harvest, history, hostcheck, junit, network, procs, subnets
from cdd_ci.config import Config, DestroyPolicy
from cdd_ci.durations import format_duration, format_time
from cdd_ci.inventory import HostRun
from cdd_ci.ledger import Ledger, LedgerStore, claim_directory, new_run_id
from cdd_ci.models import ENVIRONMENT, Phase, RunResult, Status, StepResult
from cdd_ci.reaper import DEFAULT_OLDER_THAN, judge
from cdd_ci.release import release_run
from cdd_ci.signals import Cancellation, Interrupted
from cdd_ci.ssh import Shell, SshError, SshPool
from cdd_ci.teardown import Provider, RealProvider, destroy_run
from cdd_ci.vagrant import Environment, VagrantCli, VagrantError

SSH_OPEN_TIMEOUT = 60.0
"""`vagrant ssh-config`'s output, kept in the run's directory while `cdd up` keeps it: the
addresses do not change while the machines run, and asking Vagrant again costs `cdd check`
a Ruby start-up (about 1.5 s, most of its time). Dropped when a connection fails."""
SECRETS = ("GITHUB_TOKEN", "GH_TOKEN", "CDD_GITHUB_TOKEN")
"""Vagrant and the guests never need these; keep them out of every child's environment."""


class _Stop(Exception):
    """A phase already recorded why the run cannot go on: straight to the teardown."""


class Display(Protocol):
    """Where progress goes: a live terminal view, or plain lines in a CI log."""

    def phase(self, text: str) -> None: ...

    def line(self, machine: str, text: str) -> None: ...

    def step(self, step: StepResult) -> None: ...

    def warn(self, text: str) -> None: ...


class Shells(Protocol):
    @property
    def shells(self) -> Mapping[str, Shell]: ...

    @property
    def addresses(self) -> Mapping[str, str]:
        """Machine name -> an address the runner itself can reach."""

    def open(self, machine: str, *, timeout: float) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """The external systems a run talks to: real ones, or the fakes in tests."""

    environment: Callable[[Ledger, procs.Running | None], Environment]
    shells: Callable[[str, procs.Running | None], Shells]
    provider: Provider
    network: Callable[[str, float], str | None] = network.probe
    """Target, timeout -> None when the runner reaches it, else why not."""
    host: Callable[[str], str | None] = hostcheck.problem
    """Provider -> None, or what on this host would make its machines fail (hostcheck.py)."""


def real_backend() -> Backend:
    def environment(ledger: Ledger, registry: procs.Running | None) -> Environment:
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        env.update(ledger.vagrant_env)
        return VagrantCli(Path(ledger.directory), ledger.provider, env, registry)

    return Backend(environment=environment, shells=SshPool, provider=RealProvider())


def new_ledger(
    config: Config,
    command: str,
    run_id: str | None = None,
    subnets_in_use: Callable[[], list[str]] = subnets.in_use_on_host,
) -> Ledger:
    run_id = run_id or new_run_id()
    store = LedgerStore(config.state_dir)
    own = {} if subnets.VARIABLE in config.environment.env else {
        subnets.VARIABLE: subnets.allocate(run_id, config.environment.provider, subnets_in_use())
    }
    return Ledger(
        run_id=run_id,
        environment=config.environment.name,
        directory=str(config.vagrant_dir),
        provider=config.environment.provider,
        machines=list(config.environment.machines),
        vagrant_env={
            "CDD_RUN_ID": run_id,
            "VAGRANT_DEFAULT_PROVIDER": config.environment.provider,
            # one Vagrant state directory per run: two runs never share `.vagrant/`
            "VAGRANT_DOTFILE_PATH": str(store.run_dir(run_id) / "vagrant"),
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
            **own,
            **config.environment.env,
        },
        started_at=time.time(),
        command=command,
        config=str(config.root),
        history=str(config.history_path),
    )


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
        """Called after teardown, before the JUnit report is written (see reporting.py)."""
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
        self.hold_on_failure = hold_on_failure
        """Seconds to keep a failed environment for debugging (0: destroy as usual)."""
        self.clock = clock
        self.timeline = history.Timeline(clock)
        self._history_event = 0
        self._released_at: float | None = None

    # -- the sequence ------------------------------------------------------------------

    def run(self) -> RunResult:
        """Build, check, always tear down (per policy), always report."""
        if not self.preflight():
            return self.result
        # locked before it is recorded: no reaper may ever find the run and think it dead
        lock = self.store.acquire(self.ledger.run_id)
        self._record("created")
        self._begin_history()
        try:
            self._attempt(self._fresh_reports, self.claim_directory, self.clear_leftovers,
                          self.up, self.connect, self.check)
        finally:
            self._mask_signals()
            self.harvest()
            self.teardown()
            self._release_directory()
            self.report()
            self._finish_history()
            lock.close()
        return self.result

    def build(self) -> RunResult:
        """`cdd up`: the same build and checks, but the environment stays for the day.

        A failed build is still destroyed (there is nothing useful to keep up), unless the
        policy says otherwise. Once built, the lock is let go: from then on the reaper judges
        the environment by its age, which is what catches a forgotten `cdd down`.
        """
        if not self.preflight():
            return self.result
        lock = self.store.acquire(self.ledger.run_id)
        self._record("created")
        self._begin_history()
        try:
            self._attempt(self._fresh_reports, self.claim_directory,
                          self.up, self.connect, self.check)
        finally:
            self._mask_signals()
            self._release_directory()
            if not self.result.passed and self.policy is DestroyPolicy.ALWAYS:
                self.harvest()
                self.teardown()
            else:
                self._close_shells()
                self.result.kept = True
                self._record("up")
                self._keep_ssh_config()
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
                                       Status.ERROR, message=f"{type(exc).__name__}: {exc}"))

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
        """Take turns with other runs of the same Vagrantfile directory (see ledger.py)."""
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
                    timeout=self.config.timeouts.destroy, clock=self.clock)
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
        """Create and provision every machine, in parallel where the provider allows."""
        machines = self.config.environment.machines
        self.display.phase(f"up: {', '.join(machines)} ({self.config.environment.provider})")
        workers = len(machines) if self.config.environment.parallel else 1
        with ThreadPoolExecutor(max_workers=workers + 1) as pool:
            # `vagrant --version` is a Ruby start-up of its own: not on the critical path
            versions = pool.submit(self._versions)
            list(pool.map(self._up_one, machines))
        self.result.properties.update(versions.result())
        if self.cancellation.cancelled:
            raise Interrupted(self.cancellation.signame)

    def _up_one(self, machine: str) -> None:
        log = self.log_dir / machine / "up.log"
        if not self._step(Phase.UP, machine, "up", lambda: self._vagrant.up(
                machine, timeout=self.config.timeouts.up, log=log,
                on_line=lambda text: self.display.line(machine, text))):
            return
        self._set_state(machine, "up")
        self._note_box(machine)
        log = self.log_dir / machine / "provision.log"
        if self._step(Phase.PROVISION, machine, "provision", lambda: self._vagrant.provision(
                machine, timeout=self.config.timeouts.provision, log=log,
                on_line=lambda text: self.display.line(machine, text))):
            self._set_state(machine, "provisioned")

    def connect(self) -> None:
        """One multiplexed SSH connection per machine that came up."""
        ready = [m for m in self.config.environment.machines
                 if self.ledger.machine_states.get(m) == "provisioned"]
        if not ready:
            return
        try:
            text = self._vagrant.ssh_config(ready, timeout=SSH_OPEN_TIMEOUT)
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

    def check(self) -> None:
        if not self.config.checks or self._failed_before_checks():
            self._skip_checks()
            return
        self.display.phase(f"check: {len(checks.plan(self.config))} checks")
        self._record("checking")
        addresses = self._shells.addresses if self._shells else {}
        with self.timeline.span("check"):
            for step in checks.run_checks(
                self.config, self._open, addresses,
                deadline=time.monotonic() + self.config.timeouts.check,
                on_result=self.display.step,
            ):
                self.result.add(step)
        if self.cancellation.cancelled:
            raise Interrupted(self.cancellation.signame)

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
                                message=f"{type(exc).__name__}: {exc}")]
        for step in steps:
            self.display.step(step)
            self.result.add(step)
        self._close_shells()

    def teardown(self) -> None:
        self._close_shells()
        if self._holding():
            self._hold()
            return
        if self._keep():
            self.result.kept = True
            self.display.warn(
                f"KEEPING the environment (--destroy {self.policy.value}): machines of run "
                f"{self.ledger.run_id} are still running and cost money until "
                f"`cdd destroy` removes them"
            )
            self._record("kept")
            return
        self.display.phase("destroy")
        self._record("destroying")
        try:
            with self.timeline.span("destroy"):
                steps = destroy_run(
                    self.ledger, self.backend.environment(self.ledger, None),
                    self.backend.provider, timeout=self.config.timeouts.destroy,
                    log_dir=self.log_dir, on_step=self.display.step,
                )
        except Exception as exc:  # even then, report rather than crash
            steps = [StepResult(Phase.DESTROY, ENVIRONMENT, "destroy", Status.ERROR,
                                message=f"{type(exc).__name__}: {exc}")]
        self.result.steps.extend(steps)
        if all(s.ok for s in steps):
            self._released_at = self.clock()
            self.store.forget(self.ledger.run_id)
        else:
            self._record("destroy-failed")

    def report(self) -> None:
        self._mask_signals()
        self.result.finished_at = time.time()
        self.result.properties.setdefault("commit", _commit(self.config.root))
        for reporter in self.reporters:
            try:
                reporter(self.result)
            except Exception as exc:  # issues and summaries inform; they never decide the run
                self.display.warn(f"reporting failed: {type(exc).__name__}: {exc}")
        try:
            junit.write(self.result, self.config.report_dir / "junit.xml")
        except OSError as exc:
            self.display.warn(f"could not write the JUnit report: {exc}")

    # -- helpers -----------------------------------------------------------------------

    def _step(self, phase: Phase, machine: str, name: str, action: Callable[[], None]) -> bool:
        if self.cancellation.cancelled:
            return False
        started = time.monotonic()
        wall = self.clock()
        try:
            action()
            step = StepResult(phase, machine, name, Status.PASSED,
                              duration=time.monotonic() - started)
        except VagrantError as exc:
            if self.cancellation.cancelled:
                return False  # killed on purpose: not a failure of the environment
            step = StepResult(phase, machine, name, Status.ERROR,
                              duration=time.monotonic() - started, message=str(exc),
                              output=exc.output[-20_000:])
        self.result.add(step)
        self.timeline.add(phase.value, machine, wall, step.status.value)
        self.display.step(step)
        return step.ok

    def _failed_before_checks(self) -> bool:
        return any(not s.ok for s in self.result.steps
                   if s.phase in (Phase.PREFLIGHT, Phase.UP, Phase.PROVISION))

    def _skip_checks(self) -> None:
        if self.config.checks and self._failed_before_checks():
            for job in checks.plan(self.config):
                self.result.add(StepResult(Phase.CHECK, job.target, job.check.name,
                                           Status.SKIPPED, message="environment did not come up"))

    def _keep(self) -> bool:
        if self.result.interrupted_by:
            return self.policy is DestroyPolicy.NEVER
        if self.policy is DestroyPolicy.NEVER:
            return True
        return self.policy is DestroyPolicy.PASSING and not self.result.passed

    def _holding(self) -> bool:
        """--hold-on-failure: a failed run (not an interrupted one) is kept, for a while."""
        return (self.hold_on_failure > 0 and not self.result.passed
                and not self.result.interrupted_by and self.policy is not DestroyPolicy.NEVER)

    def _hold(self) -> None:
        self.ledger.hold_until = self.clock() + self.hold_on_failure
        self.result.kept = True
        self.result.properties["hold_until"] = format_time(self.ledger.hold_until)
        self.display.warn(
            f"HOLDING the failed environment of run {self.ledger.run_id} for debugging until "
            f"{format_time(self.ledger.hold_until)} ({format_duration(self.hold_on_failure)}): its "
            f"machines keep running until then. `cdd destroy --run-id {self.ledger.run_id}` "
            f"frees them sooner; after that, `cdd reap` destroys them"
        )
        self._record("held")

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
            self._history_event = history.History(self.config.history_path).begin(start)
        except Exception as exc:  # history never decides a run: warn, and go on
            self.display.warn(f"run history not written: {exc}")

    def _finish_history(self) -> None:
        if not self._history_event:
            return
        try:
            history.History(self.config.history_path).finish(
                self._history_event, finished_at=self.result.finished_at or self.clock(),
                outcome=history.outcome_of(self.result), spans=self.timeline.spans,
                released_at=self._released_at, released_by=self.ledger.command,
                hold_until=self.ledger.hold_until or None,
                commit=self.result.properties.get("commit", ""))
        except Exception as exc:  # the verdict is already decided; only the record is lost
            self.display.warn(f"run history not written: {exc}")

    def _mask_signals(self) -> None:
        """From here on a signal only marks the run interrupted; teardown must finish."""
        self.cancellation.shield()
        if self.cancellation.cancelled and not self.result.interrupted_by:
            self.result.interrupted_by = self.cancellation.signame

    def _close_shells(self) -> None:
        if self._shells is not None:
            self._shells.close()
            self._shells = None
            self._open = {}

    def _fresh_reports(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.config.report_dir / "junit.xml").unlink(missing_ok=True)

    def _versions(self) -> dict[str, str]:
        try:
            return self._vagrant.versions(timeout=30)
        except VagrantError:
            return {}

    def _keep_ssh_config(self) -> None:
        if self._ssh_config and all(self.ledger.machine_states.get(m) == "provisioned"
                                    for m in self.ledger.machines):
            self.store.keep_ssh_config(self.ledger.run_id, self._ssh_config)

    def _record(self, phase: str) -> None:
        with self._ledger_lock:
            self.ledger.phase = phase
            self.store.write(self.ledger)

    def _note_box(self, machine: str) -> None:
        """The report says which box each run was built from: a new box is a likely culprit."""
        box = self._vagrant.box(machine)
        if box:
            with self._ledger_lock:
                boxes = set(filter(None, self.result.properties.get("box", "").split(", ")))
                self.result.properties["box"] = ", ".join(sorted(boxes | {box}))

    def _set_state(self, machine: str, state: str) -> None:
        with self._ledger_lock:
            self.ledger.machine_states[machine] = state
            self.store.write(self.ledger)


def _commit(root: Path) -> str:
    sha = os.environ.get("GITHUB_SHA", "")
    if sha:
        return sha
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""

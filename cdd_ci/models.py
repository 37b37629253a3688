"""Results that cross module boundaries: what ran, how it went, and whose fault it was."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    """How one step ended.

    FAILED means the product under test failed (a JUnit ``<failure>``); ERROR means the
    infrastructure failed (a JUnit ``<error>``): the two are kept apart everywhere because
    they are fixed by different people.
    """

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


class Phase(enum.Enum):
    """Lifecycle phases, in the order a run goes through them."""

    PREFLIGHT = "preflight"
    """Can this runner build the environment at all (say, does it reach the internet)?"""
    CLEANUP = "cleanup"
    UP = "up"
    PROVISION = "provision"
    CHECK = "check"
    HARVEST = "harvest"
    DESTROY = "destroy"
    VERIFY = "destroy-verified"
    REPORT = "report"
    INTERNAL = "internal"
    """A bug in cdd itself: reported as an infrastructure error, never silently."""


class ExitCode(enum.IntEnum):
    """Documented exit codes, by blame. When several apply, the primary (first) cause wins."""

    OK = 0
    CHECKS_FAILED = 1
    USAGE = 2
    INFRASTRUCTURE = 3
    TEARDOWN = 4
    INTERRUPTED_SIGINT = 130
    INTERRUPTED_SIGTERM = 143


@dataclass(frozen=True)
class Outcome:
    """The words for one exit code, wherever a run's end is told."""

    name: str
    """The job's `outcome` output and the run history's outcome column."""
    headline: str
    """The job summary's verdict."""
    meaning: str
    """What it means for whoever reads the summary."""
    said: str
    """The last line `cdd run` prints."""


OUTCOMES: dict[ExitCode, Outcome] = {
    ExitCode.OK: Outcome("passed", "passed", "built from scratch, every check passed, destroyed",
                         "passed"),
    ExitCode.CHECKS_FAILED: Outcome(
        "checks-failed", "checks failed",
        "the environment came up but the product failed a check", "checks failed"),
    ExitCode.USAGE: Outcome("usage-error", "bad configuration", "bad configuration or usage",
                            "bad configuration or usage"),
    ExitCode.INFRASTRUCTURE: Outcome(
        "infrastructure-error", "infrastructure error",
        "Vagrant, the provider, SSH or a timeout failed before the checks could decide",
        "infrastructure failed"),
    ExitCode.TEARDOWN: Outcome(
        "teardown-failed", "teardown failed",
        "machines may still be running; `cdd destroy` removes them",
        "teardown failed: machines may be left, run `cdd destroy`"),
    ExitCode.INTERRUPTED_SIGINT: Outcome(
        "interrupted", "cancelled",
        "cancelled by SIGINT (a cancelled job, a step's timeout, or ^C)",
        "cancelled by SIGINT, after destroying"),
    ExitCode.INTERRUPTED_SIGTERM: Outcome(
        "interrupted", "cancelled",
        "cancelled by SIGTERM (a cancelled or timed-out job, or `cdd destroy`)",
        "cancelled by SIGTERM, after destroying"),
}
"""The one exit-code table: the summary, the history and the CLI all read it."""


ENVIRONMENT = "environment"
"""Pseudo machine name for steps that concern the whole environment (destroy, verify)."""


@dataclass(frozen=True)
class CommandResult:
    """One command on one machine (or on the host)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float = 0.0


@dataclass
class StepResult:
    """One testcase in the report: a lifecycle phase on one machine, or one check."""

    phase: Phase
    machine: str
    name: str
    status: Status
    duration: float = 0.0
    message: str = ""
    output: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASSED, Status.SKIPPED)


@dataclass(frozen=True)
class Package:
    """An installed package (or a Vagrant plugin) and its version."""

    name: str
    version: str


@dataclass(frozen=True)
class MachineInventory:
    """What one machine was built from and what ended up installed on it."""

    machine: str
    box: str = ""
    box_version: str = ""
    manager: str = ""
    """`dpkg` or `rpm`; "" when the packages could not be listed."""
    packages: tuple[Package, ...] = ()
    problem: str = ""
    """Why the packages are not known (no shell, a timeout, no package manager), or ""."""


@dataclass(frozen=True)
class Inventory:
    """A run's dependencies besides the repository: per machine, and the host's Vagrant."""

    machines: tuple[MachineInventory, ...] = ()
    vagrant: str = ""
    plugins: tuple[Package, ...] = ()
    commit: str = ""


@dataclass
class RunResult:
    """Everything a run produced; the report, the summary and the issues are drawn from it."""

    run_id: str
    environment: str
    provider: str
    machines: list[str]
    started_at: float
    finished_at: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    commit: str = ""
    """The commit the environment was built from ("" outside a repository)."""
    box: str = ""
    """`name version` of each box the machines were made from, as Vagrant recorded it."""
    vagrant_version: str = ""
    hold_until: float = 0.0
    """When a held environment (--hold-on-failure) is due to be reaped; 0: not held."""
    properties: dict[str, str] = field(default_factory=dict)
    """Any other properties of a report read back from JUnit (written by another version)."""
    interrupted_by: str = ""
    kept: bool = False
    inventory: Inventory | None = None
    """Recorded after provisioning and checks; None before, or when nothing came up."""

    def add(self, step: StepResult) -> StepResult:
        self.steps.append(step)
        return step

    def exit_code(self) -> ExitCode:
        """The primary cause of a non-passing run, mapped to its documented exit code."""
        if self.interrupted_by == "SIGINT":
            return ExitCode.INTERRUPTED_SIGINT
        if self.interrupted_by == "SIGTERM":
            return ExitCode.INTERRUPTED_SIGTERM
        # the earliest phase is the primary cause; within a phase, a broken machine
        # explains a failed check better than the other way round
        order = list(Phase)
        causes = sorted(
            (order.index(s.phase), s.status is not Status.ERROR)
            for s in self.steps
            if not s.ok and s.phase not in (Phase.DESTROY, Phase.VERIFY, Phase.REPORT)
        )
        if causes:
            return ExitCode.INFRASTRUCTURE if not causes[0][1] else ExitCode.CHECKS_FAILED
        if any(not s.ok for s in self.steps if s.phase in (Phase.DESTROY, Phase.VERIFY)):
            return ExitCode.TEARDOWN
        return ExitCode.OK

    @property
    def passed(self) -> bool:
        return self.exit_code() is ExitCode.OK

    @property
    def failures(self) -> list[StepResult]:
        return [s for s in self.steps if not s.ok]

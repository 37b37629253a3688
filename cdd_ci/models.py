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
    properties: dict[str, str] = field(default_factory=dict)
    interrupted_by: str = ""
    kept: bool = False

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

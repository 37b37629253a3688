"""The end-of-run summary: in the GitHub Actions job summary, or on the terminal.

Under GitHub Actions (`GITHUB_ACTIONS=true`) a run appends a Markdown summary to
`$GITHUB_STEP_SUMMARY`, annotates each failure with an `::error` command (and a kept
environment with `::warning`), and sets step outputs in `$GITHUB_OUTPUT`:

- `outcome`: passed, checks-failed, usage-error, infrastructure-error, teardown-failed or
  interrupted;
- `exit-code`: the documented exit code of `cdd run`;
- `junit`: the path of the JUnit report;
- `issues`: the numbers of the issues opened or updated, as a JSON list (`fromJSON` reads it).

Elsewhere the same summary is printed to the terminal. The only environment variables read
are those three and `GITHUB_ACTIONS`; their values are never printed. Values of variables
whose names look secret are masked in everything written, because a failing check's message
can quote a command line that carried one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console, Group, RenderableType
from rich.text import Text

from cdd_ci.durations import format_elapsed as duration
from cdd_ci.models import ENVIRONMENT, OUTCOMES, ExitCode, Phase, RunResult, Status, StepResult
from cdd_ci.report import tables, workflow_commands
from cdd_ci.report.tables import show
from cdd_ci.templating import render
from cdd_ci.text import Scrubber, scrub_run
from cdd_ci.words import plural

TEMPLATE = "summary.md.j2"
MAX_FAILURES = 20
"""Failures listed in the summary; the JUnit report has all of them."""
MAX_ANNOTATIONS = 10
"""GitHub shows at most 10 error annotations per step; the rest would vanish silently."""
REASON_CHARS = 200


_ICONS = {Status.PASSED: "✅", Status.FAILED: "❌", Status.ERROR: "💥", Status.SKIPPED: "⏭️"}
_LABELS = {Phase.VERIFY: "verify"}


class IssueLink(NamedTuple):
    """An issue the run opened or updated; a plain (number, url, action) tuple works too."""

    number: int
    url: str
    action: str
    """What was done to it: opened, updated, reopened, closed."""


@dataclass(frozen=True)
class Failure:
    icon: str
    name: str
    machine: str
    what: str
    reason: str


def environment_seconds(result: RunResult) -> float:
    """Wall time the machines existed: from `up` to the end of destroy.

    That is the run's span less the cleanup of leftovers before it and the report after it;
    a run that never reached `up` used no machine time. A run not yet stamped with its end
    falls back to the sum of its steps.
    """
    if not any(s.phase is Phase.UP for s in result.steps):
        return 0.0
    span = result.finished_at - result.started_at
    if span <= 0:
        span = sum(s.duration for s in result.steps)
    outside = sum(s.duration for s in result.steps if s.phase in (Phase.CLEANUP, Phase.REPORT))
    return max(0.0, span - outside)


def reason(step: StepResult) -> str:
    """One line saying why a step failed: its message's first line, else its output's last."""
    lines = [ln.strip() for ln in step.message.splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if not text:
        out = [ln.strip() for ln in step.output.splitlines() if ln.strip()]
        text = out[-1] if out else step.status.value
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def render_summary(
    result: RunResult, *, junit_path: Path, issues: Sequence[IssueLink | tuple[int, str, str]] = ()
) -> str:
    """The summary as Markdown, exactly as appended to the job summary."""
    code = result.exit_code()
    verdict, meaning = OUTCOMES[code].headline, OUTCOMES[code].meaning
    phases = [p for p in Phase if any(s.phase is p for s in result.steps)]
    seconds = environment_seconds(result)
    failures = [s for s in result.steps if s.status in (Status.FAILED, Status.ERROR)]
    return render(
        TEMPLATE,
        icon="✅" if code is ExitCode.OK else "❌",
        environment=result.environment,
        verdict=verdict,
        exit_code=int(code),
        meaning=meaning,
        interrupted_by=result.interrupted_by,
        kept=result.kept,
        phases=[_LABELS.get(p, p.value) for p in phases],
        rows=[(m, [_cell(result, m, p) for p in phases]) for m in _machines(result)],
        failures=[_failure(s) for s in failures[:MAX_FAILURES]],
        more_failures=max(0, len(failures) - MAX_FAILURES),
        issues=[_issue(IssueLink(*i)) for i in issues],
        run_id=result.run_id,
        provider=result.provider,
        machine_count=len(result.machines),
        wall=duration(seconds),
        environment_hours=f"{len(result.machines) * seconds / 3600:.2f}",
        junit_path=str(junit_path),
    )


def render_console(
    result: RunResult,
    *,
    junit_path: Path,
    issues: Sequence[IssueLink | tuple[int, str, str]] = (),
    mask: Callable[[str], str] = str,
    terminal: bool = True,
) -> RenderableType:
    """The summary's facts for a terminal or a CI log, every text passed through `mask`.

    One row per machine and phase, not the Markdown's column per phase: eight phase
    columns cannot fit 80 terminal columns without cutting `passed` to `passe…`.
    """
    code = result.exit_code()
    verdict, meaning = OUTCOMES[code].headline, OUTCOMES[code].meaning
    parts: list[RenderableType] = [
        Text(mask(f"{'✅' if code is ExitCode.OK else '❌'} {result.environment}: {verdict}"),
             style="bold"),
        Text(f"Exit code {int(code)}: {meaning}."),
    ]
    if result.interrupted_by:
        parts.append(Text(f"The run was stopped by {result.interrupted_by}; teardown ran "
                          "before it exited."))
    if result.kept:
        parts.append(Text("The environment was kept running for debugging. Remove it with "
                          "`cdd destroy` when done.", style="yellow"))
    phases = [p for p in Phase if any(s.phase is p for s in result.steps)]
    rows: list[list[tables.Cell]] = []
    for machine in _machines(result):
        for phase in phases:
            tally = _tally(result, machine, phase)
            if tally is not None:
                rows.append([mask(machine), _LABELS.get(phase, phase.value),
                             f"{_ICONS[tally.status]} {tally.word}",
                             duration(tally.seconds)])
    if rows:
        columns = (tables.Column("machine"), tables.Column("phase", whole=True),
                   tables.Column("result", whole=True),
                   tables.Column("time", right=True, whole=True))
        parts += [Text(), tables.render(tables.Table(columns, rows), terminal=terminal)]
    failures = [s for s in result.steps if s.status in (Status.FAILED, Status.ERROR)]
    if failures:
        parts += [Text(), Text("What failed", style="bold")]
        for f in map(_failure, failures[:MAX_FAILURES]):
            parts.append(Text(mask(f"- {f.icon} {f.name} on {f.machine} ({f.what}): "
                                   f"{f.reason}")))
        if len(failures) > MAX_FAILURES:
            parts.append(Text(f"- and {len(failures) - MAX_FAILURES} more in the JUnit "
                              "report"))
    if issues:
        parts += [Text(), Text("Issues", style="bold")]
        parts += [Text(mask(f"- #{link.number} {link.action}: {link.url}"))
                  for link in map(lambda i: IssueLink(*i), issues)]
    seconds = environment_seconds(result)
    machines = len(result.machines)
    parts += [Text(), Text(mask(
        f"Run {result.run_id} · provider {result.provider} · {machines} "
        f"machine{'' if machines == 1 else 's'} × {duration(seconds)} = "  # noqa: RUF001
        f"{machines * seconds / 3600:.2f} environment-hours · JUnit report: {junit_path}"))]
    return Group(*parts)


def annotation_commands(result: RunResult) -> list[str]:
    """Workflow commands: `::error` per failure (capped), `::warning` for a kept environment."""
    lines: list[str] = []
    failures = [s for s in result.steps if s.status in (Status.FAILED, Status.ERROR)]
    for step in failures[:MAX_ANNOTATIONS]:
        title = f"{_blame(step)}: {step.name} on {step.machine}"
        lines.append(
            workflow_commands.command("error", step.message or reason(step), {"title": title})
        )
    if len(failures) > MAX_ANNOTATIONS:
        more = len(failures) - MAX_ANNOTATIONS
        lines.append(
            workflow_commands.command(
                "error", f"{plural(more, 'more failure')}: see the job summary")
        )
    if result.kept:
        lines.append(
            workflow_commands.command(
                "warning",
                f"Environment {result.environment} (run {result.run_id}) was kept running;"
                " remove it with `cdd destroy` when done.",
                {"title": "Environment kept"},
            )
        )
    return lines


def outputs(
    result: RunResult, *, junit_path: Path, issues: Sequence[IssueLink | tuple[int, str, str]] = ()
) -> dict[str, str]:
    """The step outputs, by name."""
    code = result.exit_code()
    return {
        "outcome": OUTCOMES[code].name,
        "exit-code": str(int(code)),
        "junit": str(junit_path),
        "issues": json.dumps([IssueLink(*i).number for i in issues]),
    }


def masker(env: Mapping[str, str]) -> Callable[[str], str]:
    """Replace the values of secret-looking environment variables (and any GitHub token) with
    `***`: the one scrubber of everything cdd writes."""
    return Scrubber.from_env(env)


def publish_summary(
    result: RunResult,
    *,
    junit_path: Path,
    issues: Sequence[IssueLink | tuple[int, str, str]] = (),
    env: Mapping[str, str] = os.environ,
    console: Console | None = None,
) -> None:
    """Tell people how the run went, wherever they are looking.

    Best effort: a summary that cannot be written is reported on the console and does not
    change the run's exit code, which the caller has already decided.
    """
    console = console or Console()
    mask = masker(env)
    # before the summary cuts a reason to 200 characters: half a token is not found after
    result = scrub_run(result, Scrubber.from_env(env))
    markdown = mask(render_summary(result, junit_path=junit_path, issues=issues))
    in_actions = env.get("GITHUB_ACTIONS") == "true"
    if in_actions:
        for line in annotation_commands(result):
            console.file.write(mask(line) + "\n")
        console.file.flush()
    else:
        show(console, render_console(result, junit_path=junit_path, issues=issues, mask=mask,
                                     terminal=console.is_terminal))
    targets: list[tuple[str, str]] = []
    if env.get("GITHUB_STEP_SUMMARY"):
        targets.append((env["GITHUB_STEP_SUMMARY"], markdown + "\n"))
    if env.get("GITHUB_OUTPUT"):
        entries = outputs(result, junit_path=junit_path, issues=issues)
        text = "".join(workflow_commands.format_output(k, mask(v)) for k, v in entries.items())
        targets.append((env["GITHUB_OUTPUT"], text))
    for path, text in targets:
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            # the variable's value is a runner path, not a secret, but it is not ours to echo
            console.print(f"cdd: could not write the job summary or outputs: {exc.strerror}")


def _machines(result: RunResult) -> list[str]:
    """The configured machines in order, then the host and the environment if they ran steps."""
    names = list(result.machines)
    for step in result.steps:
        if step.machine not in names:
            names.append(step.machine)
    if ENVIRONMENT in names:
        names.append(names.pop(names.index(ENVIRONMENT)))
    return names


CONCURRENT = frozenset({Phase.CHECK})
"""Phases whose steps on one machine all start with the phase and run at once (checks/
smoke.py): each step's time already counts from the phase's start, so the machine's time in
it is the longest step's; their sum would count the same seconds once per check."""


class PhaseTally(NamedTuple):
    """How one machine's steps of one phase went: the worst status, in words, and how long."""

    status: Status
    word: str
    seconds: float


def _tally(result: RunResult, machine: str, phase: Phase) -> PhaseTally | None:
    steps = [s for s in result.steps if s.machine == machine and s.phase is phase]
    if not steps:
        return None
    statuses = {s.status for s in steps}
    worst = next(
        s for s in (Status.ERROR, Status.FAILED, Status.PASSED, Status.SKIPPED) if s in statuses
    )
    word = worst.value
    if len(steps) > 1 and worst is not Status.SKIPPED:
        word = f"{sum(1 for s in steps if s.status is Status.PASSED)}/{len(steps)} passed"
    seconds = [s.duration for s in steps]
    return PhaseTally(worst, word, max(seconds) if phase in CONCURRENT else sum(seconds))


def _cell(result: RunResult, machine: str, phase: Phase) -> str:
    tally = _tally(result, machine, phase)
    if tally is None:
        return "—"
    return f"{_ICONS[tally.status]} {tally.word} · {duration(tally.seconds)}"


def _blame(step: StepResult) -> str:
    if step.phase in (Phase.DESTROY, Phase.VERIFY):
        return "Teardown failed"
    if step.status is Status.FAILED:
        return "Check failed"
    return "Infrastructure error"


def _failure(step: StepResult) -> Failure:
    blame = _blame(step).lower()
    what = (
        blame
        if step.phase is Phase.CHECK and step.status is Status.FAILED
        else (f"{_LABELS.get(step.phase, step.phase.value)}: {blame}")
    )
    if step.attempts > 1:
        what += f" after {step.attempts} attempts"
    return Failure(_ICONS[step.status], step.name, step.machine, what, reason(step))


def _issue(link: IssueLink) -> dict[str, Any]:
    # a link destination cannot be backslash-escaped; percent-encode what would end it
    url = link.url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return {"number": link.number, "url": url, "action": link.action}

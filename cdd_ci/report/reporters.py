"""What happens to a run's result once its machines are gone: GitHub issues, the job summary.

Each reporter is called by the lifecycle after destroy and before the JUnit report is
written, so its own outcome (say, GitHub being down) is in the report as a testcase of its
own. Reporters never decide the run's verdict and never raise into the lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cdd_ci.github.context import GitHubContext
from cdd_ci.models import RunResult

if TYPE_CHECKING:
    from cdd_ci.history.changes import Changes

Reporter = Callable[[RunResult], None]


class Reporting:
    """The reporters of one run, sharing what they learn (issue links for the summary)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.links: list[tuple[int, str, str]] = []

    def issues(self, github: GitHubContext, history: str | Path | None = None,
               checkout: Path | None = None) -> Reporter:
        """`history` and `checkout` (the run's history file and git checkout): for what
        changed since the last green run, named in a failure's issue."""
        def report(result: RunResult) -> None:
            from cdd_ci.github.issues import report_issues

            changes = None
            if history is not None and not result.passed:
                changes = changes_since_green(result, github, history, checkout or Path("."))
            outcome = report_issues(result, github, changes=changes)
            for line in outcome.lines():
                self.echo(f"issues: {line}")
            self.links = outcome.links()
            result.add(outcome.step())

        return report

    def summary(self, junit_path: Path) -> Reporter:
        def report(result: RunResult) -> None:
            from cdd_ci.report.summary import publish_summary

            publish_summary(result, junit_path=junit_path, issues=self.links)

        return report


def changes_since_green(result: RunResult, github: GitHubContext, history: str | Path,
                        checkout: Path) -> Changes:
    """The run history's comparison of `result` with the environment's last green run."""
    from cdd_ci.history.changes import since_last_green
    from cdd_ci.history.store import open_history

    commit = result.commit or github.sha
    return since_last_green(open_history(history), result, commit=commit, checkout=checkout)

"""What happens to a run's result once its machines are gone: GitHub issues, the job summary.

Each reporter is called by the lifecycle after destroy and before the JUnit report is
written, so its own outcome (say, GitHub being down) is in the report as a testcase of its
own. Reporters never decide the run's verdict and never raise into the lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cdd_ci.github_context import GitHubContext
from cdd_ci.models import RunResult

Reporter = Callable[[RunResult], None]


class Reporting:
    """The reporters of one run, sharing what they learn (issue links for the summary)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.links: list[tuple[int, str, str]] = []

    def issues(self, github: GitHubContext) -> Reporter:
        def report(result: RunResult) -> None:
            from cdd_ci.issues import report_issues

            outcome = report_issues(result, github)
            for line in outcome.lines():
                self.echo(f"issues: {line}")
            self.links = outcome.links()
            result.add(outcome.step())

        return report

    def summary(self, junit_path: Path) -> Reporter:
        def report(result: RunResult) -> None:
            from cdd_ci.summary import publish_summary

            publish_summary(result, junit_path=junit_path, issues=self.links)

        return report

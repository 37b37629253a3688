"""No hidden skips: in CI a skipped test fails the session unless the list names it.

A skip that nobody expected (a provider missing on the runner, a contract not fetched) would
otherwise leave the run green while it proved nothing. Outside CI skips are only reported,
so a developer without a provider can still run the rest.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest


def expected_skips(listing: Path) -> list[str]:
    """The patterns of the list: one a line, `PATTERN -- why`, `#` starts a comment."""
    patterns = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        pattern = line.split(" -- ", 1)[0].strip()
        if pattern and not pattern.startswith("#"):
            patterns.append(pattern)
    return patterns


def unexpected(skipped: list[str], patterns: list[str]) -> list[str]:
    return [node for node in skipped if not any(fnmatch.fnmatch(node, p) for p in patterns)]


class SkipGuard:
    def __init__(self, listing: Path) -> None:
        self.listing = listing
        self.skipped: list[str] = []
        self.bad: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.bad = unexpected(self.skipped, expected_skips(self.listing))
        if self.bad and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.bad:
            terminalreporter.write_line(
                f"FAILED (CI): {len(self.bad)} skipped test(s) not on {self.listing.name}:",
                red=True)
            for node in self.bad:
                terminalreporter.write_line(f"  {node}")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def register(config: pytest.Config, listing: Path) -> None:
    if in_ci():
        config.pluginmanager.register(SkipGuard(listing), "cdd-skip-guard")

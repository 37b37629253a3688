"""Shared test fixtures: a private host index, and the published contracts the tests check
against (fetched and cached by tests/contracts.py; never read from beside the repository)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests import contracts, skip_guard
from tests import postgres as postgres_server
from tests.fakes.openapi import OpenApi

REPO = Path(__file__).resolve().parents[1]
EXPECTED_SKIPS = Path(__file__).resolve().parent / "expected-skips.txt"


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private host index for every test (and every cdd it starts): tests never see the
    runs of the host they run on, and a reaper under test can never reach them."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("CDD_STATE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def github_openapi() -> OpenApi:
    """GitHub's own OpenAPI description (operations the reporting uses), as a validator."""
    return OpenApi(contracts.github_openapi())


@pytest.fixture(scope="session")
def junit_schema() -> etree.XMLSchema:
    """Jenkins' JUnit schema, as pytest validates its own reports against it."""
    return etree.XMLSchema(etree.parse(str(contracts.junit_xsd())))



class TimeSplit:
    """Where the suite's time goes, by folder (unit, integration), printed at the end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        parts = report.nodeid.split("/")
        folder = parts[1] if len(parts) > 2 else parts[0]
        self.seconds[folder] = self.seconds.get(folder, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.seconds:
            split = ", ".join(f"{folder} {seconds / 60:.1f} min"
                              for folder, seconds in sorted(self.seconds.items()))
            terminalreporter.write_line(f"time split: {split}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules of several minutes first: with the order kept (scripts/test.sh tells
    pytest-xdist not to reorder) the two workers share them out early and end together,
    instead of one worker running the last long module while the other sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_configure(config: pytest.Config) -> None:
    skip_guard.register(config, EXPECTED_SKIPS)
    config.pluginmanager.register(TimeSplit(), "cdd-time-split")


@pytest.fixture(scope="session")
def postgres() -> Iterator[postgres_server.Server]:
    """A real PostgreSQL server for the session (the team's shared history), stopped at the end."""
    server = postgres_server.start()
    try:
        yield server
    finally:
        server.stop()

"""The daily job end to end, as the scheduled workflow runs it: real Vagrant machines, a
failing check, `cdd run --issues` reporting to a local server that speaks GitHub's API
(checked against GitHub's OpenAPI description), and the job summary GitHub Actions shows.
Then the same check passes twice, and the issue is closed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi

from .conftest import MARKER_CHECK as CHECK
from .conftest import Project

pytestmark = [pytest.mark.vagrant, pytest.mark.long]

TOKEN = "ghs_DailyJobT0kenThatMustNeverBeSeen00000"


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository="acme/cloud") as server:
        yield server


def daily_run(project: Project, github: GitHubServer, run: int) -> tuple[int, str, str]:
    actions = project.root / f"actions-{run}"
    actions.mkdir()
    env = dict(os.environ, GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY="acme/cloud",
               GITHUB_API_URL=github.base_url, GITHUB_SERVER_URL="https://github.example",
               GITHUB_RUN_ID=str(1000 + run), GITHUB_SHA="9b3e7d01" * 5,
               GITHUB_EVENT_NAME="schedule", GITHUB_ACTIONS="true",
               GITHUB_STEP_SUMMARY=str(actions / "summary.md"),
               GITHUB_OUTPUT=str(actions / "output"))
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "run", "--issues"], cwd=project.root,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    summary = (actions / "summary.md").read_text() if (actions / "summary.md").exists() else ""
    return proc.returncode, proc.stdout + proc.stderr, summary


def test_failing_check_opens_one_issue_and_recovery_closes_it(
        pair: Project, github: GitHubServer) -> None:
    pair.append_config(CHECK)
    code, output, summary = daily_run(pair, github, 1)
    assert code == 1, output
    issues = github.real_issues()
    assert len(issues) == 1
    issue = issues[0]
    assert "marker file" in issue["title"] and "alpha" in issue["title"]
    assert "No such file or directory" in issue["body"]
    assert "/actions/runs/1001" in issue["body"]
    assert "checks failed" in summary and "marker file" in summary
    assert f"[#{issue['number']}]" in summary
    report = (pair.root / "reports" / "junit.xml").read_text()
    for text in (output, summary, report, issue["body"]):
        assert TOKEN not in text
    assert pair.left_running(pair.run_ids()) == []

    # the product is fixed: the machine now provisions the marker; two green runs close it
    (pair.root / "Vagrantfile").write_text((pair.root / "Vagrantfile").read_text().replace(
        'echo "provisioned $name" > /etc/cdd-test',
        'echo "provisioned $name" > /etc/cdd-test; touch /etc/cdd-marker'))
    for run in (2, 3):
        code, output, summary = daily_run(pair, github, run)
        assert code == 0, output
        assert "passed" in summary
    closed = github.real_issues()
    assert len(closed) == 1 and closed[0]["state"] == "closed"
    assert pair.left_running(pair.run_ids()) == []

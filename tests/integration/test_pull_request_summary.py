"""A pull request's job summary names the failures already failing on main, with their issues.

The shipped and scaffolded PR workflows run `cdd run --issues` with `issues: read`: the run's
reporters as `cdd run` chains them, against the local server speaking GitHub's API (checked
against its OpenAPI description), with the variables Actions sets for a pull request. The
summary is what the team reads on the pull request; the server's log shows nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdd_ci.github.client import ClientOptions
from cdd_ci.github.context import GitHubContext, context_from_env
from cdd_ci.github.issues import IssuePolicy, report_issues
from cdd_ci.models import Phase, RunResult, Status, StepResult
from cdd_ci.report.reporters import Reporting
from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi

TOKEN = "ghs_PullRequestSummaryT0kenForTests000000"
REPO = "acme/cloud"
ENV = "openstack-base"
KNOWN, NEW = "mariadb running", "rabbitmq running"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC).timestamp()
OPTIONS = ClientOptions(timeout=5, retries=2, backoff=0.0, seconds_between_writes=0.0,
                        per_page=3)
WRITES = {"issues/create", "issues/update", "issues/create-comment", "issues/create-label"}


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository=REPO) as server:
        yield server


def context(server: GitHubServer, **env: str) -> GitHubContext:
    return context_from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO,
                             "GITHUB_RUN_ID": "77", **env}, api_url=server.base_url)


def run(day: int, *failing: str) -> RunResult:
    at = T0 + day * 86400
    result = RunResult(f"run-{day}", ENV, "lxc", ["broker", "database"], at, at + 600)
    for check, machine in ((KNOWN, "database"), (NEW, "broker")):
        failed = check in failing
        result.add(StepResult(Phase.CHECK, machine, check,
                              Status.FAILED if failed else Status.PASSED,
                              message=f"{check}: inactive" if failed else ""))
    return result


def test_a_pull_requests_summary_says_already_failing_on_main_with_the_issue(
        github: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # main's scheduled run opened the issue
    opened = report_issues(run(0, KNOWN), context(github), options=OPTIONS,
                           policy=IssuePolicy(claim_wait=3.0, poll_interval=0.02))
    assert opened.ok, opened.errors
    ((number, url, _),) = opened.links()
    before = len(github.requests)

    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                        "GITHUB_OUTPUT": str(outputs)}.items():
        monkeypatch.setenv(name, value)
    pull_request = context(github, GITHUB_EVENT_NAME="pull_request", GITHUB_BASE_REF="main")
    said: list[str] = []
    reporting = Reporting(said.append)
    result = run(1, KNOWN, NEW)
    # as `cdd run --issues` chains them: the issues first, then the summary that links them
    for reporter in (reporting.issues(pull_request),
                     reporting.summary(tmp_path / "junit.xml")):
        reporter(result)

    text = summary.read_text(encoding="utf-8")
    assert f"- [#{number}]({url}) already failing on main" in text, text
    assert f"issues: already failing on main: #{number}: {ENV}: check \"{KNOWN}\"" \
        f" failed on database" in said
    assert any(line.startswith("issues: not failing on main (no open issue)") for line in said)
    # read only: a pull request's token may not write issues, and none was written
    assert not WRITES & {r.operation for r in github.requests[before:]}
    assert len(github.real_issues()) == 1

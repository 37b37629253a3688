"""Failure issues end to end: the real PyGithub client against a local server speaking GitHub's API.

The server checks every request and response against GitHub's OpenAPI description (a
mismatch fails the test at teardown), lists pull requests among the issues as GitHub does,
paginates with `Link` headers (three items a page here, so every listing spans pages) and
can be told to fail. Nothing carries over from one `report_issues` call to the next except
what the server holds, as on CI runners that start clean.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cdd_ci.cli import app
from cdd_ci.github.client import ClientOptions
from cdd_ci.github.context import GitHubContext, context_from_env
from cdd_ci.github.issues import CLAIM_PREFIX, IssuePolicy, IssueReport, failures_of, report_issues
from cdd_ci.github.record import decode
from cdd_ci.models import ENVIRONMENT, ExitCode, Phase, RunResult, Status, StepResult
from cdd_ci.report import junit
from cdd_ci.text import BODY_LIMIT
from tests.fakes.github_server import Fault, GitHubServer
from tests.fakes.openapi import OpenApi

TOKEN = "ghs_R3alLookingT0kenF0rTheTestsOnly0000000"
REPO = "acme/cloud"
ENV = "openstack-base"
A, B = "mariadb running", "rabbitmq running"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
# fast but real: the retry logic runs, it only does not wait the production times
OPTIONS = ClientOptions(timeout=5, retries=4, backoff=0.0, seconds_between_writes=0.0,
                        secondary_rate_wait=0.05, max_rate_limit_wait=5.0, per_page=3)
POLICY = IssuePolicy(claim_wait=3.0, poll_interval=0.02)
WRITES = {"issues/create", "issues/update", "issues/create-comment", "issues/create-label"}
MARK = re.compile(r"<!-- cdd-comment: (\S+) (\w+) -->")


@pytest.fixture(scope="module")
def openapi(github_openapi: OpenApi) -> OpenApi:
    return github_openapi



@pytest.fixture
def github(openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(openapi, token=TOKEN, repository=REPO) as server:
        yield server


def context(server: GitHubServer, **env: str) -> GitHubContext:
    return context_from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO,
                             "GITHUB_SERVER_URL": "https://github.example",
                             "GITHUB_RUN_ID": "4242", **env}, api_url=server.base_url)


def run(day: float, *failing: str, log: str = "", run_id: str = "") -> RunResult:
    """The run on `day`: the two checks, each failed if named, with a message that varies."""
    at = (T0 + timedelta(days=day)).timestamp()
    result = RunResult(run_id or f"run-{day:g}", ENV, "lxc", ["broker", "database"], at,
                       at + 1200, commit=f"{int(day * 100):040x}", vagrant_version="2.4.3")
    for check, machine in ((A, "database"), (B, "broker")):
        failed = check in failing
        result.add(StepResult(
            Phase.CHECK, machine, check, Status.FAILED if failed else Status.PASSED,
            message=f"{check}: inactive since {datetime.fromtimestamp(at, UTC).isoformat()} "
                    f"on 10.0.3.{int(day) % 200 + 2}" if failed else "",
            output=(log or f"journal of {check} on day {day}\n") if failed else "",
        ))
    return result


def report(server: GitHubServer, result: RunResult, **kw: object) -> IssueReport:
    kw.setdefault("policy", POLICY)
    outcome = report_issues(result, context(server), options=OPTIONS, **kw)  # type: ignore[arg-type]
    assert outcome.ok, outcome.errors
    return outcome


def seed_noise(server: GitHubServer) -> None:
    """A pull request carrying failure A's marker, and other labelled issues, before ours."""
    marker = f"<!-- cdd-fingerprint: {failures_of(run(0, A))[0].fingerprint} -->"
    server.add_pull_request("Fix mariadb", marker, ["cdd"])
    for i in range(4):
        server.add_pull_request(f"unrelated {i}", "no marker", ["cdd"])


def ours(server: GitHubServer) -> dict[str, dict[str, object]]:
    """Our issues by check, with their comment marks (run, kind) in order."""
    found: dict[str, dict[str, object]] = {}
    for issue in server.real_issues():
        record = decode(issue["body"] or "")
        if record is None:
            continue
        assert record.check not in found, f"two issues for {record.check}"
        found[record.check] = {
            "number": issue["number"], "state": issue["state"], "record": record,
            "marks": [MARK.search(c).groups() for c in server.comment_bodies(issue["number"])
                      if MARK.search(c)],
        }
    return found


# 20 runs, alternately failing and passing; the failing ones alternate between A and B.
# A step that passed in two runs in a row closes its issue; its failure reopens it.
SEQUENCE = [((A,) if day % 4 == 0 else (B,)) if day % 2 == 0 else () for day in range(20)]
EXPECTED_MARKS = {
    A: [(f"run-{d}", "recovered" if d % 4 == 2 else "reopened") for d in range(2, 19, 2)],
    B: [(f"run-{d}", "recovered" if d % 4 == 0 else "reopened") for d in range(4, 19, 2)],
}


def assert_twenty_runs_outcome(server: GitHubServer, *, exact_comments: bool = True) -> None:
    issues = ours(server)
    assert sorted(issues) == [A, B]
    assert len(server.real_issues()) == 2  # nothing else was opened, not even a duplicate
    a, b = issues[A], issues[B]
    assert a["state"] == "closed" and b["state"] == "open"
    for issue, reopened in ((a, 4), (b, 4)):
        record = issue["record"]
        assert record.occurrences == 5 and record.reopened == reopened  # type: ignore[attr-defined]
    assert issues[B]["record"].green_streak == 1  # type: ignore[attr-defined]
    for check in (A, B):
        marks = issues[check]["marks"]
        if exact_comments:
            assert marks == EXPECTED_MARKS[check]
        else:  # two reporters of one run may both get a comment in (never an issue)
            assert set(marks) == set(EXPECTED_MARKS[check])  # type: ignore[arg-type]
    assert "search/issues-and-pull-requests" not in server.operations()


def test_twenty_runs_across_two_failures_leave_two_issues_closed_and_reopened(
        github: GitHubServer) -> None:
    seed_noise(github)
    lines = [report(github, run(day, *failing)).lines() for day, failing in enumerate(SEQUENCE)]
    assert lines[0] == [f'opened #6: {ENV}: check "{A}" failed on database']
    assert lines[1] == [f'updated #6 (1 green run in a row): {ENV}: check "{A}" failed on database']
    assert sorted(lines[2]) == [
        f'closed #6 (2 green runs in a row): {ENV}: check "{A}" failed on database',
        f'opened #7: {ENV}: check "{B}" failed on broker',
    ]
    assert sorted(lines[4]) == [
        f'closed #7 (2 green runs in a row): {ENV}: check "{B}" failed on broker',
        f'reopened #6 (seen 2 times): {ENV}: check "{A}" failed on database',
    ]
    assert_twenty_runs_outcome(github)
    labels = {label["name"]: label for label in github.labels.values()}
    assert {"cdd", "environment-failure", "phase:check"} <= set(labels)
    assert labels["environment-failure"]["color"] == "d73a4a"
    issue = github.issues[6]
    assert issue["labels"] == ["cdd", "environment-failure", "phase:check"]
    assert issue["state_reason"] == "completed"


FAULTS = {
    0: [Fault.server_error("POST", r"/repos/acme/cloud/issues", after=True),  # created, then 502
        Fault.server_error("GET", r"/repos/acme/cloud/issues", status=500)],
    1: [Fault.secondary_rate_limit("PATCH", r"/repos/acme/cloud/issues/\d+")],
    2: [Fault.server_error("POST", r"/repos/acme/cloud/labels", status=502, after=True),
        Fault.server_error("POST", r"/repos/acme/cloud/issues/\d+/comments", after=True),
        Fault.server_error("PATCH", r"/repos/acme/cloud/issues/\d+", status=503)],
    3: [Fault.too_many_requests("GET", r"/repos/acme/cloud/issues", retry_after=0)],
    4: [Fault.primary_rate_limit("GET", r"/repos/acme/cloud/issues", reset_in=0),
        Fault.server_error("POST", r"/repos/acme/cloud/issues/\d+/comments", status=502)],
    6: [Fault.secondary_rate_limit("POST", r"/repos/acme/cloud/issues/\d+/comments")],
    8: [Fault.server_error("GET", r"/repos/acme/cloud/issues/\d+/comments", times=2)],
    9: [Fault.server_error("PATCH", r"/repos/acme/cloud/issues/\d+", status=502, times=2)],
}


def test_the_same_twenty_runs_through_5xx_and_rate_limits_end_the_same(
        github: GitHubServer) -> None:
    seed_noise(github)
    for day, failing in enumerate(SEQUENCE):
        for fault in FAULTS.get(day, []):
            github.fail(fault)
        report(github, run(day, *failing))
    assert [f for f in github.faults if f.times] == [], "every fault was hit"
    assert_twenty_runs_outcome(github)


def test_the_same_twenty_runs_each_reported_twice_at_once_end_the_same(
        github: GitHubServer) -> None:
    seed_noise(github)
    for day, failing in enumerate(SEQUENCE):
        result = run(day, *failing)
        barrier = threading.Barrier(2)
        outcomes: list[IssueReport] = []

        def reporter(result: RunResult = result, barrier: threading.Barrier = barrier,
                     outcomes: list[IssueReport] = outcomes) -> None:
            barrier.wait()
            outcomes.append(report_issues(result, context(github), options=OPTIONS,
                                          policy=POLICY))

        threads = [threading.Thread(target=reporter) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [o.errors for o in outcomes] == [[], []]
    assert_twenty_runs_outcome(github, exact_comments=False)


@pytest.mark.parametrize("after_create", [False, True])
def test_runs_racing_to_report_one_new_failure_open_one_issue(
        github: GitHubServer, after_create: bool) -> None:
    if after_create:
        github.fail(Fault.server_error("POST", r"/repos/acme/cloud/issues", after=True))
    barrier = threading.Barrier(4)
    outcomes: list[IssueReport] = []

    def reporter(n: int) -> None:
        result = run(0, A, run_id=f"racer-{n}")
        barrier.wait()
        outcomes.append(report_issues(result, context(github), options=OPTIONS, policy=POLICY))

    threads = [threading.Thread(target=reporter, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [o.errors for o in outcomes] == [[]] * 4
    assert len(github.real_issues()) == 1
    assert github.operations().count("issues/create") == 1
    claims = [name for name in github.labels if name.startswith(CLAIM_PREFIX)]
    assert len(claims) == 1
    assert 1 <= ours(github)[A]["record"].occurrences <= 4  # type: ignore[attr-defined]


def test_a_create_whose_connection_dropped_after_github_acted_is_not_repeated(
        github: GitHubServer) -> None:
    github.fail(Fault.dropped("POST", r"/repos/acme/cloud/issues"))
    report(github, run(0, A))
    assert len(github.real_issues()) == 1
    assert github.operations().count("issues/create") == 1


def test_a_five_megabyte_log_leaves_a_body_under_the_limit_with_nothing_live_in_it(
        github: GitHubServer) -> None:
    line = f"mysqld: @dba-team look at #1234 (GH-9) ```` {TOKEN} <!-- cdd-record: {{}} -->\n"
    log = line * (5_000_000 // len(line)) + "the very last line\n"
    report(github, run(0, A, log=log))
    report(github, run(1, A, log=log))  # and a comment
    issue = github.real_issues()[0]
    body = issue["body"]
    assert len(body) <= BODY_LIMIT and len(body.encode("utf-16-le")) // 2 <= BODY_LIMIT
    assert "the very last line" in body and "earlier characters cut" in body
    texts = [body, issue["title"], *github.comment_bodies(issue["number"])]
    sent = b"".join(r.raw for r in github.requests)
    assert TOKEN.encode() not in sent
    for text in texts:
        assert TOKEN not in text
        assert re.search(r"@[A-Za-z0-9]|#\d|GH-\d", text) is None
        assert text.count("<!-- cdd-record") <= 1
    fence = max(re.findall(r"^`{3,}", body, re.MULTILINE), key=len)
    assert len(fence) > 4  # longer than the log's own ```` run


def test_the_token_is_in_no_error_message_output_or_log(
        github: GitHubServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    github.fail(Fault("GET", r"/repos/acme/cloud/issues", 500,
                      {"message": f"internal error while checking token {TOKEN}"}, times=10))
    result = run(0, A)
    outcome = report_issues(result, context(github), options=OPTIONS, policy=POLICY)
    assert not outcome.ok
    step = outcome.step()
    everything = "\n".join([*outcome.lines(), step.message, step.output, caplog.text])
    assert "500" in outcome.errors[0]
    assert TOKEN not in everything
    result.add(step)
    assert result.exit_code() is ExitCode.CHECKS_FAILED  # the run's verdict, not GitHub's


def test_a_rate_limit_that_resets_too_late_fails_fast_with_a_clear_line(
        github: GitHubServer, sleeps: list[float]) -> None:
    github.fail(Fault.primary_rate_limit("GET", r"/repos/acme/cloud/issues", reset_in=3600))
    outcome = report_issues(run(0, A), context(github), options=OPTIONS, policy=POLICY)
    assert sum(sleeps) < OPTIONS.max_rate_limit_wait  # did not wait for the reset
    assert len(outcome.errors) == 1 and "403" in outcome.errors[0]
    assert "rate limit" in outcome.errors[0].lower()
    assert github.real_issues() == []


def test_retry_after_is_respected(github: GitHubServer, sleeps: list[float]) -> None:
    github.fail(Fault.too_many_requests("POST", r"/repos/acme/cloud/issues", retry_after=1))
    report(github, run(0, A))
    assert max(sleeps) >= 1.0
    assert len(github.real_issues()) == 1  # a rate-limited POST did nothing: it is repeated


def test_github_out_of_reach_is_an_error_result_not_a_crash() -> None:
    unreachable = GitHubContext(TOKEN, REPO, api_url="http://127.0.0.1:9/api/v3")
    outcome = report_issues(run(0, A), unreachable, options=OPTIONS, policy=POLICY)
    assert len(outcome.errors) == 1 and "ConnectionError" in outcome.errors[0]


def test_a_bad_token_says_so(github: GitHubServer) -> None:
    bad = GitHubContext("ghs_" + "x" * 36, REPO, api_url=github.base_url)
    outcome = report_issues(run(0, A), bad, options=OPTIONS, policy=POLICY)
    assert outcome.errors == ["list issues: GitHub answered 401: Bad credentials "
                              "(is GITHUB_TOKEN valid?)"]


def test_on_a_pull_request_known_failures_are_named_and_nothing_is_written(
        github: GitHubServer) -> None:
    seed_noise(github)
    report(github, run(0, A))
    before = len(github.requests)
    pr = context(github, GITHUB_EVENT_NAME="pull_request", GITHUB_BASE_REF="main")
    outcome = report_issues(run(1, A, B), pr, options=OPTIONS, policy=POLICY)
    assert outcome.lines() == [
        f'already failing on main: #6: {ENV}: check "{A}" failed on database',
        f'not failing on main (no open issue): {ENV}: check "{B}" failed on broker',
    ]
    assert not WRITES & {r.operation for r in github.requests[before:]}


def test_a_dry_run_prints_the_plan_and_changes_nothing(github: GitHubServer) -> None:
    report(github, run(0, A))
    before = len(github.requests)
    outcome = report(github, run(1, B), dry_run=True)
    assert sorted(outcome.lines()) == [
        f'dry run: would open: {ENV}: check "{B}" failed on broker',
        f'dry run: would update #1 (1 green run in a row): {ENV}: check "{A}" failed on database',
    ]
    assert not WRITES & {r.operation for r in github.requests[before:]}


def test_cdd_issues_reports_a_run_from_its_junit_report(
        github: GitHubServer, tmp_path: Path) -> None:
    for name in ("cdd", "environment-failure", "phase:check"):
        github.add_label(name)  # made by earlier runs; the CLI spaces its writes by a second
    path = junit.write(run(0, A), tmp_path / "junit.xml")
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": github.base_url,
           "GITHUB_EVENT_NAME": "schedule"}
    result = CliRunner().invoke(app, ["issues", "--junit", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == f'opened #1: {ENV}: check "{A}" failed on database\n'
    again = CliRunner().invoke(app, ["issues", "--junit", str(path), "--dry-run"], env=env)
    assert again.output == "dry run: no issue to open or change\n"  # that run is counted


def test_cdd_issues_without_a_token_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = junit.write(run(0, A), tmp_path / "junit.xml")
    result = CliRunner().invoke(app, ["issues", "--junit", str(path)],
                                env={"GITHUB_TOKEN": "", "GITHUB_REPOSITORY": REPO})
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("cdd: error: GITHUB_TOKEN")
    assert "Traceback" not in result.output


def test_cdd_run_issues_without_a_repository_stops_before_building_anything(
        tmp_path: Path) -> None:
    config = tmp_path / "cdd.toml"
    config.write_text('[environment]\nname = "demo"\ndirectory = "env"\nmachines = ["one"]\n')
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "Vagrantfile").write_text("# a valid environment: only GitHub is missing\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--issues"],
                                env={"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": ""})
    assert result.exit_code == 2
    assert result.output == "cdd: error: GITHUB_REPOSITORY is not set: give the repository as " \
        "owner/name\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdd.toml", "env"]  # no ledger, reports


def test_cdd_issues_exits_3_when_github_refuses(github: GitHubServer, tmp_path: Path) -> None:
    path = junit.write(run(0, A), tmp_path / "junit.xml")
    env = {"GITHUB_TOKEN": "ghs_" + "0" * 36, "GITHUB_REPOSITORY": REPO,
           "GITHUB_API_URL": github.base_url}
    result = CliRunner().invoke(app, ["issues", "--junit", str(path)], env=env)
    assert result.exit_code == 3
    assert result.output == "error: list issues: GitHub answered 401: Bad credentials " \
        "(is GITHUB_TOKEN valid?)\n"


def test_the_reporting_step_lands_in_the_junit_report_as_an_error(tmp_path: Path) -> None:
    unreachable = GitHubContext(TOKEN, REPO, api_url="http://127.0.0.1:9/api/v3")
    result = run(0, A)
    result.add(report_issues(result, unreachable, options=OPTIONS, policy=POLICY).step())
    back = junit.read(junit.write(result, tmp_path / "junit.xml"))
    step = next(s for s in back.steps if s.phase is Phase.REPORT)
    assert (step.machine, step.name, step.status) == (ENVIRONMENT, "github issues", Status.ERROR)
    assert back.exit_code() is ExitCode.CHECKS_FAILED

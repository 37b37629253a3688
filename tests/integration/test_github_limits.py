"""GitHub's limits, met by the real PyGithub client against the local GitHub server: waits that
never overrun their budget, titles that fit, and creates that went in although they failed.

The waits are asserted through `time.sleep` (which urllib3 and the client use), never by the
wall clock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cdd_ci.github.client import ClientOptions, PyGithubTracker, RemoteIssue
from cdd_ci.github.issues import IssuePolicy, IssueReport, report_issues
from cdd_ci.github.record import decode
from cdd_ci.models import Phase, RunResult, Status, StepResult
from tests.fakes.github_server import SECONDARY_MESSAGE, Fault, GitHubServer
from tests.fakes.openapi import OpenApi
from tests.integration.test_github_issues import ENV, OPTIONS, POLICY, REPO, TOKEN, A, context, run

ISSUES = r"/repos/acme/cloud/issues"
# the production budget: a test that passes with it cannot have waited it out
PRODUCTION = replace(OPTIONS, max_rate_limit_wait=300.0, secondary_rate_wait=60.0)
QUICK = replace(POLICY, claim_wait=0.3)


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository=REPO) as server:
        yield server



def report(server: GitHubServer, result: RunResult, *, options: ClientOptions = OPTIONS,
           policy: IssuePolicy = POLICY) -> IssueReport:
    outcome = report_issues(result, context(server), options=options, policy=policy)
    assert outcome.ok, outcome.errors
    return outcome


def _rate_limited(method: str, status: int, headers: dict[str, str]) -> Fault:
    return Fault(method, ISSUES, status, {"message": SECONDARY_MESSAGE}, headers)


RESET_IN_400 = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "+400"}
"""Made absolute when the test runs: collection may be minutes earlier."""


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("status", "headers", "why"), [
    (429, {"Retry-After": "400"}, "Retry-After: 400"),
    (403, {"Retry-After": "400"}, "Retry-After: 400"),
    (403, RESET_IN_400, "until x-ratelimit-reset"),
    (429, RESET_IN_400, "until x-ratelimit-reset"),
], ids=["429-retry-after", "403-retry-after", "403-reset", "429-reset"])
def test_a_rate_limit_longer_than_the_budget_gives_up_at_once_and_says_why(
        github: GitHubServer, sleeps: list[float], method: str, status: int,
        headers: dict[str, str], why: str) -> None:
    headers = {k: str(int(time.time()) + 400) if v == "+400" else v for k, v in headers.items()}
    github.fail(_rate_limited(method, status, headers))
    outcome = report_issues(run(0, A), context(github), options=PRODUCTION, policy=QUICK)
    assert [s for s in sleeps if s >= 1] == []  # not a second of the 400 was waited
    assert len(outcome.errors) == 1
    error = outcome.errors[0]
    assert f"GitHub answered {status} (rate limit)" in error
    assert re.search(r"asks to wait (39\d|40\d)(\.\d)? s", error) and why in error
    assert error.endswith("), more than the 300 s cdd waits for GitHub (max_rate_limit_wait):"
                          " gave up")
    assert github.real_issues() == []


def test_a_server_error_asking_for_a_long_wait_is_not_waited_either(
        github: GitHubServer, sleeps: list[float]) -> None:
    github.fail(Fault("GET", ISSUES, 503, {"message": "Service Unavailable"},
                      {"Retry-After": "400"}))
    outcome = report_issues(run(0, A), context(github), options=PRODUCTION, policy=QUICK)
    assert [s for s in sleeps if s >= 1] == []
    assert outcome.errors == [
        "list issues: GitHub answered 503 and asks to wait 400 s (Retry-After: 400), more than"
        " the 300 s cdd waits for GitHub (max_rate_limit_wait): gave up"]


def test_waits_that_each_fit_stop_when_together_they_would_overrun_the_budget(
        github: GitHubServer, sleeps: list[float]) -> None:
    budget = replace(OPTIONS, max_rate_limit_wait=2.5, retries=10)
    github.fail(Fault("GET", ISSUES, 429, {"message": SECONDARY_MESSAGE}, {"Retry-After": "1"},
                      times=5))
    outcome = report_issues(run(0, A), context(github), options=budget, policy=QUICK)
    assert sleeps.count(1.0) == 2 and sum(sleeps) <= 2.5
    assert outcome.errors == [
        "list issues: GitHub answered 429 (rate limit) and asks to wait 1 s (Retry-After: 1),"
        " only 0.5 s are left of the 2.5 s cdd waits for GitHub (max_rate_limit_wait): gave up"]


def test_a_wait_within_the_budget_is_waited_and_the_request_goes_through(
        github: GitHubServer, sleeps: list[float]) -> None:
    github.fail(_rate_limited("POST", 403, {"Retry-After": "1"}))
    github.fail(_rate_limited("GET", 429, {}))  # no header: the secondary wait of the options
    report(github, run(0, A), options=replace(OPTIONS, secondary_rate_wait=0.2))
    assert 1.0 in sleeps and 0.2 in sleeps
    assert len(github.real_issues()) == 1


CHECK = "probe " + " ".join(f"@team{i} #{i} GH-{i}" for i in range(60))
"""A check name of 1,000 characters whose every word would ping or link once made inert."""


def _long_named_run(day: float) -> RunResult:
    result = run(day, A)
    step = result.steps[0]
    result.steps[0] = StepResult(Phase.CHECK, step.machine, CHECK, Status.FAILED,
                                 message=step.message, output=step.output)
    return result


def test_a_title_over_githubs_limit_once_made_inert_still_opens_and_is_found_again(
        github: GitHubServer) -> None:
    first = report(github, _long_named_run(0))
    assert first.lines()[0].startswith("opened #1: ")
    second = report(github, _long_named_run(1))
    assert second.lines()[0].startswith("updated #1 ") or second.lines()[0].startswith(
        "commented on #1 ")
    issues = github.real_issues()
    assert len(issues) == 1
    title = issues[0]["title"]
    assert len(title.encode("utf-16-le")) // 2 <= 256 and title.endswith("…")
    assert title.startswith(f'{ENV}: check "probe @\u200dteam0 #\u200d0 GH-\u200d0')
    assert re.search(r"@[A-Za-z0-9]|#\d|GH-\d", title) is None
    assert all(r.status != 422 for r in github.requests)


@pytest.mark.parametrize("fault", [
    lambda after: Fault.server_error("POST", ISSUES, after=after),
    lambda after: Fault.dropped("POST", ISSUES, after=after),
], ids=["502", "dropped"])
def test_a_create_that_went_in_on_the_last_attempt_is_reported_as_opened(
        github: GitHubServer, fault: object) -> None:
    make = fault  # type: ignore[assignment]
    for after in [False] * (POLICY.post_attempts - 1) + [True]:
        github.fail(make(after))  # type: ignore[operator]
    outcome = report(github, run(0, A), policy=QUICK)
    assert outcome.lines() == [f'opened #1: {ENV}: check "{A}" failed on database']
    assert len(github.real_issues()) == 1
    assert github.operations().count("issues/create") == POLICY.post_attempts


def test_a_create_that_never_went_in_is_reported_as_failed(github: GitHubServer) -> None:
    github.fail(Fault.server_error("POST", ISSUES, times=POLICY.post_attempts))
    outcome = report_issues(run(0, A), context(github), options=OPTIONS, policy=QUICK)
    assert len(outcome.errors) == 1 and "create issue: GitHub answered 502" in outcome.errors[0]
    assert github.real_issues() == []


def test_the_production_options_are_what_the_docs_promise() -> None:
    assert ClientOptions().max_rate_limit_wait == 300.0


@pytest.mark.parametrize("racers", [2, 4])
def test_runs_updating_one_issue_at_once_lose_no_count(
        github: GitHubServer, monkeypatch: pytest.MonkeyPatch, racers: int) -> None:
    report(github, run(0, A, run_id="first"))  # the issue, seen once
    # every racer reads the issue before any of them writes: the worst case, every time
    together = threading.Barrier(racers)
    first_reads: set[int] = set()
    real_issue = PyGithubTracker.issue

    def issue(tracker: PyGithubTracker, number: int) -> RemoteIssue:
        found = real_issue(tracker, number)
        if threading.get_ident() not in first_reads:
            first_reads.add(threading.get_ident())
            together.wait(10)
        return found

    monkeypatch.setattr(PyGithubTracker, "issue", issue)
    outcomes: list[IssueReport] = []
    policy = replace(POLICY, settle=0.2)

    def reporter(n: int) -> None:
        outcomes.append(report_issues(run(1 + n / 100, A, run_id=f"racer-{n}"), context(github),
                                      options=OPTIONS, policy=policy))

    threads = [threading.Thread(target=reporter, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [o.errors for o in outcomes] == [[]] * racers
    (issue_now,) = github.real_issues()
    record = decode(issue_now["body"])
    assert record is not None
    if racers == 2:  # one run finds its count gone and puts it back: nobody else is writing
        assert (record.occurrences, record.count_may_be_low) == (3, False)
        assert sorted(record.counted) == ["first", "racer-0", "racer-1"]
    else:  # counting again can race too; the issue then says its count may be low
        assert record.occurrences == 1 + racers or (
            record.count_may_be_low and "at least" in issue_now["body"])
    assert "seen 1 time," not in issue_now["body"]


def test_a_second_report_of_a_counted_run_changes_nothing(github: GitHubServer) -> None:
    report(github, run(0, A, run_id="first"))
    report(github, run(1, A, run_id="second"))
    before = github.real_issues()[0]["body"]
    outcome = report(github, run(1, A, run_id="second"))
    assert outcome.lines() == ["no issue to open or change"]
    assert github.real_issues()[0]["body"] == before
    assert decode(before).occurrences == 2  # type: ignore[union-attr]

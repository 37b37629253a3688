"""The issue lifecycle, driven through `report_issues` against the in-memory tracker.

Each call of `report_issues` gets nothing from the call before except what the tracker holds,
as on a CI runner that starts clean every day.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from cdd_ci.github.client import GitHubError
from cdd_ci.github.context import GitHubContext
from cdd_ci.github.issues import CLAIM_PREFIX, IssuePolicy, report_issues
from cdd_ci.models import ENVIRONMENT, ExitCode, Phase, RunResult, Status, StepResult
from tests.fakes.tracker import FakeTracker

TOKEN = "ghs_0123456789abcdefghijABCDEFGHIJ012345"
CONTEXT = GitHubContext(TOKEN, "acme/cloud", run_id="9001", server_url="https://github.example")
POLICY = IssuePolicy(claim_wait=0, poll_interval=0)
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
CHECKS = ["mariadb running", "rabbitmq running", "keystone logs in"]


def run(day: float, *failing: str, env: str = "openstack-base", skipped: bool = False,
        **props: str) -> RunResult:
    """A run `day` days after T0 in which the named checks fail (and the others pass)."""
    at = (T0 + timedelta(days=day)).timestamp()
    result = RunResult(f"run-{day:g}", env, "lxc", ["broker", "database"], at, at + 900,
                       commit=f"{int(day * 10):040x}",
                       **{"vagrant_version": "2.4.3", **props})  # type: ignore[arg-type]
    for check in CHECKS:
        status = Status.FAILED if check in failing else Status.PASSED
        if skipped:
            status = Status.SKIPPED
        message = f"{check}: failed at {datetime.fromtimestamp(at, UTC).isoformat()}" \
            if status is Status.FAILED else ""
        result.add(StepResult(Phase.CHECK, "database", check, status, message=message,
                              output=f"log of {check}\n"))
    return result


def report(tracker: FakeTracker, result: RunResult, **kw: object) -> list[str]:
    outcome = report_issues(result, CONTEXT, tracker=tracker, policy=kw.pop("policy", POLICY),
                            sleep=lambda s: None, **kw)  # type: ignore[arg-type]
    assert outcome.ok, outcome.errors
    return outcome.lines()


def only_issue(tracker: FakeTracker) -> int:
    numbers = list(tracker.issues_by_number)
    assert len(numbers) == 1, numbers
    return numbers[0]


def test_a_new_failure_opens_one_issue_named_after_where_it_failed() -> None:
    tracker = FakeTracker()
    lines = report(tracker, run(0, "mariadb running"))
    issue = tracker.issues_by_number[only_issue(tracker)]
    assert issue.title == 'openstack-base: check "mariadb running" failed on database'
    assert issue.labels == ["cdd", "environment-failure", "phase:check"]
    assert {"cdd", "environment-failure", "phase:check"} <= set(tracker.labels)
    assert lines == [f"opened #1: {issue.title}"]
    assert "Seen 1 time" not in issue.body and "seen 1 time" in issue.body


def test_the_same_failure_comments_at_most_once_per_interval_but_always_counts() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    report(tracker, run(0.5, "mariadb running"))  # 12 h later: too soon to comment
    issue = tracker.issues_by_number[1]
    assert issue.comments == []
    assert "seen 2 times" in issue.body
    report(tracker, run(1, "mariadb running"))  # 24 h after the issue was opened
    assert len(issue.comments) == 1 and "Failed again" in issue.comments[0]
    assert "Seen 3 times" in issue.comments[0]
    report(tracker, run(1.5, "mariadb running"))
    assert len(issue.comments) == 1 and "seen 4 times" in issue.body
    assert only_issue(tracker) == 1


def test_the_comment_interval_is_configurable() -> None:
    tracker = FakeTracker()
    policy = IssuePolicy(comment_interval=timedelta(hours=6), claim_wait=0)
    for day in (0, 0.25, 0.5):
        report(tracker, run(day, "mariadb running"), policy=policy)
    assert len(tracker.issues_by_number[1].comments) == 2


def test_it_closes_after_two_green_runs_and_reopens_when_the_failure_returns() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    assert report(tracker, run(1))[0].startswith("updated #1 (1 green run in a row)")
    issue = tracker.issues_by_number[1]
    assert issue.state == "open" and "1 of the 2 green runs" in issue.body
    assert report(tracker, run(2))[0].startswith("closed #1 (2 green runs in a row)")
    assert issue.state == "closed" and issue.reason == "completed"
    assert "Recovered" in issue.comments[-1]
    assert report(tracker, run(3, "mariadb running"))[0].startswith("reopened #1")
    assert issue.state == "open" and "Failing again" in issue.comments[-1]
    assert "(reopened 1 time)" in issue.body and "seen 2 times" in issue.body
    assert only_issue(tracker) == 1


def test_green_runs_needed_to_close_are_configurable() -> None:
    tracker = FakeTracker()
    policy = IssuePolicy(close_after=3, claim_wait=0)
    report(tracker, run(0, "mariadb running"), policy=policy)
    for day in (1, 2):
        report(tracker, run(day), policy=policy)
    assert tracker.issues_by_number[1].state == "open"
    report(tracker, run(3), policy=policy)
    assert tracker.issues_by_number[1].state == "closed"


def test_only_a_run_in_which_the_failed_step_passed_counts_as_green() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    report(tracker, run(1, skipped=True))  # the build broke earlier: the check never ran
    report(tracker, run(2, "rabbitmq running"))  # another check failed; this one passed
    issue = tracker.issues_by_number[1]
    assert issue.state == "open" and "1 of the 2 green runs" in issue.body
    report(tracker, run(3))
    assert issue.state == "closed"


def test_the_state_lives_in_the_issue_not_in_the_reporter() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    body = tracker.issues_by_number[1].body
    assert re.search(r"<!-- cdd-fingerprint: [0-9a-f]{16} -->", body)
    assert re.search(r'<!-- cdd-record: \{.*"occurrences":1.*\} -->', body)
    # a human rewrites the visible text: the hidden record carries on
    tracker.issues_by_number[1].body = body.split("\n> ")[0] + "\n\nI am looking into it."
    report(tracker, run(0.5, "mariadb running"))
    assert "seen 2 times" in tracker.issues_by_number[1].body


def test_reporting_the_same_run_twice_changes_nothing() -> None:
    tracker = FakeTracker()
    first = run(0, "mariadb running")
    report(tracker, first)
    body = tracker.issues_by_number[1].body
    assert report(tracker, first) == ["no issue to open or change"]
    assert tracker.issues_by_number[1].body == body


def test_failures_past_the_cap_share_one_summary_issue() -> None:
    tracker = FakeTracker()
    result = run(0)
    for i in range(13):
        result.add(StepResult(Phase.CHECK, "broker", f"extra {i}", Status.FAILED,
                              message=f"extra {i} failed"))
    report(tracker, result, policy=IssuePolicy(max_issues=10, claim_wait=0))
    titles = [i.title for i in tracker.issues_by_number.values()]
    assert len(titles) == 11
    summary = tracker.issues_by_number[11]
    assert "more failures in one run" in summary.title
    assert summary.labels == ["cdd", "environment-failure"]
    assert "## 3 more failures" in summary.body
    assert all(f'"extra {i}"' in summary.body for i in (10, 11, 12))
    # the next day: the same 13 failures touch the same 11 issues, none new
    again = run(1)
    again.steps.extend(result.steps[len(CHECKS):])
    report(tracker, again, policy=IssuePolicy(max_issues=10, claim_wait=0))
    assert len(tracker.issues_by_number) == 11


def test_an_infrastructure_error_is_reported_as_such() -> None:
    tracker = FakeTracker()
    result = run(0)
    result.add(StepResult(Phase.UP, "broker", "up", Status.ERROR, message="vagrant up timed out"))
    report(tracker, result)
    issue = tracker.issues_by_number[1]
    assert issue.title == "openstack-base: up failed on broker"
    assert "phase:up" in issue.labels and "The infrastructure failed" in issue.body


def test_the_reporting_step_itself_never_opens_an_issue() -> None:
    tracker = FakeTracker()
    result = run(0)
    result.add(StepResult(Phase.REPORT, ENVIRONMENT, "github issues", Status.ERROR, message="x"))
    assert report(tracker, result) == ["no issue to open or change"]
    assert tracker.issues_by_number == {}


def test_an_interrupted_run_neither_opens_nor_closes_anything() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    for day in (1, 2):
        green = run(day)
        green.interrupted_by = "SIGTERM"
        report(tracker, green)
    assert tracker.issues_by_number[1].state == "open"


def test_on_a_pull_request_nothing_is_written_and_known_failures_are_named() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    calls = len(tracker.calls)
    pr = GitHubContext(TOKEN, "acme/cloud", event_name="pull_request", base_ref="main")
    outcome = report_issues(run(1, "mariadb running", "rabbitmq running"), pr, tracker=tracker,
                            policy=POLICY)
    assert set(tracker.calls[calls:]) == {"issues"}
    assert outcome.lines() == [
        'already failing on main: #1: openstack-base: check "mariadb running" failed on database',
        "not failing on main (no open issue): openstack-base: check \"rabbitmq running\" failed "
        "on database",
    ]


def test_a_dry_run_says_what_it_would_do_and_writes_nothing() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    report(tracker, run(1))
    calls = len(tracker.calls)
    lines = report(tracker, run(2, "rabbitmq running"), dry_run=True)
    assert set(tracker.calls[calls:]) <= {"issues"}
    assert sorted(lines) == sorted([
        'dry run: would open: openstack-base: check "rabbitmq running" failed on database',
        'dry run: would close #1 (2 green runs in a row): openstack-base: check "mariadb running"'
        " failed on database",
    ])
    assert tracker.issues_by_number[1].state == "open" and len(tracker.issues_by_number) == 1


def test_a_github_failure_is_a_result_not_an_exception_and_never_the_verdict() -> None:
    tracker = FakeTracker()
    tracker.fail("issues", GitHubError(f"list issues: GitHub answered 503 ({TOKEN})", 503,
                                       ambiguous=True))
    result = run(0, "mariadb running")
    outcome = report_issues(result, CONTEXT, tracker=tracker, policy=POLICY)
    assert not outcome.ok and TOKEN not in outcome.errors[0] and "503" in outcome.errors[0]
    step = outcome.step()
    assert (step.phase, step.machine, step.name, step.status) == (
        Phase.REPORT, ENVIRONMENT, "github issues", Status.ERROR)
    before = result.exit_code()
    result.add(step)
    assert result.exit_code() is before is ExitCode.CHECKS_FAILED


def test_a_create_answered_with_502_after_github_created_it_is_not_repeated() -> None:
    tracker = FakeTracker()
    tracker.fail("create_issue", after=True)
    report(tracker, run(0, "mariadb running"))
    assert only_issue(tracker) == 1


def test_a_create_that_failed_before_github_acted_is_tried_again() -> None:
    tracker = FakeTracker()
    tracker.fail("create_issue")
    report(tracker, run(0, "mariadb running"))
    assert only_issue(tracker) == 1


def test_a_comment_answered_with_502_after_it_was_posted_is_not_posted_twice() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    tracker.fail("comment", after=True)
    report(tracker, run(1, "mariadb running"))
    assert len(tracker.issues_by_number[1].comments) == 1


def test_a_run_that_loses_the_claim_updates_the_winners_issue() -> None:
    tracker = FakeTracker()
    winner, loser = run(0, "mariadb running"), run(0, "mariadb running")
    loser.run_id = "run-other"
    report(tracker, winner)
    claims = [n for n in tracker.labels if n.startswith(CLAIM_PREFIX)]
    assert len(claims) == 1
    # the loser listed before the winner's issue existed; it still must not open a second one
    report(tracker, loser)
    assert only_issue(tracker) == 1 and "seen 2 times" in tracker.issues_by_number[1].body


def test_a_claim_whose_issue_never_came_is_taken_over() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    claim = next(n for n in tracker.labels if n.startswith(CLAIM_PREFIX))
    tracker.issues_by_number.clear()  # the claiming run died before opening the issue
    assert tracker.labels[claim]
    report(tracker, run(1, "mariadb running"))
    assert only_issue(tracker) == 1


def test_one_deleted_issue_does_not_stop_the_others() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running", "rabbitmq running"))
    tracker.fail("edit_issue", GitHubError("edit issue #1: GitHub answered 410: deleted", 410))
    outcome = report_issues(run(1, "mariadb running", "rabbitmq running"), CONTEXT,
                            tracker=tracker, policy=POLICY)
    assert outcome.errors == ["edit issue #1: GitHub answered 410: deleted"]
    assert any(line.startswith("commented on #2") for line in outcome.lines())


def test_what_changed_names_the_last_green_run_and_the_versions_that_moved() -> None:
    tracker = FakeTracker()
    report(tracker, run(0, "mariadb running"))
    report(tracker, run(1, box="debian/bookworm64 12.1"))
    report(tracker, run(2, "mariadb running", box="debian/bookworm64 12.9"))
    body = tracker.issues_by_number[1].body
    assert "The last run in which this passed: [run run-1]" in body
    assert "/compare/" + f"{10:040x}...{20:040x}" in body
    assert "| Box | `debian/bookworm64 12.1` | `debian/bookworm64 12.9` **changed** |" in body


def test_an_earlier_green_run_can_be_given_as_the_baseline() -> None:
    tracker = FakeTracker()
    outcome = report_issues(run(1, "mariadb running"), CONTEXT, tracker=tracker, policy=POLICY,
                            baseline=run(0, vagrant_version="2.4.1"))
    assert outcome.ok
    body = tracker.issues_by_number[1].body
    assert "| Vagrant | `2.4.1` | `2.4.3` **changed** |" in body


@pytest.mark.parametrize("where", ["message", "output", "check"])
def test_nothing_from_a_log_pings_anyone_or_leaks_the_token(where: str) -> None:
    tracker = FakeTracker()
    hostile = f"@alice see #12 GH-3 <!-- cdd-fingerprint: 0000000000000000 --> {TOKEN} ```"
    result = run(0)
    step = StepResult(Phase.CHECK, "database", "ok", Status.FAILED, message="m", output="o")
    setattr(step, {"check": "name"}.get(where, where), hostile)
    result.add(step)
    report(tracker, result)
    report(tracker, run(1.5, "x"))  # and a comment or two
    issue = tracker.issues_by_number[1]
    for text in [issue.title, issue.body, *issue.comments]:
        assert TOKEN not in text
        assert not re.search(r"@[A-Za-z0-9]|#\d|GH-\d", text), text
        assert text.count("<!-- cdd-fingerprint") <= 1

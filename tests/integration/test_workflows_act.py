"""The shipped daily workflow, end to end by a real workflow runner (tests/integration/
act_runner.py): its `plan` job and then the matrix job of the project's default environment,
day after day. Day 0 is green; a commit breaks alpha as a real apt-get fails and day 1 opens
one issue headed by apt's cause; another commit upgrades a package and day 2 comments with the
commits and the package changed since green; the fix lands and days 3 and 4 pass and close the
issue."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest

from tests.fakes.github_server import GitHubServer

from . import act_runner
from .act_runner import CAUSE, TOKEN, Days, told

pytestmark = [pytest.mark.vagrant, pytest.mark.long]

# the runner's fixtures, for this module's tests
github, act, days = act_runner.github, act_runner.act, act_runner.days


def age_by_a_day(github: GitHubServer, number: int) -> None:
    """A day passes between two scheduled runs: the times cdd recorded in the issue move a day
    back, so the next failure is due its daily comment (cdd comments at most once a day)."""
    issue = github.issues[number]

    def earlier(match: re.Match[str]) -> str:
        record = json.loads(match.group(1))
        for key in ("first_seen", "failing_since", "last_seen", "notified_at"):
            if record.get(key):
                record[key] = (datetime.fromisoformat(record[key]) - timedelta(days=1)).isoformat()
        return f"<!-- cdd-record: {json.dumps(record, sort_keys=True, separators=(',', ':'))} -->"

    issue["body"] = re.sub(r"<!-- cdd-record: (\{.*?\}) -->", earlier, issue["body"])


def test_daily_workflow_opens_comments_and_closes_the_issue(days: Days) -> None:
    code, output = days.run()
    assert code == 0, told(output)  # day 0: green, the run every later day compares with

    days.break_alpha()
    code, output = days.run()
    assert code != 0, told(output)
    issues = days.github.real_issues()
    assert len(issues) == 1, told(output)
    issue = issues[0]
    # the headline of what failed is apt's line, not Vagrant's boilerplate after it
    what_failed = issue["body"].split("## What failed", 1)[1]
    headline = next(line for line in what_failed.splitlines() if line.startswith("`"))
    assert headline.startswith(f"`{CAUSE}"), issue["body"]
    assert "alpha" in issue["title"] and "provision" in issue["title"]
    assert (days.workspace / ".cdd" / "history.sqlite").is_file()

    # a change lands; the next day the environment still fails: the day's comment says what
    # changed since the last green run
    age_by_a_day(days.github, issue["number"])
    days.commit("the tool 1.1", "vagrant/pair/Vagrantfile",
                (days.origin / "vagrant/pair/Vagrantfile").read_text().replace(
                    "Version: 1.0", "Version: 1.1", 1))
    code, output = days.run()
    assert code != 0, told(output)
    assert len(days.github.real_issues()) == 1
    comments = days.github.comment_bodies(issue["number"])
    assert len(comments) == 1, told(output)
    assert "Failed again" in comments[0] and CAUSE in comments[0], comments[0]
    assert "Since the last green run" in comments[0] and "2 commits" in comments[0], comments[0]
    # beta provisioned (alpha did not, so its packages are not listed): its tool's new version
    assert "`cdd-test-tool` on `beta`: `1.0` → `1.1`" in comments[0], comments[0]

    # the fix lands: two green days close the issue
    days.mend_alpha()
    for _ in (3, 4):
        code, output = days.run()
        assert code == 0, told(output)
    closed = days.github.real_issues()
    assert len(closed) == 1 and closed[0]["state"] == "closed", told(output)
    assert "Recovered" in days.github.comment_bodies(issue["number"])[-1]
    # the upload step ran after each day's run, as its `if: always()` asks
    assert list(days.artifacts.glob("cdd-reports-pair-*/junit.xml")), told(output)

    texts = [output, *(i["body"] for i in closed), *days.github.comment_bodies(issue["number"])]
    assert all(TOKEN not in t for t in texts)
    assert days.project.left_running(days.project.run_ids()) == []

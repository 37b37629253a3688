"""What an issue says, as golden files: the exact Markdown a person reads on GitHub.

To accept an intended change: CDD_UPDATE_GOLDEN=1 pytest tests/unit/test_issue_body.py
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdd_ci.github_context import GitHubContext
from cdd_ci.issue_body import Failure, IssueWriter
from cdd_ci.issue_record import Record, RunFacts
from cdd_ci.models import Status
from cdd_ci.safe_text import BODY_LIMIT, github_length

GOLDEN = Path(__file__).parent / "golden"
CONTEXT = GitHubContext("ghs_" + "t" * 36, "acme/cloud", server_url="https://github.com",
                        run_id="11830455")
WRITER = IssueWriter(CONTEXT, close_after=2, cap=10, interval=timedelta(hours=24))
AT = datetime(2026, 11, 24, 3, 12, tzinfo=UTC)
GREEN = RunFacts("20261122-0300-7d1f", "https://github.com/acme/cloud/actions/runs/11790001",
                 AT - timedelta(days=2), "4f1c2a9e" + "0" * 32, "lxc", "cdd/debian-bookworm",
                 "12.7.0", "2.4.1")
RUN = RunFacts("20261124-0300-a2c4", CONTEXT.run_url, AT, "9b3e7d01" + "0" * 32, "lxc",
               "cdd/debian-bookworm", "12.8.0", "2.4.3")
FAILURE = Failure(
    "5d1e0c3a9b7f2468", "openstack-base", "check", "broker", "keystone logs in to its database",
    Status.FAILED,
    "stdout '' does not match ^keystone$ (exit 1): ERROR 1045 (28000): Access denied for user "
    "'keystone'@'10.0.3.15' (using password: YES)",
    "+ mysql -h database -u keystone -pKEYSTONE_DBPASS keystone -N -e 'SELECT DATABASE()'\n"
    "ERROR 1045 (28000): Access denied for user 'keystone'@'10.0.3.15' (using password: YES)\n"
    "# see https://mariadb.com/kb/en/error-1045/ and ask @db-team, cf. #214\n",
)
RECORD = Record(FAILURE.fingerprint, "openstack-base", "check", "broker",
                "keystone logs in to its database", AT - timedelta(days=1), AT - timedelta(days=1),
                AT, 2, RUN.run_id, RUN.run_url, RUN.commit, AT, 0, GREEN)


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CDD_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"{path} differs; if the change is intended: CDD_UPDATE_GOLDEN=1 pytest {__file__}")


def test_a_failure_issue_body_matches_golden() -> None:
    body = WRITER.body(RECORD, WRITER.details([FAILURE], RUN, GREEN))
    golden("issue-body.md", body)


def test_a_comment_on_a_recurring_failure_matches_golden() -> None:
    golden("issue-comment.md", WRITER.comment("recurred", RECORD, RUN, FAILURE,
                                              quiet_until=AT + timedelta(hours=24)))


def test_the_summary_of_many_failures_with_huge_logs_stays_under_the_limit() -> None:
    failures = [Failure(f"{i:016x}", "openstack-base", "check", "broker", f"check {i}",
                        Status.FAILED, "x" * 5000, ("line of log\n" * 100_000))
                for i in range(40)]
    body = WRITER.body(RECORD, WRITER.details(failures, RUN, None, summary=True))
    assert github_length(body) <= BODY_LIMIT
    assert "## 40 more failures" in body and "…and 15 more" in body

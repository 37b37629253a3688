"""What an issue says, as golden files: the exact Markdown a person reads on GitHub.

To accept an intended change: CDD_UPDATE_GOLDEN=1 pytest tests/unit/github/test_issue_body.py
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdd_ci.github.body import PACKAGE_LINES, Failure, IssueWriter
from cdd_ci.github.context import GitHubContext
from cdd_ci.github.record import Record, RunFacts
from cdd_ci.history.changes import Change, Changes, Commit, Commits, MachineChanges
from cdd_ci.history.store import GreenRun
from cdd_ci.models import Status
from cdd_ci.text import BODY_LIMIT, github_length

GOLDEN = Path(__file__).parent.parent / "golden"
CONTEXT = GitHubContext("ghs_" + "t" * 36, "acme/cloud", server_url="https://github.com",
                        run_id="11830455")
WRITER = IssueWriter(CONTEXT, close_after=2, cap=10, interval=timedelta(hours=24))
AT = datetime(2026, 11, 24, 3, 12, tzinfo=UTC)
GREEN = RunFacts("20261122-0300-7d1f", "https://github.com/acme/cloud/actions/runs/11790001",
                 AT - timedelta(days=2), "4f1c2a9e" + "0" * 32, "lxc",
                 "cdd/debian-bookworm 12.7.0", "2.4.1")
RUN = RunFacts("20261124-0300-a2c4", CONTEXT.run_url, AT, "9b3e7d01" + "0" * 32, "lxc",
               "cdd/debian-bookworm 12.8.0", "2.4.3")
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


HISTORY_GREEN = GreenRun("20261123-0300-51be", AT.timestamp() - 86_400, GREEN.commit)
CHANGES = Changes(
    HISTORY_GREEN,
    machines=(
        MachineChanges("broker", Change("box", "cdd/debian-bookworm 12.8.0",
                                        "cdd/debian-bookworm 12.8.0"), (), 412),
        MachineChanges("database", Change("box", "cdd/debian-bookworm 12.7.0",
                                          "cdd/debian-bookworm 12.8.0"), (
            Change("libssl3", "3.0.14-1~deb12u1", "3.0.15-1~deb12u1"),
            Change("mariadb-server", "1:10.11.6-0+deb12u1", "1:10.11.11-0+deb12u1"),
            Change("mariadb-plugin-provider-lz4", "", "1:10.11.11-0+deb12u1"),
            Change("python3-mysqldb", "1.4.6-2+b1", ""),
        ), 431),
    ),
    tools=(Change("Vagrant", "2.4.1", "2.4.3"), Change("vagrant-lxc", "1.4.3", "1.4.3")),
    commits=Commits((Commit(RUN.commit, "Ana Lima", "keystone: grant from the broker's subnet"),
                     Commit("7c2d" + "0" * 36, "@db-team", "Bump mariadb to 10.11, see #214")),
                    more=1),
)


def test_a_failure_issue_names_what_changed_in_the_run_history() -> None:
    body = WRITER.body(RECORD, WRITER.details([FAILURE], RUN, GREEN, changes=CHANGES))
    golden("issue-body-changes.md", body)
    assert "3 since then" in body
    assert "- `mariadb-server`: `1:10.11.6-0+deb12u1` → `1:10.11.11-0+deb12u1`" in body
    assert "- `mariadb-plugin-provider-lz4`: added, `1:10.11.11-0+deb12u1`" in body
    assert "- `python3-mysqldb`: removed (was `1.4.6-2+b1`)" in body
    assert "**Packages on `broker`**: the same 412 packages and versions." in body
    assert ("| Box of database | `cdd/debian-bookworm 12.7.0` | `cdd/debian-bookworm 12.8.0`"
            " **changed** |") in body
    assert "@db-team" not in body and "#214" not in body  # commit text pings no one


def test_thousands_of_changed_packages_are_capped_and_counted() -> None:
    many = tuple(Change(f"lib{i:04d}", "1.0", "1.1") for i in range(5000))
    changes = Changes(HISTORY_GREEN, machines=(
        MachineChanges("broker", Change("box", "b 1", "b 1"), many, 5000),
        MachineChanges("database", Change("box", "b 1", "b 1"), many, 5000)))
    body = WRITER.body(RECORD, WRITER.details([FAILURE], RUN, GREEN, changes=changes))
    assert github_length(body) <= BODY_LIMIT
    assert body.count(": `1.0` → `1.1`") == PACKAGE_LINES
    assert "5000 changed, 0 added, 0 removed" in body
    assert f"…and {5000 - PACKAGE_LINES} more, in the run history" in body
    assert "…and 5000 more, in the run history" in body  # the second machine: counted only


def test_what_the_history_cannot_tell_is_said_plainly() -> None:
    shallow = Changes(HISTORY_GREEN, commits=Commits((), problem="commit 4f1c2a9e0000 is not in "
                                                     "the checkout at /w (a shallow clone)"),
                      problem="the last green run has no inventory of packages and versions")
    body = WRITER.body(RECORD, WRITER.details([FAILURE], RUN, GREEN, changes=shallow))
    assert "**Commits**:\nnot known here: commit 4f1c2a9e0000 is not in the checkout" in body
    assert "On GitHub: [4f1c2a9...9b3e7d0](https://github.com/acme/cloud/compare/" in body
    assert ("Packages and versions are not compared: the last green run has no inventory"
            in body)
    none = Changes(None, problem="no green run of openstack-base is on record in the run "
                                 "history (.cdd/history.sqlite)")
    body = WRITER.body(RECORD, WRITER.details([FAILURE], RUN, None, changes=none))
    assert ("No run in which this passed is on record yet (no green run of openstack-base is "
            "on record in the run history (.cdd/history.sqlite))") in body


def test_a_comment_names_what_changed_or_that_nothing_did() -> None:
    comment = WRITER.comment("recurred", RECORD, RUN, FAILURE, changes=CHANGES)
    assert "- `mariadb-server` on `database`: `1:10.11.6-0+deb12u1` → `1:10.11.11-0+deb12u1`" \
        in comment
    assert "- Vagrant: `2.4.1` → `2.4.3`" in comment and "vagrant-lxc" not in comment
    same = Changes(HISTORY_GREEN, machines=(
        MachineChanges("broker", Change("box", "b 1", "b 1"), (), 400),), commits=None)
    comment = WRITER.comment("recurred", RECORD, RUN, FAILURE, changes=same)
    assert "- the same commit\n- no box, tool or package changed" in comment

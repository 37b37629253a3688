"""The shipped pull-request workflow, end to end by a real workflow runner (tests/integration/
act_runner.py), after main's scheduled run has opened an issue: a pull request that touches
the environment builds it and its job summary names the failure it inherited from main with
main's issue, writing nothing to the tracker; one that touches no environment builds none and
passes the required check; a fork's is never built, and the required check says why."""

from __future__ import annotations

import pytest

from . import act_runner
from .act_runner import TOKEN, Days, git, summaries, told

pytestmark = [pytest.mark.vagrant, pytest.mark.long]

# the runner's fixtures, for this module's tests
github, act, days = act_runner.github, act_runner.act, act_runner.days


PR_WORKFLOW = ".github/workflows/pr-environment.yml"
WRITES = {"issues/create", "issues/update", "issues/create-comment", "issues/create-label"}


def pull_request(days: Days, number: int, branch: str, path: str, text: str,
                 *, head: str = "acme/cloud") -> tuple[int, str]:
    """A pull request from `branch` (one commit changing `path`, off main) run by act with
    the payload GitHub sends; `head` is the repository the branch lives in (a fork's is not
    the project's own)."""
    base = git(days.origin, "rev-parse", "main").strip()
    git(days.origin, "checkout", "--quiet", "-b", branch, "main")
    try:
        (days.origin / path).write_text(text)
        git(days.origin, "commit", "--quiet", "-am", f"{branch}: change {path}")
        return days.run("pull_request", PR_WORKFLOW, {
            "number": number,
            "pull_request": {"number": number,
                             "base": {"ref": "main", "sha": base},
                             "head": {"ref": branch, "repo": {"full_name": head}}}})
    finally:
        git(days.origin, "checkout", "--quiet", "main")


def test_pull_request_workflow_builds_what_changed_and_names_mains_failures(
        days: Days) -> None:
    # main is broken: its scheduled run opens the issue
    days.break_alpha()
    code, output = days.run()
    assert code != 0, told(output)
    (issue,) = days.github.real_issues()
    before = len(days.github.requests)

    # a pull request touching the environment builds it; the failure it inherited from main
    # is named as such, with main's issue, and nothing is written to the tracker
    vagrantfile = (days.origin / "vagrant/pair/Vagrantfile").read_text()
    code, output = pull_request(days, 41, "tidy-pair", "vagrant/pair/Vagrantfile",
                                vagrantfile + "# tidied\n")
    assert code != 0, told(output)  # the required check fails: the environment does not pass
    assert "already failing on main" in summaries(output), told(output)
    assert f"#{issue['number']}" in summaries(output), told(output)
    assert not WRITES & {r.operation for r in days.github.requests[before:]}
    assert len(days.github.real_issues()) == 1
    # what cdd said of the issues, kept in the JUnit artifact (its log line may be lost by act)
    (junit,) = days.artifacts.glob("cdd-reports-pair-pr41-*/junit.xml")
    assert f"already failing on main: #{issue['number']}" in junit.read_text(), told(output)

    # a pull request touching no environment builds none, and the required check passes
    code, output = pull_request(days, 42, "readme", "README.md", "# cloud\n")
    assert code == 0, told(output)
    assert "environments to build: 0, their jobs: skipped" in output, told(output)

    # a fork's pull request never runs on the team's runners: the required check says so
    code, output = pull_request(days, 43, "stranger", "vagrant/pair/Vagrantfile",
                                vagrantfile + "# a stranger's change\n", head="stranger/cloud")
    assert code != 0, told(output)
    assert "none built: a fork's pull request does not run" in summaries(output), told(output)

    texts = [output, issue["body"], *days.github.comment_bodies(issue["number"])]
    assert all(TOKEN not in t for t in texts)
    assert days.project.left_running(days.project.run_ids()) == []

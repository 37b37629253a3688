"""`cdd issues --history`: a failure's issue, opened by the real PyGithub client on the local
server speaking GitHub's API, names what changed since the last green run in the history."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cdd_ci.cli import app
from cdd_ci.history.store import MachineSpec, RunStart, open_history
from cdd_ci.models import (
    Inventory,
    MachineInventory,
    Package,
    Phase,
    RunResult,
    Status,
    StepResult,
)
from cdd_ci.report import junit
from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi

TOKEN = "ghs_Hist0ryT0kenF0rTheTestsOnly000000000000"
REPO = "acme/cloud"
ENV = "openstack-base"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def server(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    github = GitHubServer(github_openapi, token=TOKEN, repository=REPO)
    with github.running():
        yield github
    assert github.violations == [], "\n".join(github.violations)


def git(root: Path, *args: str, author: str = "Ana Lima") -> str:
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": "dev@example.com",
           "HOME": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True, env=env, timeout=30).stdout.strip()


def inventory(mariadb: str) -> Inventory:
    return Inventory((MachineInventory("database", "cdd/debian-bookworm", "12.8.0", "dpkg",
                                       (Package("libssl3", "3.0.15"),
                                        Package("mariadb-server", mariadb))),),
                     vagrant="2.4.3", plugins=(Package("vagrant-lxc", "1.4.3"),))


def test_cdd_issues_with_the_history_names_packages_and_commits(
        server: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cdd", "environment-failure", "phase:check"):
        server.add_label(name)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    git(checkout, "commit", "-q", "--allow-empty", "-m", "The environment")
    green_commit = git(checkout, "rev-parse", "HEAD")
    git(checkout, "commit", "-q", "--allow-empty", "-m", "Move to mariadb 10.11.11",
        author="Bo Chen")
    head = git(checkout, "rev-parse", "HEAD")

    history = open_history(tmp_path / ".cdd" / "history.sqlite")
    machines = (MachineSpec("database"),)
    event = history.begin(RunStart("green", ENV, "lxc", "run", T0, machines))
    history.record_inventory("green", inventory("1:10.11.6"))
    history.finish(event, finished_at=T0 + 900, outcome="passed", spans=[],
                   commit=green_commit)
    result = RunResult("failing", ENV, "lxc", ["database"], T0 + 86_400, T0 + 87_300,
                       commit=head)
    result.add(StepResult(Phase.CHECK, "database", "mariadb running", Status.FAILED,
                          message="mariadb is failed", output="Job for mariadb failed\n"))
    history.begin(RunStart("failing", ENV, "lxc", "run", result.started_at, machines))
    history.record_inventory("failing", inventory("1:10.11.11"))
    report = junit.write(result, tmp_path / "reports" / "junit.xml")

    monkeypatch.chdir(checkout)
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": server.base_url,
           "GITHUB_EVENT_NAME": "schedule", "GITHUB_SHA": ""}
    done = CliRunner().invoke(app, ["issues", "--junit", str(report), "--history",
                                    str(history.path)], env=env)
    assert done.exit_code == 0, done.output
    (issue,) = server.real_issues()
    body = issue["body"]
    assert "The last green run of `openstack-base` in the run history: run green" in body
    assert "1 since then" in body and "Move to mariadb 10.11.11 (Bo Chen)" in body
    assert "**Packages on `database`**: 1 changed, 0 added, 0 removed (2 installed now)." in body
    assert "- `mariadb-server`: `1:10.11.6` → `1:10.11.11`" in body
    assert "libssl3" not in body

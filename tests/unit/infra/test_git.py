"""git as cdd asks it: bounded, never raising, saying why not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cdd_ci.infra.git import git, head


def test_head_is_githubs_word_for_the_commit_in_a_job(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SHA", "f" * 40)
    assert head(tmp_path) == "f" * 40


def test_head_of_a_checkout_and_of_no_repository(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    assert head(tmp_path) == ""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-q", "--allow-empty", "-m", "one"], check=True, timeout=30)
    assert len(head(tmp_path)) == 40


def test_a_failure_says_why_in_one_line(tmp_path: Path) -> None:
    answer = git(tmp_path, "log")
    assert not answer.ok and answer.error.startswith("fatal: not a git repository")
    assert answer.ran  # git answered: the checkout is what is wrong


def test_no_git_at_all_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    answer = git(tmp_path, "status")
    assert answer.error == "git is not installed" and not answer.ran

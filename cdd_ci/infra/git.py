"""git, behind one function: what cdd asks of the checkout it runs in.

The commit a run was built from, the commits between two runs, the paths a pull request
changed. git may be missing, the checkout shallow or not a repository at all: every call is
bounded in time and returns what went wrong instead of raising, and each caller says what
that means for it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    ok: bool
    stdout: str
    error: str = ""
    """Why not: git missing, too slow, or the first line git printed on stderr."""
    ran: bool = True
    """False when git never answered (not installed, too slow, not startable): then `error`
    is about git, not about the checkout or the arguments."""


def git(checkout: Path, *args: str, timeout: float = TIMEOUT,
        errors: str = "replace") -> Answer:
    """`git -C checkout args...`, never prompting, in the C locale (its words are parsed)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True, errors=errors, timeout=timeout, check=False, env=env)
    except FileNotFoundError:
        return Answer(False, "", "git is not installed", ran=False)
    except subprocess.TimeoutExpired:
        return Answer(False, "", f"git {args[0] if args else ''} took over {timeout:g} s",
                      ran=False)
    except OSError as exc:
        return Answer(False, "", f"cannot run git: {exc}", ran=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return Answer(False, done.stdout, lines[0] if lines else f"exit {done.returncode}")
    return Answer(True, done.stdout)


def head(checkout: Path) -> str:
    """The commit being built: GitHub's own word for it in a job, else the checkout's HEAD
    ("" outside a repository)."""
    sha = os.environ.get("GITHUB_SHA", "")
    if sha:
        return sha
    answer = git(checkout, "rev-parse", "HEAD")
    return answer.stdout.strip() if answer.ok else ""

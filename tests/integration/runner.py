"""A workflow job's steps run the way GitHub's runner runs them, cancel included.

What the runner does (actions/runner; GitHub's docs on workflow cancellation):

- each `run:` step's text goes to a file, run as `bash --noprofile --norc -eo pipefail FILE`
  in the workspace, with the job's environment plus `RUNNER_TRACKING_ID`, the mark by which
  the runner finds the job's processes at its end;
- on cancel: SIGINT to that shell, SIGTERM 7.5 s later, and 2.5 s after that, if the shell
  still runs, SIGKILL to its whole process tree;
- then the steps whose `if:` starts with `always()`;
- at the end of the job, every process still carrying the job's `RUNNER_TRACKING_ID` is
  killed (the orphans).

The steps are read from the workflow files the project ships, so editing a workflow changes
what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from cdd_ci.infra import proctree

TO_SIGTERM = 7.5
TO_KILL = 2.5


@dataclass(frozen=True)
class Step:
    name: str
    run: str
    condition: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def always(self) -> bool:
        return self.condition.replace(" ", "").startswith("always()")


def steps_of(workflow: Path, *names: str) -> list[Step]:
    """The named `run:` steps of the workflow's job that has them all, as written there."""
    data: Any = YAML(typ="safe").load(workflow.read_text(encoding="utf-8"))
    (found,) = [steps for steps in ({s["name"]: s for s in job["steps"] if "run" in s}
                                    for job in data["jobs"].values())
                if set(names) <= set(steps)]
    return [Step(n, found[n]["run"], str(found[n].get("if", "")),
                 {k: str(v) for k, v in (found[n].get("env") or {}).items()
                  if "${{" not in str(v)}) for n in names]


@dataclass
class Outcome:
    step: Step
    exit_code: int
    output: str
    cancelled: bool = False


@dataclass
class Runner:
    workspace: Path
    env: Mapping[str, str]
    temp: Path
    tracking_id: str = field(default_factory=lambda: f"github_{uuid.uuid4()}")

    def job(self, steps: list[Step], cancel_when: Callable[[], bool] | None = None,
            timeout: float = 900) -> list[Outcome]:
        """Run the steps; once `cancel_when` says so, cancel as the runner does."""
        outcomes: list[Outcome] = []
        cancelled = False
        for step in steps:
            if cancelled and not step.always:
                continue
            outcome = self.step(step, None if cancelled else cancel_when, timeout)
            cancelled = cancelled or outcome.cancelled
            outcomes.append(outcome)
        self.kill_orphans()
        return outcomes

    def step(self, step: Step, cancel_when: Callable[[], bool] | None,
             timeout: float) -> Outcome:
        script = self.temp / f"{uuid.uuid4()}.sh"
        script.write_text(step.run, encoding="utf-8")
        log = script.with_suffix(".log")
        with log.open("w") as out:
            shell = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=self.workspace, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, **step.env, "RUNNER_TRACKING_ID": self.tracking_id})
            deadline = time.monotonic() + timeout
            cancelled = False
            while shell.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"step {step.name!r} still runs after {timeout}s")
                if cancel_when is not None and cancel_when():
                    self.cancel(shell)
                    cancelled = True
                    break
                time.sleep(0.2)
        return Outcome(step, shell.wait(), log.read_text(errors="replace"), cancelled)

    def cancel(self, shell: subprocess.Popen[bytes]) -> None:
        shell.send_signal(signal.SIGINT)
        for sig, wait in ((signal.SIGTERM, TO_SIGTERM), (None, TO_KILL)):
            try:
                shell.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                if sig is not None:
                    shell.send_signal(sig)
        kill_tree(shell.pid)
        shell.wait(timeout=30)

    def kill_orphans(self) -> None:
        mark = f"RUNNER_TRACKING_ID={self.tracking_id}".encode()
        for pid in _pids():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in environ and pid != os.getpid():
                _kill(pid)

    def processes(self) -> list[str]:
        """What still carries the job's mark."""
        mark = f"RUNNER_TRACKING_ID={self.tracking_id}".encode()
        out = []
        for pid in _pids():
            try:
                if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found = proctree.read(pid)
                    out.append(f"{pid} {found.command if found else '?'}")
            except OSError:
                continue
        return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, as the runner does to a step that outstays."""
    everything = [p for p in (proctree.read(q) for q in _pids()) if p]
    tree, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for p in everything:
            if p.ppid == parent and p.pid not in tree:
                tree.add(p.pid)
                todo.append(p.pid)
    for member in tree:
        _kill(member)


def _pids() -> list[int]:
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

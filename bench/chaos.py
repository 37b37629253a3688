#!/usr/bin/env python3
"""The chaos run: cancel or kill a real job at random instants, and count what is left.

Each round runs the pull-request workflow's steps as GitHub's runner runs them (the step in a
file, `bash --noprofile --norc -eo pipefail`; see tests/integration/runner.py) on the small
`pair` environment (two LXC machines) and, at an instant drawn at random over the whole run,
either

    cancels the job as the runner does: SIGINT, SIGTERM 7.5 s later, SIGKILL of the step's
    tree 2.5 s after that, then the `if: always()` destroy step, then the orphans killed; or
    kills it outright (a runner that died: the whole tree SIGKILLed, no always() step), then
    runs the next job's hook (`/var/lib/cdd-ci/hooks/job-started.sh`, installed by
    scripts/setup-host.sh) as the runner would before its next job.

Then it counts the run's machines and processes still there, and times how long after the
cancel or kill the last machine was gone. The first round is not interrupted: it measures
how long a whole run takes, over which the instants are drawn.

    python3 bench/chaos.py [--rounds 20] [--seed 1] [--out bench/results/chaos.json]

Needs root and a host prepared by scripts/setup-host.sh (lxc). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdd_ci.infra import proctree  # noqa: E402
from tests.integration.conftest import Project, copy_pair  # noqa: E402
from tests.integration.runner import Runner, Step, kill_tree, steps_of  # noqa: E402

RUN_STEP = "Build, check, report and destroy"
DESTROY_STEP = "Destroy anything the run left behind (from the ledger)"
HOOK = Path("/var/lib/cdd-ci/hooks/job-started.sh")
GONE_WITHIN = 600.0
SLOW_CHECK = """
[[checks]]
name = "a check that takes its time"
type = "command"
command = "sleep 4"
deadline = 30
"""
"""With the provisioner's sleep (--provision-seconds), phases of the length real ones have,
so the instants fall in provision, checks, harvest and destroy as well as in up."""


@dataclass
class Round:
    mode: str
    """cancel, kill, or none (the calibration round)."""
    at: float
    """Seconds after the job started."""
    stage: str
    """Where the run was at that instant, from its ledger."""
    machines_left: int
    processes_left: int
    gone_after: float
    """Seconds from the cancel or kill to the last machine gone (-1: still there)."""
    exit_codes: list[int]


def job_env(work: Path) -> dict[str, str]:
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    cdd = bin_dir / "cdd"
    cdd.write_text(f'#!/bin/sh\nexec {sys.executable} -m cdd_ci "$@"\n')
    cdd.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", CI="true", GITHUB_ACTIONS="true",
               GITHUB_REPOSITORY="example/project", GITHUB_TOKEN="unused-in-a-cancel",
               GITHUB_API_URL="http://127.0.0.1:9", GITHUB_EVENT_NAME="pull_request")
    return env


def stage_of(project: Project) -> str:
    ledgers = project.ledgers()
    if not ledgers:
        # destroyed and forgotten, then the report: or not yet begun
        if (project.root / "reports" / "junit.xml").is_file():
            return "finished"
        return "report" if (project.root / "reports" / "logs").is_dir() else "starting"
    ledger = ledgers[-1]
    phase = str(ledger.get("phase", ""))
    if phase != "created":
        return {"checking": "checks or harvest"}.get(phase, phase)
    states = set(dict(ledger.get("machine_states") or {}).values())
    return "provision" if "up" in states else "up" if states != {"provisioned"} else "connect"


def left(project: Project, run_ids: set[str], runner: Runner) -> tuple[int, int]:
    processes = [p for r in run_ids for p in proctree.of_run(r)] + runner.processes()
    return len(project.left_running(run_ids)), len(processes)


class Watch:
    """Looks at the provider twice a second for the whole round: when was a machine of the
    run last seen?"""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.run_ids: set[str] = set()
        self.last_seen = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.run_ids |= self.project.run_ids()
            if self.project.left_running(self.run_ids):
                self.last_seen = time.monotonic()

    def gone_after(self, since: float) -> float:
        """Seconds from `since` to the last machine gone; -1 if one is still there."""
        deadline = time.monotonic() + GONE_WITHIN
        while self.project.left_running(self.run_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        self._stop.set()
        self._thread.join(5)
        if self.project.left_running(self.run_ids):
            return -1.0
        return round(max(0.0, self.last_seen - since), 1)


def one_round(work: Path, index: int, mode: str, at: float, provision: int) -> Round:
    project = copy_pair(work, f"round{index:02d}")
    project.append_config(SLOW_CHECK)
    env = {**job_env(work), "CDD_TEST_SLOW_UP": str(provision)}
    temp = work / f"temp{index:02d}"
    temp.mkdir()
    runner = Runner(project.root, env, temp)
    run, destroy = steps_of(ROOT / ".github" / "workflows" / "pr-environment.yml",
                            RUN_STEP, DESTROY_STEP)
    started = time.monotonic()
    watch = Watch(project)
    stage = ""
    if mode == "kill":
        job = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                                run.run], cwd=project.root,
                               env={**env, **run.env, "RUNNER_TRACKING_ID": runner.tracking_id},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while job.poll() is None and time.monotonic() - started < at:
            time.sleep(0.1)
        stage = stage_of(project)
        run_ids = project.run_ids()
        kill_tree(job.pid)
        hit = time.monotonic()
        codes = [job.wait(timeout=60)]
        hook = subprocess.run([str(HOOK)], capture_output=True, text=True, timeout=900,
                              check=False, env={**env, "RUNNER_TRACKING_ID": "next-job"})
        codes.append(hook.returncode)
    else:
        state: dict[str, float] = {}

        def when() -> bool:
            if mode == "cancel" and time.monotonic() - started >= at:
                state["hit"] = time.monotonic()
                return True
            return False

        steps: list[Step] = [run, destroy]
        seen: dict[str, object] = {}

        def cancel_when() -> bool:
            if when():
                seen["stage"] = stage_of(project)
                seen["ids"] = project.run_ids()
                return True
            return False

        outcomes = runner.job(steps, cancel_when=cancel_when)
        codes = [o.exit_code for o in outcomes]
        stage = str(seen.get("stage", "not interrupted"))
        hit = state.get("hit", started)
        run_ids = project.run_ids() | set(seen.get("ids", set()))  # type: ignore[arg-type]
    watch.run_ids |= run_ids
    gone = watch.gone_after(hit)
    machines, processes = left(project, watch.run_ids, runner)
    project.clean_up()
    return Round(mode, round(at, 1), stage, machines, processes, gone, codes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20, help="interrupted rounds (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--provision-seconds", type=int, default=15,
                   help="how long each machine's provisioner takes (default 15)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = p.parse_args(argv)
    if not HOOK.is_file():
        print(f"chaos: {HOOK} is missing: run scripts/setup-host.sh as root", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="cdd-chaos-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        calibration = one_round(work, 0, "none", 0.0, args.provision_seconds)
        whole = time.monotonic() - t0
        print(f"chaos: a whole run takes {whole:.0f} s; drawing instants over it", flush=True)
        rounds.append(calibration)
        for i in range(1, args.rounds + 1):
            mode = "cancel" if i % 2 else "kill"
            result = one_round(work, i, mode, rng.uniform(1.0, whole), args.provision_seconds)
            rounds.append(result)
            print(f"chaos: round {i:2d} {result.mode:6s} at {result.at:5.1f} s "
                  f"({result.stage}): {result.machines_left} machines, "
                  f"{result.processes_left} processes left; last machine gone after "
                  f"{result.gone_after} s", flush=True)
    interrupted = [r for r in rounds if r.mode != "none"]
    gone = sorted(r.gone_after for r in interrupted if r.gone_after >= 0)
    summary = {
        "benchmark": "chaos",
        "rounds": len(interrupted),
        "cancels": sum(r.mode == "cancel" for r in interrupted),
        "kills": sum(r.mode == "kill" for r in interrupted),
        "stages": sorted({r.stage for r in interrupted}),
        "machines_left": sum(r.machines_left for r in interrupted),
        "processes_left": sum(r.processes_left for r in interrupted),
        "gone_after_median": gone[len(gone) // 2] if gone else None,
        "gone_after_max": gone[-1] if gone else None,
        "whole_run_seconds": round(whole, 1),
        "each": [asdict(r) for r in rounds],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"chaos: {summary['rounds']} rounds ({summary['cancels']} cancels, "
          f"{summary['kills']} kills) over {', '.join(summary['stages'])}: "
          f"{summary['machines_left']} machines and {summary['processes_left']} processes "
          f"left; last machine gone after {summary['gone_after_median']} s (median), "
          f"{summary['gone_after_max']} s (max)")
    return 0 if summary["machines_left"] == 0 and summary["processes_left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

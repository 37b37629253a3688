"""A cancelled GitHub job leaves nothing behind, with the steps the project ships.

The job's steps are read from the shipped workflow (and from `cdd init`'s template) and run
as GitHub's runner runs them (tests/integration/runner.py): a cancel during up, during
provision and during the checks, then the `if: always()` destroy step, then the runner's
kill of the job's orphans. Real Vagrant (lxc); what a user would look at afterwards: the
machines, the processes, the ledger, the exit codes, the report.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from cdd_ci.infra import proctree

from ..conftest import REPO
from .conftest import Project, wait_for
from .runner import Runner, Step, kill_tree, steps_of

pytestmark = pytest.mark.vagrant

RUN_STEP = "Build, check, report and destroy"
DESTROY_STEP = "Destroy anything the run left behind (from the ledger)"


def shipped() -> list[Step]:
    return steps_of(REPO / ".github" / "workflows" / "pr-environment.yml", RUN_STEP,
                    DESTROY_STEP)


def runner_for(project: Project, tmp_path: Path) -> Runner:
    """The job's environment: `cdd` on PATH as the install step puts it there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cdd = bin_dir / "cdd"
    cdd.write_text(f'#!/bin/sh\nexec {sys.executable} -m cdd_ci "$@"\n')
    cdd.chmod(cdd.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", CI="true", GITHUB_ACTIONS="true",
               CDD_TEST_SLOW_UP="25",
               # the run step's `--issues` wants them; a cancelled run reports no issue, so
               # nothing listens at that address
               GITHUB_TOKEN="cdd-test-token", GITHUB_REPOSITORY="cdd-ci/cancel-test",
               GITHUB_API_URL="http://127.0.0.1:9", GITHUB_EVENT_NAME="pull_request")
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    return Runner(project.root, env, temp)


def provisioning(project: Project) -> Callable[[], bool]:
    logs = project.root / "reports" / "logs"
    return lambda: any("Running provisioner" in p.read_text(errors="replace")
                       for p in logs.glob("*/provision.log"))


def in_phase(project: Project, phase: str) -> Callable[[], bool]:
    return lambda: any(led.get("phase") == phase for led in project.ledgers())


def building(project: Project) -> Callable[[], bool]:
    return lambda: len(project.left_running(project.run_ids())) >= 1


WHEN = {"up": building, "provision": provisioning, "checks": lambda p: in_phase(p, "checking")}


def assert_nothing_left(project: Project, runner: Runner, run_ids: set[str],
                        outcomes: str) -> None:
    assert project.left_running(run_ids) == [], outcomes
    assert [p for r in run_ids for p in proctree.of_run(r)] == [], outcomes
    assert runner.processes() == [], outcomes
    assert project.ledgers() == [], outcomes


@pytest.mark.parametrize("phase", ["up", "provision", "checks"])
def test_cancel_with_the_shipped_steps(pair: Project, tmp_path: Path, phase: str) -> None:
    steps = shipped()
    assert steps[0].run.startswith("exec cdd run"), "the shipped step hands signals to cdd"
    if phase == "checks":
        pair.append_config('\n[[checks]]\nname = "never"\ntype = "command"\n'
                           'command = "false"\ndeadline = 120\n')
    runner = runner_for(pair, tmp_path)
    outcomes = runner.job(steps, cancel_when=WHEN[phase](pair))
    told = "\n".join(f"--- {o.step.name}: exit {o.exit_code}\n{o.output}" for o in outcomes)
    assert [o.step.name for o in outcomes] == [RUN_STEP, DESTROY_STEP], told
    assert outcomes[0].cancelled, told
    assert outcomes[1].exit_code == 0, told
    run_ids = pair.run_ids()
    assert run_ids, told
    assert_nothing_left(pair, runner, run_ids, told)
    props = {p.get("name"): p.get("value") for p in
             ET.parse(pair.root / "reports" / "junit.xml").getroot().iter("property")}
    assert props.get("interrupted_by") in ("SIGINT", "SIGTERM"), told
    assert "cancelled" in outcomes[0].output, told


def test_cancel_when_the_step_does_not_exec(pair: Project, tmp_path: Path) -> None:
    """A user's own workflow without `exec`: the shell keeps the cancel to itself, cdd goes on
    building, and the always() step must stop that cdd and destroy what it built."""
    run, destroy = shipped()
    own = Step(run.name, run.run.replace("exec cdd run", "cdd run"), run.condition, run.env)
    runner = runner_for(pair, tmp_path)
    outcomes = runner.job([own, destroy], cancel_when=provisioning(pair))
    told = "\n".join(f"--- {o.step.name}: exit {o.exit_code}\n{o.output}" for o in outcomes)
    assert outcomes[0].cancelled and outcomes[1].exit_code == 0, told
    assert "asking its cdd" in outcomes[1].output, told
    assert_nothing_left(pair, runner, pair.run_ids(), told)



HOOKS = Path("/var/lib/cdd-ci/hooks")


def test_a_runner_that_dies_outright_is_reaped_by_the_next_jobs_hook(
        pair: Project, tmp_path: Path) -> None:
    """The job's whole process tree SIGKILLed mid-build, and its workspace gone with an
    ephemeral runner: the job-started hook that scripts/setup-host.sh installs (run here as
    the runner runs it, before the next job) destroys what was left, from the host's index."""
    hook = HOOKS / "job-started.sh"
    assert hook.is_file(), f"{hook} is missing: scripts/setup-host.sh installs it"
    runner = runner_for(pair, tmp_path)
    (run, _destroy) = shipped()
    job = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run.run],
                           cwd=pair.root, env={**runner.env, "RUNNER_TRACKING_ID": "dead"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("containers being created", building(pair), 120)
    run_ids = pair.run_ids()
    kill_tree(job.pid)  # the runner is gone: no signal handler, no finally, no always() step
    job.wait(timeout=30)
    shutil.rmtree(pair.root / ".cdd")  # and its workspace with it
    assert pair.left_running(run_ids), "the test meant to kill the run mid-build"

    reaped = subprocess.run([str(hook)], capture_output=True, text=True, timeout=600,
                            check=False, env={**runner.env, "RUNNER_TRACKING_ID": "next"})
    told = reaped.stdout + reaped.stderr
    assert reaped.returncode == 0, told
    assert pair.left_running(run_ids) == [], told
    assert [p for r in run_ids for p in proctree.of_run(r)] == [], told
    assert "freed run" in told, told

"""A fleet of three runners, simulated on this one machine, against one PostgreSQL history and
one GitHub: what a team with several self-hosted runners relies on.

Each runner has its own workspace, its own host state (CDD_STATE_HOME, where its host index
lives) and its own hostname: every cdd of a runner starts in a UTS namespace of its own named
`runner-N`, so the ledger and the history record that host, as on separate machines. The
runners share what a fleet shares: the history server and the GitHub repository.

At once: runner-1 builds `fleet-one` and is killed outright (a runner that dies); runner-2
and runner-3 build `fleet-broken`, whose check fails the same way on both. Then every host's
reaper runs. On one machine the runners also share LXC, which separate hosts would not: each
runner gets a subnet of its own, and the reapers run with their default age limit, under
which machines that no ledger of theirs knows are left alone. That limit is also why this
file can run beside other tests: no reaper here touches a machine younger than 6 hours that
its own host index does not name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi
from tests.postgres import Server

from .conftest import MARKER_CHECK as CHECK
from .conftest import Project, copy_pair, lxc_names, wait_for

pytestmark = [pytest.mark.vagrant, pytest.mark.long]

TOKEN = "ghs_FleetRunnersT0kenThatMustNeverBeSeen0"


@dataclass
class Runner:
    """One self-hosted runner: a hostname, a workspace with one environment, a host state."""

    number: int
    project: Project
    state: Path
    history: str
    github: GitHubServer

    @property
    def hostname(self) -> str:
        return f"runner-{self.number}"

    def argv(self, *args: str) -> list[str]:
        # unshare without --fork execs: the process started is the runner's cdd itself
        return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname,
                sys.executable, "-m", "cdd_ci", *args]

    def env(self) -> dict[str, str]:
        actions = self.project.root / "actions"
        actions.mkdir(exist_ok=True)
        return dict(os.environ, CDD_STATE_HOME=str(self.state), CDD_HISTORY_URL=self.history,
                    GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY="acme/cloud",
                    GITHUB_API_URL=self.github.base_url,
                    GITHUB_SERVER_URL="https://github.example",
                    GITHUB_RUN_ID=str(7000 + self.number), GITHUB_SHA="4c2a9e11" * 5,
                    GITHUB_EVENT_NAME="schedule", GITHUB_ACTIONS="true",
                    GITHUB_STEP_SUMMARY=str(actions / "summary.md"),
                    GITHUB_OUTPUT=str(actions / "output"))

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=self.project.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def cdd(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.project.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def run_ids(self) -> set[str]:
        return self.project.run_ids()


def environment(parent: Path, runner: int, name: str) -> Project:
    """The `pair` project under another name, on a subnet of this runner's own (they share one
    LXC bridge here, which runners on separate hosts would not)."""
    project = copy_pair(parent, f"runner-{runner}")
    config = project.root / "cdd.toml"
    config.write_text(config.read_text().replace(
        'name = "pair"', f'name = "{name}"').replace(
        'provider = "lxc"', f'provider = "lxc"\nenv = {{ CDD_SUBNET = "192.168.{210 + runner}" }}'))
    return project


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository="acme/cloud") as server:
        yield server


@pytest.fixture
def fleet(vagrant_host: None, tmp_path: Path, postgres: Server,
          github: GitHubServer) -> Iterator[list[Runner]]:
    history = postgres.database()
    runners = [
        Runner(n, environment(tmp_path, n, name), tmp_path / f"state-{n}", history, github)
        for n, name in ((1, "fleet-one"), (2, "fleet-broken"), (3, "fleet-broken"))
    ]
    for runner in runners[1:]:
        runner.project.append_config(CHECK)
    yield runners
    for runner in runners:  # what a failed test left: destroyed by the runner that made it
        if runner.project.left_running(runner.run_ids()):
            runner.cdd("destroy", timeout=300)
        runner.project.clean_up()


def history_runs(postgres: Server, history: str) -> dict[str, tuple[str, str, bool, float]]:
    """Each run in the shared history: host, environment, released, machine-hours (counted
    as `cdd savings` counts them: from the first `up` to the release)."""
    database = history.split("?", 1)[0].rsplit("/", 1)[1]
    rows = postgres.psql(
        "SELECT r.run_id, r.host, r.environment, r.released_at IS NOT NULL,"
        " (SELECT COUNT(*) FROM machines m WHERE m.run_id = r.run_id)"
        " * (COALESCE(r.released_at, 0) - COALESCE((SELECT MIN(p.started_at) FROM phases p"
        "   JOIN events e ON p.event_id = e.id WHERE e.run_id = r.run_id AND p.phase = 'up'),"
        "   r.started_at)) / 3600"
        " FROM runs r", database)
    out = {}
    for line in rows.splitlines():
        run_id, host, env, released, hours = line.split("|")
        out[run_id] = (host, env, released == "t", float(hours))
    return out


def test_three_runners_share_one_history_and_one_issue_and_reap_only_their_own(
        fleet: list[Runner], github: GitHubServer, postgres: Server) -> None:
    one, two, three = fleet
    killed = one.start("run", "--issues")
    broken = [r.start("run", "--issues") for r in (two, three)]

    # runner-1 dies outright once its machines exist: no finally, no always() step
    def machines_of_one() -> bool:
        ids = one.run_ids()
        return len([n for n in lxc_names() if any(n.startswith(f"cdd-{r}-") for r in ids)]) == 2
    wait_for("runner-1's machines", machines_of_one, timeout=300)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    outputs = [p.communicate(timeout=600)[0] for p in broken]
    for proc, output in zip(broken, outputs, strict=True):
        assert proc.returncode == 1, output
    # the ledgers name each runner's run (a reaped run's ledger goes with its machines)
    expected = {r: runner.hostname for runner in fleet for r in runner.run_ids()}
    assert len(expected) == 3
    (one_run,) = one.run_ids()
    assert one.project.left_running({one_run}), "runner-1's machines went with its cdd"

    # one issue between the two runners that failed the same way, both counted on it
    issues = github.real_issues()
    assert len(issues) == 1, [i["title"] for i in issues]
    (issue,) = issues
    assert "marker file" in issue["title"]
    for output in outputs:
        assert f"#{issue['number']}" in output
        assert TOKEN not in output

    # the other hosts' reapers leave runner-1's machines alone; runner-1's own reaps them
    for runner in (two, three):
        reaped = runner.cdd("reap")
        assert reaped.returncode == 0, reaped.stdout + reaped.stderr
        assert one.project.left_running({one_run}), f"{runner.hostname} reaped runner-1's run"
    reaped = one.cdd("reap")
    assert reaped.returncode == 0, reaped.stdout + reaped.stderr
    assert one_run in reaped.stdout
    assert one.project.left_running({one_run}) == []

    # every run of every runner is in the one history, recorded by its own host, released
    runs = history_runs(postgres, one.history)
    assert {r: host for r, (host, _, _, _) in runs.items()} == expected
    assert all(released for _, _, released, _ in runs.values())
    assert {env for _, env, _, _ in runs.values()} == {"fleet-one", "fleet-broken"}

    # and `cdd savings` on any runner counts exactly those runs' machine-hours
    savings = two.cdd("savings", "--since", "1d", "--format", "markdown")
    assert savings.returncode == 0, savings.stdout + savings.stderr
    total = sum(hours for _, _, _, hours in runs.values())
    used = re.search(r"used by cdd \(3 runs\)\**\s*\|\s*([\d,.]+)", savings.stdout)
    assert used is not None, savings.stdout
    assert used.group(1) == f"{total:,.1f}"
    for name, count in (("fleet-broken", 2), ("fleet-one", 1)):
        hours = sum(h for _, env, _, h in runs.values() if env == name)
        assert f"| {name} | 2 | {count} | {hours:,.1f} |" in savings.stdout, savings.stdout
    assert not any(n.startswith(f"cdd-{r}-") for n in lxc_names() for r in expected)

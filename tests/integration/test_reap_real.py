"""`cdd reap` on real Vagrant machines (lxc): three runs killed outright (SIGKILL: no
handler, no `finally`) at different phases, and a live run beside them. The reaper frees
everything of the three and nothing of the live one, which then finishes and passes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Project, copy_pair, wait_for

pytestmark = [pytest.mark.vagrant, pytest.mark.whole_host]

# Far beyond any machine's age: the reaper may then free only runs whose ledger is in the
# test's own host index (dead ones), never another user's machines, which it judges by age.
NEVER_BY_AGE = "36500d"
RELEASE = "/run/cdd-go"
WAITING_CHECK = f"""
[[checks]]
name = "waits for {RELEASE}"
type = "command"
on = "alpha"
command = "test -e {RELEASE}"
deadline = 600
interval = 1
"""


def ledger(project: Project) -> dict[str, object]:
    """The project's only run, as its ledger says now ({} before it is written)."""
    for path in (project.root / ".cdd" / "runs").glob("*/ledger.json"):
        try:
            return dict(json.loads(path.read_text()))
        except ValueError:
            pass  # being replaced: read again
    return {}


def run_id(project: Project) -> str:
    return str(ledger(project).get("run_id", ""))


def states(project: Project) -> dict[str, str]:
    return dict(ledger(project).get("machine_states", {}))  # type: ignore[call-overload]


def make(root: Path, name: str, subnet: str, *, env: str = "", checks: str = "") -> Project:
    project = copy_pair(root, name)
    toml = (project.root / "cdd.toml").read_text()
    toml = toml.replace('machines = ["alpha", "beta"]',
                        f'machines = ["alpha", "beta"]\nenv = {{ CDD_SUBNET = "{subnet}"{env} }}')
    toml = toml.replace("check = 60", "check = 600")  # the waiting check outlasts the reap
    (project.root / "cdd.toml").write_text(toml + checks)
    return project


@pytest.fixture
def projects(vagrant_host: None, tmp_path: Path) -> Iterator[dict[str, Project]]:
    made = {
        # distinct subnets: the four environments are up on one bridge at the same time
        "up": make(tmp_path, "killed-in-up", "192.168.181"),
        "provision": make(tmp_path, "killed-in-provision", "192.168.182",
                          env=', CDD_TEST_SLOW_UP = "600"'),
        "checks": make(tmp_path, "killed-in-checks", "192.168.183", checks=WAITING_CHECK),
        "live": make(tmp_path, "live", "192.168.184", checks=WAITING_CHECK),
    }
    yield made
    for project in made.values():
        project.clean_up()


def test_reap_frees_killed_runs_and_never_a_live_one(projects: dict[str, Project]) -> None:
    started = time.monotonic()
    procs = {name: p.start("run") for name, p in projects.items()}
    killed = {k: projects[k] for k in ("up", "provision", "checks")}
    live = projects["live"]

    # up: a container exists, but not every machine is up yet
    wait_for("a container of the first run", lambda: bool(run_id(killed["up"])) and bool(
        killed["up"].left_running({run_id(killed["up"])})))
    procs["up"].kill()
    # provision: both machines are up; their provisioners sleep
    wait_for("provisioning", lambda: set(states(killed["provision"]).values()) == {"up"}
             and len(states(killed["provision"])) == 2)
    procs["provision"].kill()
    # checks: both checked runs wait, one for ever
    wait_for("checks", lambda: ledger(killed["checks"]).get("phase") == "checking"
             and ledger(live).get("phase") == "checking")
    time.sleep(2)  # well inside the waiting check
    procs["checks"].kill()
    for name in killed:
        procs[name].wait(timeout=30)
    ids = {name: run_id(p) for name, p in killed.items()}
    assert ledger(killed["up"]).get("phase") == "created"
    assert len(states(killed["up"])) < 2, "meant to kill the run before both machines were up"
    assert all(killed[n].left_running({ids[n]}) for n in ("provision", "checks"))
    live_id = run_id(live)
    live_machines = live.left_running({live_id})
    assert len(live_machines) == 2

    status = live.cdd("status", timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"{live_id}: keep, live: its cdd process" in status.stdout

    plan = live.cdd("reap", "--dry-run", "--older-than", NEVER_BY_AGE, timeout=300)
    assert plan.returncode in (0, 3), plan.stdout + plan.stderr
    planned = {ln.split()[3] for ln in plan.stdout.splitlines() if ln.startswith("would free")}
    assert planned == set(ids.values()), plan.stdout
    assert all(killed[n].left_running({ids[n]}) for n in ("provision", "checks"))

    reap_started = time.monotonic()
    reap = live.cdd("reap", "--older-than", NEVER_BY_AGE, timeout=600)
    reap_took = time.monotonic() - reap_started
    print(reap.stdout)  # what a user sees, for `pytest -s`
    assert reap.returncode in (0, 3), reap.stdout + reap.stderr
    freed = {ln.split()[2]: ln for ln in reap.stdout.splitlines() if ln.startswith("freed")}
    assert set(freed) == set(ids.values()), reap.stdout
    assert "stopped during up" in freed[ids["up"]]
    assert "stopped during provision" in freed[ids["provision"]]
    assert "stopped during checks" in freed[ids["checks"]]
    assert "machines: alpha, beta" in freed[ids["checks"]]

    # nothing of the three is left: not a container, not a ledger; their hours are closed
    for name, project in killed.items():
        assert project.left_running({ids[name]}) == [], name
        assert ledger(project) == {}, name
        with sqlite3.connect(project.root / ".cdd" / "history.sqlite") as db:
            assert db.execute("SELECT released_by FROM runs").fetchall() == [("reap",)]
    # the live run is untouched, and still running
    assert sorted(live.left_running({live_id})) == sorted(live_machines)
    assert procs["live"].poll() is None
    again = live.cdd("reap", "--older-than", NEVER_BY_AGE, timeout=300)
    assert "freed 0 runs" in again.stdout, again.stdout  # idempotent

    # let the live run's check pass: it finishes, passes and leaves nothing
    subprocess.run(["lxc-attach", "-n", f"cdd-{live_id}-alpha", "--", "touch", RELEASE],
                   check=True, timeout=60)
    out, _ = procs["live"].communicate(timeout=300)
    assert procs["live"].returncode == 0, out
    assert live.left_running({live_id}) == []
    print(f"reap took {reap_took:.1f} s; the whole test {time.monotonic() - started:.1f} s")



def test_the_developers_day(pair: Project) -> None:
    """`cdd up` in the morning, `cdd down` in the evening: the harvest is saved first, then
    nothing is left, and the day is in the history."""
    morning = pair.cdd("up", timeout=600)
    assert morning.returncode == 0, morning.stdout + morning.stderr
    (run,) = pair.ledgers()
    assert run["phase"] == "up"
    up_id = str(run["run_id"])
    assert len(pair.left_running({up_id})) == 2
    status = pair.cdd("status", timeout=120)
    assert f"{up_id}: keep, up since `cdd up`" in status.stdout, status.stdout

    # the daily job, or the developer, runs the whole thing in the same checkout at noon:
    # it builds machines of its own beside the kept ones and leaves those be
    noon = pair.cdd("run", timeout=600)
    assert noon.returncode == 0, noon.stdout + noon.stderr
    assert f"run {up_id}: up since `cdd up`" in noon.stdout + noon.stderr, noon.stderr
    assert len(pair.left_running({up_id})) == 2
    assert [r["run_id"] for r in pair.ledgers()] == [up_id]

    evening = pair.cdd("down", timeout=600)
    assert evening.returncode == 0, evening.stdout + evening.stderr
    assert pair.left_running({up_id}) == []
    assert pair.ledgers() == []
    saved = pair.root / "reports" / "saved" / up_id
    assert "provisioned alpha" in (saved / "alpha" / "etc_cdd-test").read_text()
    with sqlite3.connect(pair.root / ".cdd" / "history.sqlite") as db:
        assert db.execute("SELECT command FROM events ORDER BY id").fetchall() == \
            [("up",), ("run",), ("down",)]
        assert db.execute("SELECT released_by FROM runs WHERE run_id = ?",
                          (up_id,)).fetchall() == [("down",)]

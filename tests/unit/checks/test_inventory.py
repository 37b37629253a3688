"""What a run was built from (packages, boxes, Vagrant and its plugins), kept in the run
history, and what a failure's issue says changed since the last green run: real SQLite files,
real git repositories, the lifecycle on the fakes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdd_ci.checks.packages import PACKAGES_COMMAND, parse_packages, take
from cdd_ci.config import Config
from cdd_ci.github.context import GitHubContext
from cdd_ci.github.issues import IssuePolicy, report_issues
from cdd_ci.history import store
from cdd_ci.history.changes import commits_between, since_last_green
from cdd_ci.history.store import SCHEMA_VERSION, MachineSpec, PhaseSpan, RunStart, open_history
from cdd_ci.infra.signals import Cancellation
from cdd_ci.infra.vagrant import parse_plugins
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import (
    CommandResult,
    ExitCode,
    Inventory,
    MachineInventory,
    Package,
    RunResult,
)
from cdd_ci.report.progress import QuietDisplay
from cdd_ci.report.reporters import changes_since_green
from tests.fakes.infra import FakeShell
from tests.fakes.tracker import FakeTracker

from ..helpers import World, make_project

CONTEXT = GitHubContext("ghs_" + "k" * 36, "acme/cloud", run_id="77",
                        server_url="https://github.example")
POLICY = IssuePolicy(claim_wait=0, poll_interval=0)


def dpkg(*packages: tuple[str, str], removed: tuple[str, ...] = ()) -> str:
    lines = ["dpkg"] + [f"ii \t{name}\t{version}" for name, version in packages]
    return "\n".join(lines + [f"rc \t{name}\t1.0" for name in removed]) + "\n"


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def git(root: Path, *args: str, author: str = "Ana Lima") -> str:
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": "a@example.com",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": "a@example.com",
           "HOME": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True, env=env, timeout=30).stdout.strip()


def commit(root: Path, subject: str, author: str = "Ana Lima") -> str:
    git(root, "commit", "--allow-empty", "-q", "-m", subject, author=author)
    return git(root, "rev-parse", "HEAD")


# -- listing the packages --------------------------------------------------------------------

def test_dpkg_and_rpm_listings_keep_the_installed_packages_only() -> None:
    manager, packages = parse_packages(dpkg(("mariadb-server", "1:10.11.6"), ("zlib1g:amd64",
                                            "1:1.2.13"), removed=("old-kernel",)))
    assert manager == "dpkg"
    assert packages == (Package("mariadb-server", "1:10.11.6"), Package("zlib1g:amd64",
                                                                        "1:1.2.13"))
    manager, packages = parse_packages("rpm\nii \tglibc\t2.34-100.el9\nii \tglibc\t2.34-100.el9"
                                       "\nii \tkernel\t5.14.0-1\nii \tkernel\t5.14.0-2\n")
    assert manager == "rpm"
    # two architectures or two kernels of one name: both versions, so either change shows
    assert packages == (Package("glibc", "2.34-100.el9"), Package("kernel", "5.14.0-1, 5.14.0-2"))


def test_vagrant_plugins_are_read_from_its_listing() -> None:
    out = ("vagrant-libvirt (0.11.2, system)\nvagrant-lxc (1.4.3, global)\n"
           "  - Version Constraint: > 0\n")
    assert parse_plugins(out) == [Package("vagrant-libvirt", "0.11.2"),
                                  Package("vagrant-lxc", "1.4.3")]
    assert parse_plugins("No plugins installed.\n") == []


class _Vagrant:
    def box(self, machine: str) -> str:
        return "" if machine == "container" else "debian/bookworm64 12.20240101.1"

    def plugins(self, *, timeout: float) -> list[Package]:
        return [Package("vagrant-lxc", "1.4.3")]


def test_one_command_per_machine_and_every_problem_is_written_down_not_raised() -> None:
    shells = {
        "db": FakeShell("db").answer("dpkg-query", stdout=dpkg(("mariadb-server", "1:10.11.6"))),
        "web": FakeShell("web").unreachable("dpkg-query"),
        "alpine": FakeShell("alpine").answer("dpkg-query", stdout="none\n"),
        "slow": FakeShell("slow").answer("dpkg-query", 124, stdout="dpkg\n", stderr="Killed\n"),
    }
    vagrant = _Vagrant()
    inventory = take(shells, ["db", "web", "alpine", "slow", "container"], vagrant.box,
                     vagrant_version="2.4.3", plugins=vagrant.plugins(timeout=5), timeout=5)
    found = {m.machine: m for m in inventory.machines}
    assert found["db"] == MachineInventory("db", "debian/bookworm64", "12.20240101.1", "dpkg",
                                           (Package("mariadb-server", "1:10.11.6"),))
    assert "ssh to web failed" in found["web"].problem
    assert found["alpine"].problem == "neither dpkg-query nor rpm on it"
    assert found["slow"].problem == "listing packages failed (exit 124): Killed"
    assert found["container"].problem.startswith("no connection to it")
    assert (inventory.vagrant, inventory.plugins) == ("2.4.3", (Package("vagrant-lxc", "1.4.3"),))
    assert [len(s.calls) for s in shells.values()] == [1, 1, 1, 1]
    assert shells["db"].calls == [PACKAGES_COMMAND]


# -- the run, and its history ----------------------------------------------------------------

def _world(**packages: str) -> World:
    world = World()
    for machine, listing in packages.items():
        world.shells[machine].answers.insert(0, ("dpkg-query", _result(listing)))
    return world


def _result(stdout: str) -> CommandResult:
    return CommandResult("", 0, stdout, "")


def test_a_run_records_each_machines_packages_box_and_vagrant(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    world = _world(broker=dpkg(("rabbitmq-server", "3.10.8-1.1")),
                   database=dpkg(("mariadb-server", "1:10.11.6"), ("libssl3", "3.0.14")))
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()
    assert result.exit_code() is ExitCode.OK
    assert config.history_path == str(tmp_path / ".cdd" / "history.sqlite")
    recorded = open_history(config.history_path).inventory(result.run_id)
    assert recorded == result.inventory
    assert recorded is not None
    assert [(m.machine, m.box, m.box_version, m.manager, len(m.packages))
            for m in recorded.machines] == [("broker", "fake/box", "1.0", "dpkg", 1),
                                            ("database", "fake/box", "1.0", "dpkg", 2)]
    assert recorded.vagrant == "0.0-fake"
    assert recorded.plugins == (Package("vagrant-fake", "0.1"),)
    assert rows(config.history_path, "SELECT commit_sha FROM runs") == [(result.commit,)]


def test_packages_that_cannot_be_listed_never_fail_the_run(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    world = World()
    world.shells["database"].answers.insert(0, ("dpkg-query", _result("")))
    world.shells["broker"].unreachable("dpkg-query")
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()
    assert result.exit_code() is ExitCode.OK and world.host.machines == {}
    assert result.inventory is not None
    assert [m.problem[:19] for m in result.inventory.machines] == ["ssh to broker faile",
                                                                    "listing packages fa"]


def test_a_machine_that_did_not_provision_is_in_the_inventory_without_packages(
        tmp_path: Path) -> None:
    config = make_project(tmp_path)
    world = _world(broker=dpkg(("rabbitmq-server", "3.10.8-1.1")))
    world.fail_provision.add("database")
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()
    assert result.exit_code() is ExitCode.INFRASTRUCTURE
    assert result.inventory is not None
    database = result.inventory.machines[1]
    assert (database.box, database.packages) == ("fake/box", ())
    assert "did not come up or provision" in database.problem


def _record_runs(path: str, writer: int, runs: int) -> None:
    history = open_history(Path(path))
    for i in range(runs):
        run_id = f"w{writer}-r{i}"
        event = history.begin(RunStart(run_id, "demo", "lxc", "run", float(writer * 1000 + i),
                                       (MachineSpec("m0"), MachineSpec("m1"))))
        history.record_inventory(run_id, Inventory(
            tuple(MachineInventory(f"m{m}", "debian/bookworm64", "12.1", "dpkg",
                                   tuple(Package(f"pkg{p}", f"{writer}.{i}") for p in range(300)))
                  for m in range(2)),
            vagrant="2.4.3", plugins=(Package("vagrant-lxc", "1.4.3"),)))
        history.finish(event, finished_at=float(writer * 1000 + i + 1), outcome="passed",
                       spans=[PhaseSpan("up", "m0", 1.0, 2.0)], commit=f"{writer:040x}")


def test_concurrent_runs_in_several_processes_and_threads_lose_no_record(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "history.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record_runs, args=(str(db), n, 8)) for n in range(4)]
    threads = [threading.Thread(target=_record_runs, args=(str(db), n, 8)) for n in range(4, 7)]
    for proc in procs:
        proc.start()
    for thread in threads:
        thread.start()
    for proc in procs:
        proc.join(180)
        assert proc.exitcode == 0
    for thread in threads:
        thread.join(180)
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT commit_sha) FROM runs"
                    " WHERE outcome = 'passed'") == [(56, 7)]
    assert rows(db, "SELECT COUNT(*) FROM inventories") == [(112,)]
    # the two machines of a run have the same packages: one list, kept once
    assert rows(db, "SELECT COUNT(DISTINCT list_id), COUNT(*) FROM package_lists") == [
        (56, 56 * 300)]
    assert rows(db, "SELECT COUNT(*) FROM tools") == [(112,)]
    last = open_history(db).inventory("w6-r7")
    assert last is not None and last.machines[1].packages[0] == Package("pkg0", "6.7")


def test_runs_of_unchanged_machines_share_one_package_list(tmp_path: Path) -> None:
    history = open_history(tmp_path / "h.sqlite")
    same = tuple(Package(f"pkg{p}", "1.0") for p in range(500))
    for day in range(30):
        history.record_inventory(f"day{day}", Inventory((
            MachineInventory("db", "b", "1", "dpkg", same),
            MachineInventory("web", "b", "1", "dpkg",
                             same if day < 20 else (*same, Package("nginx", "1.22"))))))
    assert rows(history.path, "SELECT COUNT(DISTINCT list_id), COUNT(*) FROM package_lists") \
        == [(2, 1001)]
    late = history.inventory("day29")
    assert late is not None and late.machines[1].packages[0] == Package("nginx", "1.22")
    assert len(late.machines[1].packages) == 501


def test_a_history_with_a_list_per_run_keeps_its_packages_when_upgraded(
        tmp_path: Path) -> None:
    db = tmp_path / "v2.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(store._SCHEMA + store._INVENTORY)
        conn.execute("INSERT INTO inventories VALUES ('r1', 'db', 'b', '1', 'dpkg', '')")
        conn.execute("INSERT INTO packages VALUES ('r1', 'db', 'mariadb-server', '1:10.11.6')")
        conn.execute("PRAGMA user_version = 2")
    history = open_history(db)
    history.begin(RunStart("r2", "demo", "lxc", "run", 9.0, ()))  # any write upgrades
    assert history.schema_version() == SCHEMA_VERSION
    old = history.inventory("r1")
    assert old is not None and old.machines[0].packages == (Package("mariadb-server",
                                                                    "1:10.11.6"),)


def test_a_history_written_before_inventories_is_migrated_and_keeps_its_runs(
        tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(store._SCHEMA)
        conn.execute("INSERT INTO runs (run_id, environment, provider, command, started_at,"
                     " outcome) VALUES ('old', 'demo', 'lxc', 'run', 5.0, 'passed')")
        conn.execute("PRAGMA user_version = 1")
    history = open_history(db)
    history.record_inventory("new", Inventory((MachineInventory("m0", "b", "1"),)))
    assert history.schema_version() == SCHEMA_VERSION
    green = history.last_green("demo", before=10.0, other_than="new")
    assert green is not None and green.run_id == "old"
    assert history.inventory("old") is None  # recorded before inventories: said, not guessed


# -- what changed, in the issue --------------------------------------------------------------

def _issue_run(config: Config, world: World, tracker: FakeTracker, *, failing: bool,
               policy: IssuePolicy = POLICY) -> RunResult:
    if failing:
        world.shells["broker"].answers.insert(0, (r"^echo pong", _result("ping\n")))

    def issues(result: RunResult) -> None:
        changes = changes_since_green(result, CONTEXT, config.history_path, config.root)
        outcome = report_issues(result, CONTEXT, tracker=tracker, policy=policy,
                                changes=changes, sleep=lambda s: None)
        assert outcome.ok, outcome.errors

    return Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(),
                     reporters=[issues]).run()


def test_a_failure_names_the_packages_tools_and_commits_since_the_last_green_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    config = make_project(tmp_path)
    git(tmp_path, "init", "-q")
    commit(tmp_path, "First environment")
    tracker = FakeTracker()
    green = _issue_run(config, _world(database=dpkg(("mariadb-server", "1:10.11.6"),
                                                    ("python3-mysqldb", "1.4.6"))),
                       tracker, failing=False)
    assert green.exit_code() is ExitCode.OK and not tracker.issues_by_number

    commit(tmp_path, "Grant keystone from the broker's subnet", author="Bo Chen")
    commit(tmp_path, "Ask @db-team about #214", author="Ana Lima")
    failed = _issue_run(config, _world(database=dpkg(("mariadb-server", "1:10.11.11"),
                                                     ("mariadb-plugin-lz4", "1:10.11.11"))),
                        tracker, failing=True)
    assert failed.exit_code() is ExitCode.CHECKS_FAILED
    (issue,) = tracker.issues_by_number.values()
    body = issue.body
    assert f"The last green run of `demo` in the run history: run {green.run_id}" in body
    assert "2 since then" in body
    assert "Grant keystone from the broker's subnet (Bo Chen)" in body
    assert "@db-team" not in body and "#214" not in body
    assert "**Packages on `database`**: 1 changed, 1 added, 1 removed" in body
    assert "- `mariadb-server`: `1:10.11.6` → `1:10.11.11`" in body
    assert "- `mariadb-plugin-lz4`: added, `1:10.11.11`" in body
    assert "- `python3-mysqldb`: removed (was `1.4.6`)" in body
    assert "| Box of database | `fake/box 1.0` | `fake/box 1.0` |" in body
    assert "| vagrant-fake | `0.1` | `0.1` |" in body

    # the next failing day comments, naming what changed since that same green run
    commit(tmp_path, "Pin mariadb")
    _issue_run(config, _world(database=dpkg(("mariadb-server", "1:10.12.1"),
                                            ("python3-mysqldb", "1.4.6"))),
               tracker, failing=True, policy=replace(POLICY, comment_interval=timedelta(0)))
    (comment,) = issue.comments
    assert f"Since the last green run (run {green.run_id} on " in comment
    assert "- 3 commits ([" in comment
    assert "- `mariadb-server` on `database`: `1:10.11.6` → `1:10.12.1`" in comment
    assert "python3-mysqldb" not in comment  # as it was in the green run


def test_a_first_failure_says_plainly_that_no_green_run_is_on_record(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    tracker = FakeTracker()
    _issue_run(config, World(), tracker, failing=True)
    (issue,) = tracker.issues_by_number.values()
    assert "No run in which this passed is on record yet (no green run of demo is on record " \
           f"in the run history ({config.history_path}))" in issue.body


def test_commits_are_listed_newest_first_with_authors_and_capped(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    old = commit(tmp_path, "base")
    for i in range(30):
        new = commit(tmp_path, f"change {i}", author=f"Dev {i % 3}")
    listed = commits_between(tmp_path, old, new, limit=5)
    assert listed is not None
    assert [(c.subject, c.author) for c in listed.listed[:2]] == [("change 29", "Dev 2"),
                                                                  ("change 28", "Dev 1")]
    assert (len(listed.listed), listed.more, listed.problem) == (5, 25, "")
    assert commits_between(tmp_path, new, new) is None


def test_a_shallow_checkout_says_it_cannot_list_the_commits(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q")
    old = commit(origin, "base")
    commit(origin, "one")
    new = commit(origin, "two")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{origin}", str(clone)],
                   check=True, capture_output=True, timeout=30)
    listed = commits_between(clone, old, new)
    assert listed is not None and listed.listed == ()
    assert listed.problem == (f"commit {old[:12]} is not in the checkout at {clone} (a shallow "
                              "clone: check out with fetch-depth: 0 to list the commits)")
    nothing = commits_between(tmp_path / "nowhere", old, new)
    assert nothing is not None and "is not in the checkout" in nothing.problem


def test_an_unreadable_history_is_a_problem_stated_not_raised(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    result = RunResult("r1", "demo", "lxc", ["m0"],
                       datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    changes = since_last_green(open_history(db), result, commit="abc", checkout=tmp_path)
    assert changes.green is None
    assert changes.problem.startswith("the run history cannot be read: ")
    assert "newer cdd" in changes.problem

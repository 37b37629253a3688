"""Real Vagrant: fixtures that build projects around the small `pair` environment.

These tests skip only when Vagrant truly cannot run here (no vagrant, no lxc box: run
scripts/setup-host.sh as root); scripts/test.sh prepares the host, so in CI they run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ENVS = Path(__file__).resolve().parent / "envs"
BOX = "cdd/debian-bookworm"
DOCKER = "/usr/bin/docker"  # Debian's client, the one matched to the daemon setup-host starts


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the lxc provider needs root (run the tests as root or through scripts/test.sh)"
    if shutil.which("vagrant") is None or shutil.which("lxc-ls") is None:
        return "vagrant or lxc missing: run scripts/setup-host.sh"
    boxes = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True,
                           timeout=120, check=False).stdout
    if f"{BOX} (lxc" not in boxes:
        return f"box {BOX} (lxc) not registered: run scripts/setup-host.sh"
    return None


@pytest.fixture(scope="session")
def vagrant_host() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)


MARKER_CHECK = """
[[checks]]
name = "marker file"
type = "command"
on = "alpha"
command = "cat /etc/cdd-marker"
deadline = 0
"""
"""A check that fails until a test writes /etc/cdd-marker on alpha: a failure the test can
start and end at will (one issue opened, then closed)."""

HOST_TURNS = Path(tempfile.gettempdir()) / "cdd-tests-host-turns.lock"
"""Test files run side by side on the workers scripts/test.sh starts (pytest -n); a file that
restarts the host's network, reaps host-wide or judges every container on it takes the host
to itself (`pytestmark = pytest.mark.whole_host`)."""


@pytest.fixture(autouse=True, scope="module")
def host_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    alone = request.node.get_closest_marker("whole_host") is not None
    with HOST_TURNS.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


def lxc_names() -> list[str]:
    out = subprocess.run(["lxc-ls", "-1"], capture_output=True, text=True, timeout=60,
                         check=False).stdout
    return [n for n in out.split() if n.startswith("cdd-")]


def docker_names() -> list[str]:
    if not Path(DOCKER).exists():
        return []
    out = subprocess.run([DOCKER, "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                         text=True, timeout=60, check=False).stdout
    return [n for n in out.split() if n.startswith("cdd-")]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Project:
    root: Path

    def cdd(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cdd_ci", *args], cwd=self.root,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cdd_ci", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run_ids(self) -> set[str]:
        """Every run this project started, from its ledgers and its report."""
        ids = {p.parent.name for p in (self.root / ".cdd" / "runs").glob("*/ledger.json")}
        report = self.root / "reports" / "junit.xml"
        if report.is_file():
            import xml.etree.ElementTree as ET

            for prop in ET.parse(report).getroot().iter("property"):
                if prop.get("name") == "run_id":
                    ids.add(prop.get("value", ""))
        return ids

    def junit_errors(self) -> dict[str, str]:
        """The run's JUnit report: each testcase in error (by classname) and its message,
        what a CI page shows first."""
        import xml.etree.ElementTree as ET

        root = ET.parse(self.root / "reports" / "junit.xml").getroot()
        return {c.get("classname", ""): (error.get("message") or "")
                for c in root.iter("testcase") if (error := c.find("error")) is not None}

    def junit_output(self, testcase: str) -> str:
        """What the run's JUnit report says a testcase printed (a passed one's notes)."""
        import xml.etree.ElementTree as ET

        root = ET.parse(self.root / "reports" / "junit.xml").getroot()
        return next(c.findtext("system-out") or "" for c in root.iter("testcase")
                    if c.get("name") == testcase)

    def ledgers(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text())
                for p in sorted((self.root / ".cdd" / "runs").glob("*/ledger.json"))]

    def left_running(self, run_ids: set[str]) -> list[str]:
        """The runs' machines the provider still has: LXC containers and Docker containers."""
        return [n for n in lxc_names() + docker_names()
                if any(n.startswith(f"cdd-{r}-") for r in run_ids)]

    def clean_up(self, *, timeout: float = 300) -> None:
        """Destroy whatever a failed test left of this project's runs, so that it does not
        leak into the next tests: `cdd destroy` first, then the provider's own tools."""
        ids = self.run_ids()
        if not self.left_running(ids):
            return
        self.cdd("destroy", timeout=timeout)
        containers = set(lxc_names())
        for name in self.left_running(ids):
            remove = (["lxc-destroy", "-f", "-n", name] if name in containers
                      else [DOCKER, "rm", "-f", name])
            subprocess.run(remove, capture_output=True, timeout=120, check=False)

    def append_config(self, text: str) -> None:
        with (self.root / "cdd.toml").open("a") as fh:
            fh.write(text)


def vagrant_index() -> Path:
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d") \
        / "data" / "machine-index"


def index_entry(project: Project, machine: str) -> str | None:
    """The id of the machine's entry in Vagrant's host-wide index, once it has one."""
    try:
        machines = json.loads((vagrant_index() / "index").read_text())["machines"]
    except (OSError, ValueError):
        return None  # not written yet, or being rewritten
    root = project.root.resolve()
    return next((uuid for uuid, entry in machines.items()
                 if entry["name"] == machine
                 and Path(entry["vagrantfile_path"]).resolve() == root), None)


@contextmanager
def index_entry_held(project: Project, machine: str) -> Iterator[None]:
    """Hold the machine's entry in Vagrant's index, as any Vagrant process asking the
    machine's state does for a moment (`vagrant global-status --prune` asks them all)."""
    # Vagrant rewrites the index in place: a read can find it half written, so the id is
    # kept from the read that found it
    found: list[str] = []

    def entry_found() -> bool:
        uuid = index_entry(project, machine)
        if uuid is not None:
            found.append(uuid)
        return uuid is not None

    wait_for(f"{machine}'s entry in Vagrant's index", entry_found, 60)
    with (vagrant_index() / f"{found[0]}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def copy_pair(parent: Path, name: str = "pair") -> Project:
    """A fresh copy of the `pair` project in parent/name, with the library its Vagrantfile
    loads beside it (tests/integration/envs/lib is a link to vagrant/lib)."""
    if not (parent / "lib").exists():
        shutil.copytree(ENVS / "lib", parent / "lib")
    shutil.copytree(ENVS / "pair", parent / name)
    return Project(parent / name)


@pytest.fixture
def pair(vagrant_host: None, tmp_path: Path) -> Iterator[Project]:
    """A fresh copy of the `pair` project; whatever a test leaves is destroyed afterwards."""
    project = copy_pair(tmp_path)
    yield project
    project.clean_up()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What the GitHub client chose to wait (it sleeps through `time.sleep`, as urllib3 does):
    the waits are asserted, not the wall clock of a busy machine."""
    waited: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return waited

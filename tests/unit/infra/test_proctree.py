"""A run's processes are found by their mark, with what they started, and stopped together;
a live run's owner is asked to stop, then stopped. Real processes, this host's /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdd_ci.host import owner
from cdd_ci.host.ledger import Ledger, LedgerStore
from cdd_ci.infra import proctree

RUN = "20261203000000-abcdef"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_the_mark_its_session_and_its_children_are_the_run(
        started: list[subprocess.Popen[bytes]]) -> None:
    # like `sudo lxc-create`: the grandchild's environment is wiped, its session is not
    script = "env -i sleep 300 & sleep 300 & wait"
    marked = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                              env={**os.environ, proctree.MARK: RUN})
    other = subprocess.Popen(["sleep", "300"], env={**os.environ, proctree.MARK: "another"})
    started += [marked, other]
    deadline = time.monotonic() + 10
    while len(proctree.of_run(RUN)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    found = proctree.of_run(RUN)
    assert len(found) == 3 and marked.pid in {p.pid for p in found}
    assert other.pid not in {p.pid for p in found}
    assert proctree.stop(found) == []
    assert proctree.of_run(RUN) == []
    assert other.poll() is None, "another run's process was touched"


def test_a_helper_that_names_a_machine_of_the_run_is_the_run(
        started: list[subprocess.Popen[bytes]]) -> None:
    # `sudo lxc-create -n cdd-<run>-beta` whose Vagrant was killed first: a session of its
    # own, an environment without the mark, init for a parent; only its arguments tell
    helper = [sys.executable, "-c", "import time; time.sleep(300)", "lxc-create", "-n"]
    orphan = subprocess.Popen([*helper, f"cdd-{RUN}-beta"], start_new_session=True, env={})
    another = subprocess.Popen([*helper, "cdd-20261203000000-fedcba-beta"],
                               start_new_session=True, env={})
    started += [orphan, another]
    deadline = time.monotonic() + 10
    while not proctree.of_run(RUN) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.pid for p in proctree.of_run(RUN)] == [orphan.pid]
    assert proctree.stop(proctree.of_run(RUN)) == []
    assert another.poll() is None, "another run's helper was touched"


def test_a_reused_pid_is_not_the_owner() -> None:
    me = os.getpid()
    assert proctree.alive(me, proctree.started(me))
    assert not proctree.alive(me, proctree.started(me) + 1)


OWNER = textwrap.dedent("""
    import fcntl, signal, sys, time
    lock = open(sys.argv[1], "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    if sys.argv[2] == "obeys":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(300)
""")


def fake_owner(tmp_path: Path, behaviour: str,
               started: list[subprocess.Popen[bytes]]) -> tuple[LedgerStore, int]:
    """A process named like cdd that holds a run's lock, recorded as the run's owner."""
    store = LedgerStore(tmp_path / ".cdd")
    store.run_dir(RUN).mkdir(parents=True)
    script = tmp_path / "cdd"
    script.write_text(OWNER)
    proc = subprocess.Popen([sys.executable, str(script), str(store.run_dir(RUN) / "lock"),
                             behaviour], stdout=subprocess.PIPE)
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    store.write(Ledger(RUN, "demo", str(tmp_path), "lxc", ["alpha"], {}, time.time(),
                       pid=proc.pid, pid_started=proctree.started(proc.pid)))
    assert store.is_live(RUN)
    return store, proc.pid


def test_an_owner_that_obeys_is_asked_to_stop(
        tmp_path: Path, started: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDD_STATE_HOME", str(tmp_path / "state"))
    store, _ = fake_owner(tmp_path, "obeys", started)
    said: list[str] = []
    assert owner.stop(store, RUN, 30, said.append)
    assert started[-1].wait(5) == 143, "asked with SIGTERM, so it could destroy what it built"
    assert len(said) == 1 and "asking its cdd" in said[0]


def test_an_owner_that_does_not_finish_is_stopped(
        tmp_path: Path, started: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDD_STATE_HOME", str(tmp_path / "state"))
    store, _ = fake_owner(tmp_path, "ignores", started)
    said: list[str] = []
    assert owner.stop(store, RUN, 0.5, said.append)
    assert started[-1].wait(5) == -9
    assert "did not finish" in said[-1]


def test_a_process_that_merely_took_the_pid_is_never_signalled(
        tmp_path: Path, started: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDD_STATE_HOME", str(tmp_path / "state"))
    store, _ = fake_owner(tmp_path, "obeys", started)
    ledger = store.read(RUN)
    ledger.pid_started += 1  # as if the owner died and another process got its pid
    store.write(ledger)
    said: list[str] = []
    assert not owner.stop(store, RUN, 0.5, said.append)
    assert started[-1].poll() is None
    assert "another cdd" in said[0]

"""Master connections: they live as long as the pool, carry only what sshd accepts, and
run many commands in one session."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cdd_ci.infra.ssh import MAX_SESSIONS, Command, SshError, SshPool, SshSession
from cdd_ci.models import CommandResult

# Stands in for `ssh`. As a master (-N) it waits to be told to exit (-O exit); -O check
# says it is up; a command counts the copies of itself running at once, keeps the highest.
FAKE_SSH = """#!/bin/sh
dir="$CDD_FAKE_SSH_DIR"
for arg; do case $arg in ControlPath=*) socket=${arg#ControlPath=} ;; esac; done
case " $* " in
  *" -N "*) echo $$ > "$dir/master.pid"; touch "$socket"; exec sleep 60 ;;
  *" -O check "*) exit 0 ;;
  *" -O exit "*) kill "$(cat "$dir/master.pid")"; exit 0 ;;
esac
touch "$dir/running.$$"
n=$(ls "$dir" | grep -c '^running\\.')
max=$(cat "$dir/max" 2>/dev/null || echo 0)
[ "$n" -gt "$max" ] && echo "$n" > "$dir/max"
sleep 0.2
rm -f "$dir/running.$$"
echo ok
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CDD_FAKE_SSH_DIR", str(state))
    return state


def test_commands_over_one_connection_wait_for_a_free_session(
        fake_ssh: Path, tmp_path: Path) -> None:
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    with ThreadPoolExecutor(max_workers=3 * MAX_SESSIONS) as pool:
        results = list(pool.map(lambda _: session.run("true", timeout=30),
                                range(3 * MAX_SESSIONS)))
    assert [r.stdout for r in results] == ["ok\n"] * (3 * MAX_SESSIONS)
    assert int((fake_ssh / "max").read_text()) <= MAX_SESSIONS < 10  # sshd's MaxSessions


def test_a_master_opened_from_a_worker_thread_outlives_the_thread(fake_ssh: Path) -> None:
    """The parent-death signal follows the thread that started the master, not the process:
    a master started from a short-lived worker thread died with it."""
    pool = SshPool("Host m1\n  HostName 10.0.0.1\n")
    try:
        with ThreadPoolExecutor(max_workers=1) as threads:
            threads.submit(pool.open, "m1", timeout=10).result()
        time.sleep(0.3)  # the worker thread has ended
        master = pool.shells["m1"]._master
        assert master is not None and master.poll() is None
    finally:
        pool.close()
    assert master.poll() is not None


# Stands in for `ssh` running a command: runs the remote command here, with bash.
LOCAL_SSH = """#!/bin/sh
for last; do :; done
exec bash -c "$last"
"""


@pytest.fixture
def local_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "local-bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(LOCAL_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SHELL", "/bin/sh")


def test_many_commands_in_one_session_keep_their_own_results(
        local_ssh: None, tmp_path: Path) -> None:
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    results = session.run_many([
        Command("echo out; echo err >&2", 10),
        Command("exit 3", 10),
        Command("sleep 30", 1),
        Command("printf 'two words\\n  and a line'", 10),
        Command("sleep 1; exit 124", 10),  # its own 124 is an exit status, not a timeout
    ])
    first, second, slow, spaced, own = results
    assert isinstance(first, CommandResult) and (first.stdout, first.stderr) == ("out\n", "err\n")
    assert isinstance(second, CommandResult) and second.exit_code == 3
    assert isinstance(slow, SshError) and "timed out after 1 s" in str(slow)
    assert isinstance(spaced, CommandResult) and spaced.stdout == "two words\n  and a line"
    assert isinstance(own, CommandResult) and own.exit_code == 124


def test_a_batch_the_machine_cannot_run_is_an_ssh_error(
        local_ssh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    monkeypatch.setenv("PATH", f"{tmp_path / 'local-bin'}:/nonexistent")  # no bash, no tar
    with pytest.raises(SshError):
        session.run_many([Command("true", 5)])


def test_a_command_over_its_time_limit_is_ended_with_all_it_started(
        local_ssh: None, tmp_path: Path) -> None:
    marker = "61.2345"  # a sleep no one else runs
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    hung, quick = session.run_many([
        Command(f"sleep {marker} & sleep {marker}; echo never", 1),
        Command("echo quick", 10),
    ])
    assert isinstance(hung, SshError) and "timed out after 1 s" in str(hung)
    assert isinstance(quick, CommandResult) and quick.stdout == "quick\n"
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True,
                          check=False)
    assert left.stdout == ""


def test_a_batch_runs_the_same_where_the_login_shell_is_not_bash(
        local_ssh: None, tmp_path: Path) -> None:
    ssh = tmp_path / "local-bin" / "ssh"
    ssh.write_text(LOCAL_SSH.replace("exec bash -c", "exec sh -c"))
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    slow, ok = session.run_many([Command("sleep 30", 1), Command("echo $0", 10)])
    assert isinstance(slow, SshError) and "timed out" in str(slow)
    assert isinstance(ok, CommandResult) and ok.stdout == "/bin/sh\n"  # the login shell's


def test_under_a_bash_login_shell_each_command_still_behaves_as_its_own_shell(
        local_ssh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/bin/bash")
    marker = "62.3456"
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    results = session.run_many([
        Command("echo out; echo err >&2; exit 3", 10),
        Command("type __cdd_one __cdd_late", 10),  # the batch's helpers are not the check's
        Command("echo $$", 10),
        Command("echo ${$}", 10),
        Command(f"sleep {marker} & wait", 1),
        Command("set -e; false; echo not reached", 10),
        Command('echo "[$#:${1-}]"', 10),  # no arguments, as `bash -c` gives it none
    ])
    own, helpers, pid_a, pid_b, hung, strict, arguments = results
    assert isinstance(own, CommandResult)
    assert (own.exit_code, own.stdout, own.stderr) == (3, "out\n", "err\n")
    assert isinstance(helpers, CommandResult) and helpers.exit_code != 0
    # a command that names $$ gets a shell, and a pid, of its own
    assert isinstance(pid_a, CommandResult) and isinstance(pid_b, CommandResult)
    assert pid_a.stdout != pid_b.stdout
    assert isinstance(hung, SshError) and "timed out after 1 s" in str(hung)
    assert isinstance(strict, CommandResult) and (strict.exit_code, strict.stdout) == (1, "")
    assert isinstance(arguments, CommandResult) and arguments.stdout == "[0:]\n"
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True,
                          check=False)
    assert left.stdout == ""


def test_a_command_that_ignores_the_stop_is_still_one_that_timed_out(
        local_ssh: None, tmp_path: Path) -> None:
    session = SshSession("m1", tmp_path / "config", tmp_path / "m1.sock")
    [stubborn] = session.run_many([Command("trap 'exit 0' TERM; sleep 30 & wait", 1)])
    assert isinstance(stubborn, SshError) and "timed out after 1 s" in str(stubborn)

"""One master connection never carries more commands at once than sshd accepts."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cdd_ci.ssh import MAX_SESSIONS, SshSession

# Stands in for `ssh`: counts the copies of itself running at once, keeps the highest count.
FAKE_SSH = """#!/bin/sh
dir="$CDD_FAKE_SSH_DIR"
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

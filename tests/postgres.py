"""A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` and
`pg_ctl` on a Unix socket in a private directory, nothing listening on TCP.

PostgreSQL refuses to run as root, and the suite runs as root (the Vagrant tests need it):
the server then runs as `nobody`. Started once per session, stopped (and its files removed)
at the end. Not installed, or failing to start: the tests that need it fail, never skip.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED = "nobody"
START_TIMEOUT = 60


def binaries() -> Path:
    found = sorted(Path("/").glob(BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian's postgresql package: "
                           "scripts/setup-host.sh installs it)")
    return found[-1]


@dataclass
class Server:
    """One running server; `database()` gives each test a database of its own."""

    root: Path
    bin: Path
    user: str
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres", *, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{self.user}{secret}@/{database}?host={self.socket_dir}"

    def database(self, *, password: str = "") -> str:
        """A fresh, empty database; its URL."""
        name = f"t{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name, password=password)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return _run(self._as_owner([str(self.bin / "psql"), "-X", "-q", "-t", "-A",
                                    "-h", str(self.socket_dir), "-d", database, "-c", sql]))

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", self.user, "--", *argv]
        return list(argv)

    def stop(self) -> None:
        try:
            _run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"),
                                 "-m", "immediate", "-w", "-t", "30", "stop"]))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    """initdb, then pg_ctl start on a socket only; raises when the server cannot run."""
    bin_dir = binaries()
    user = UNPRIVILEGED if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="cdd-postgres-"))
    (root / "socket").mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam(user)
        for path in (root, root / "socket"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    server = Server(root, bin_dir, user)
    try:
        _run(server._as_owner([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", user,
                               "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]))
        options = f"-c listen_addresses='' -k {root / 'socket'} -c fsync=off -c max_connections=60"
        _run(server._as_owner([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l",
                               str(root / "log"), "-o", options, "-w", "-t",
                               str(START_TIMEOUT), "start"]))
    except BaseException:
        log = root / "log"
        text = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {text}") from None
    return server


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT + 30,
                          check=False, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout

"""The write-ahead ledger: what a run may have created, written before it creates it.

A run records itself in `.cdd/runs/<run_id>/ledger.json` *before* the first `vagrant up`
and updates the record as machines come up. Teardown in another process (`cdd destroy`, the
reaper) needs nothing else: not the process that started the run, not its memory, not even
Vagrant's own `.vagrant` state, because every machine's provider-level name is derived from
the run id. While a run is alive it holds an exclusive lock on `.cdd/runs/<run_id>/lock`, so
other processes can tell a live run from the remains of a killed one. Every run is also
registered in the host-wide index (index.py), so the reaper finds it from anywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cdd_ci.history import store as history_store
from cdd_ci.host import subnets
from cdd_ci.host.index import HostIndex
from cdd_ci.infra import proctree

if TYPE_CHECKING:
    from cdd_ci.config import Config

LEDGER = "ledger.json"
LOCK = "lock"
SSH_CONFIG = "ssh-config"


class LedgerPhase(StrEnum):
    """Where a run stands, as its ledger tells `cdd destroy`, `cdd status` and the reaper."""

    CREATED = "created"
    """Recorded; machines may be coming up (the ledger is written before `vagrant up`)."""
    CHECKING = "checking"
    UP = "up"
    """Built by `cdd up`: up for the day, until `cdd down` (or the reaper, once too old)."""
    KEPT = "kept"
    """Kept on purpose by `--destroy never` or `--destroy passing`."""
    HELD = "held"
    """A failed run held for debugging until the ledger's `hold_until`."""
    DESTROYING = "destroying"
    DESTROY_FAILED = "destroy-failed"

    @property
    def kept_by_design(self) -> bool:
        """Machines still up because someone asked for it, not because their cdd died."""
        return self in KEPT_BY_DESIGN


KEPT_BY_DESIGN = frozenset({LedgerPhase.UP, LedgerPhase.KEPT, LedgerPhase.HELD})


@dataclass
class Ledger:
    run_id: str
    environment: str
    directory: str
    """The Vagrantfile directory."""
    provider: str
    machines: list[str]
    vagrant_env: dict[str, str]
    """Exactly the variables the run gave Vagrant; destroy must see the same Vagrantfile."""
    started_at: float
    command: str = "run"
    pid: int = field(default_factory=os.getpid)
    pid_started: int = field(default_factory=lambda: proctree.started(os.getpid()))
    """When the owner process started: with `pid`, tells that cdd from a later one (pids are
    reused), so `cdd destroy` signals only the process that owns the run."""
    host: str = field(default_factory=socket.gethostname)
    config: str = ""
    machine_states: dict[str, str] = field(default_factory=dict)
    phase: LedgerPhase = LedgerPhase.CREATED
    finished_at: float = 0.0
    hold_until: float = 0.0
    """Set when a failed environment is kept for debugging; the reaper honours it."""
    history: str = ""
    """The history database this run is counted in, so whoever destroys it can close it (a
    URL without its password: see history.store.usable_location)."""

    def __post_init__(self) -> None:
        try:
            self.phase = LedgerPhase(self.phase)
        except ValueError:
            # a phase from another version of cdd: not kept by design, so a dead run's
            # machines are still reaped rather than left up for ever
            self.phase = LedgerPhase.CREATED

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        """A ledger as written by this or another version of cdd: fields it does not know
        (such as the `heartbeat` early versions wrote) are dropped, not fatal, so the machines
        it records can still be destroyed."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def subnets_on_host() -> list[str]:
    """Subnets of the runs recorded on this host (live, kept, held or leaked)."""
    out = []
    for entry in HostIndex.from_environ().entries():
        try:
            ledger = LedgerStore(entry.state_dir).read(entry.run_id)
        except (OSError, ValueError, TypeError):
            continue  # gone or half-written: it holds nothing worth avoiding
        if subnets.VARIABLE in ledger.vagrant_env:
            out.append(ledger.vagrant_env[subnets.VARIABLE])
    return out


def new_ledger(
    config: Config,
    command: str,
    run_id: str | None = None,
    subnets_in_use: Callable[[], list[str]] = subnets_on_host,
) -> Ledger:
    """The record of a new run, before anything is built: the names, the subnet and the
    environment Vagrant will be given, so that anyone can destroy the run from it alone."""
    run_id = run_id or new_run_id()
    store = LedgerStore(config.state_dir)
    own = {} if subnets.VARIABLE in config.environment.env else {
        subnets.VARIABLE: subnets.allocate(run_id, config.environment.provider, subnets_in_use())
    }
    return Ledger(
        run_id=run_id,
        environment=config.environment.name,
        directory=str(config.vagrant_dir),
        provider=config.environment.provider,
        machines=list(config.environment.machines),
        vagrant_env={
            "CDD_RUN_ID": run_id,
            "VAGRANT_DEFAULT_PROVIDER": config.environment.provider,
            # one Vagrant state directory per run: two runs never share `.vagrant/`
            "VAGRANT_DOTFILE_PATH": str(store.run_dir(run_id) / "vagrant"),
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
            **own,
            **config.environment.env,
        },
        started_at=time.time(),
        command=command,
        config=str(config.root),
        # never its password: the ledger is a plain file that outlives the run
        history=history_store.kept_location(str(config.history_path)),
    )


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


class LedgerStore:
    """The ledgers of one project, under its state directory (`.cdd/`)."""

    def __init__(self, state_dir: Path, index: HostIndex | None = None) -> None:
        self.runs_dir = state_dir / "runs"
        self.index = index or HostIndex.from_environ()
        self.index_error = ""
        """Why the last run could not be registered host-wide (the run goes on regardless:
        the reaper still finds its machines by name, only later)."""

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def write(self, ledger: Ledger) -> None:
        """Atomically replace the record: a crash mid-write must not lose it."""
        path = self.run_dir(ledger.run_id) / LEDGER
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        text = json.dumps(asdict(ledger), indent=2, sort_keys=True)
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        try:
            self.index.register(ledger.run_id, path.parent, ledger.environment, text)
        except OSError as exc:
            self.index_error = f"{self.index.directory}: {exc}"

    def read(self, run_id: str) -> Ledger:
        return Ledger.from_json((self.run_dir(run_id) / LEDGER).read_text(encoding="utf-8"))

    def all(self) -> list[Ledger]:
        """Every recorded run, oldest first; unreadable records are skipped, not fatal."""
        out: list[Ledger] = []
        if not self.runs_dir.is_dir():
            return out
        for path in sorted(self.runs_dir.glob(f"*/{LEDGER}")):
            try:
                out.append(Ledger.from_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda led: led.started_at)

    def forget(self, run_id: str) -> None:
        """Drop a run whose machines are verified gone; its logs live on in reports/."""
        run_dir = self.run_dir(run_id)
        for path in sorted(run_dir.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        if run_dir.exists():
            run_dir.rmdir()
        # the ledger first: a crash in between leaves a stale pointer, which the reaper
        # drops, rather than a ledger that nothing on the host points to
        try:
            self.index.unregister(run_id)
        except OSError:
            pass

    def ssh_config(self, run_id: str) -> str:
        """`vagrant ssh-config` as `cdd up` left it ("" if none): addresses do not change
        while the machines run, and asking Vagrant again costs a Ruby start-up."""
        try:
            return (self.run_dir(run_id) / SSH_CONFIG).read_text(encoding="utf-8")
        except OSError:
            return ""

    def keep_ssh_config(self, run_id: str, text: str) -> None:
        path = self.run_dir(run_id) / SSH_CONFIG
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o600)
            os.replace(tmp, path)
        except OSError:
            pass  # only a cache: the next `cdd check` asks Vagrant

    def drop_ssh_config(self, run_id: str) -> None:
        (self.run_dir(run_id) / SSH_CONFIG).unlink(missing_ok=True)

    def acquire(self, run_id: str) -> IO[str]:
        """Hold the run's liveness lock for as long as the returned file stays open."""
        path = self.run_dir(run_id) / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("w")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write(str(os.getpid()))
        fh.flush()
        return fh

    def is_live(self, run_id: str) -> bool:
        """True while some process holds the run's lock (flock dies with its holder)."""
        path = self.run_dir(run_id) / LOCK
        if not path.exists():
            return False
        with path.open("a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False

    @contextmanager
    def hold(self, run_id: str) -> Iterator[bool]:
        """Take a recorded run's lock for a while, if nobody holds it; yields whether we do.

        Whoever destroys a run that is not theirs (the reaper, `cdd down`, clearing
        leftovers) holds its lock meanwhile: a second reaper then sees it as busy and keeps
        off, instead of the two destroying, and forgetting, the same run at once.
        """
        path = self.run_dir(run_id) / LOCK
        if not path.parent.is_dir():
            yield False
            return
        with path.open("a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True


def claim_directory(
    directory: Path,
    *,
    timeout: float,
    on_wait: Callable[[str], None],
    poll: float = 1.0,
) -> IO[str]:
    """Wait until no other run is using this Vagrantfile directory, then hold it.

    Vagrant's machine index (in ~/.vagrant.d) matches machines by name, provider and
    Vagrantfile directory, not by state directory: two runs of one directory at the same
    time share index entries and their locks, and fail at random with "machine is locked".
    So runs of one directory take turns; runs of different directories never wait.
    """
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"cdd-vagrant-dir-{digest}.lock"
    fh = path.open("a+")
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.close()
                raise TimeoutError(f"another cdd run is still using {directory} after "
                                   f"{timeout:.0f} s") from None
            if not told:
                on_wait(f"another cdd run is using {directory}: waiting for it to finish")
                told = True
            time.sleep(poll)
    return fh

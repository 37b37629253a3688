"""Run history: every run, and every `cdd up`/`cdd down`, in one SQLite file.

What is kept is what the savings report needs and what a person asks afterwards ("when did
the machines of that run exist, and how big were they?"):

    runs      one row per run id: environment, provider, commit, when it started, when its
              machines were verified gone (NULL while any may exist), the verdict
    machines  the run's machines with their CPUs and memory
    events    one row per command that touched the run: run, up, down, reap, destroy
    phases    start and end of each phase of each event, per machine where it applies
    inventories  per machine of a run: the box and its version, the package manager, the
              list of its packages, and why they are not known, if they are not
    package_lists  each distinct list of installed packages and versions, once: runs of
              unchanged machines share one (a year of daily runs is a few MB, not 50)
    tools     per run: the host's Vagrant and its plugins, with their versions

The file defaults to `.cdd/history.sqlite` (`[report] history` in cdd.toml), beside the
ledgers: the shipped workflows clean the workspace but for `.cdd/`, so on a self-hosted
runner the history survives from run to run with nothing to carry (an absolute path shares
one history among the runners of a host). The schema version is SQLite's `user_version`;
a newer cdd migrates an older file, an older cdd refuses a newer one rather than guess.
Writers from several processes are safe: WAL journal, a busy timeout, and every write in one
`BEGIN IMMEDIATE` transaction. Callers treat every error here as a warning: history never
decides a verdict.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cdd_ci import text
from cdd_ci.models import OUTCOMES, Inventory, MachineInventory, Package, RunResult

SCHEMA_VERSION = 3
BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another; a history that is slower than that is skipped."""

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    provider TEXT NOT NULL,
    command TEXT NOT NULL,
    commit_sha TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    released_at REAL,
    released_by TEXT,
    outcome TEXT,
    hold_until REAL
);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE TABLE machines (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    name TEXT NOT NULL,
    cpus INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    command TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT
);
CREATE TABLE phases (
    event_id INTEGER NOT NULL REFERENCES events (id),
    phase TEXT NOT NULL,
    machine TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    status TEXT NOT NULL
);
"""
_INVENTORY = """
CREATE TABLE inventories (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    machine TEXT NOT NULL,
    box TEXT NOT NULL DEFAULT '',
    box_version TEXT NOT NULL DEFAULT '',
    manager TEXT NOT NULL DEFAULT '',
    problem TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, machine)
);
CREATE TABLE packages (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    machine TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (run_id, machine, name)
);
CREATE TABLE tools (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX runs_by_environment ON runs (environment, started_at);
"""
_SHARED_LISTS = """
CREATE TABLE package_lists (
    list_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (list_id, name)
) WITHOUT ROWID;
ALTER TABLE inventories ADD COLUMN packages TEXT NOT NULL DEFAULT '';
INSERT INTO package_lists SELECT run_id || '/' || machine, name, version FROM packages;
UPDATE inventories SET packages = run_id || '/' || machine WHERE EXISTS (
    SELECT 1 FROM packages p WHERE p.run_id = inventories.run_id
    AND p.machine = inventories.machine);
DROP TABLE packages;
"""
"""Version 2 kept every run's packages in full; its lists move over unshared."""
_MIGRATIONS: dict[int, str] = {2: _INVENTORY, 3: _SHARED_LISTS}
"""Version -> SQL that brings a file at version-1 to it."""
VAGRANT = "vagrant"
"""The `tools` row of Vagrant itself; the others are its plugins."""
GREEN = ("run", "up")
"""Commands whose passing run is a green build of the environment (down, reap: not builds)."""




def outcome_of(result: RunResult) -> str:
    return OUTCOMES[result.exit_code()].name


@dataclass(frozen=True)
class GreenRun:
    """The last passing run of an environment: the "before" of what changed."""

    run_id: str
    started_at: float
    commit: str


class HistoryError(Exception):
    """The history file cannot be used (unreadable, locked too long, newer schema)."""


class DriverMissing(HistoryError):
    """A PostgreSQL history, and no driver installed to reach it: the setup is wrong."""


@dataclass(frozen=True)
class MachineSpec:
    name: str
    cpus: int = 1
    memory_mb: int = 1024


@dataclass(frozen=True)
class PhaseSpan:
    phase: str
    machine: str
    started_at: float
    finished_at: float
    status: str = "passed"


@dataclass(frozen=True)
class RunStart:
    """What is known of a run when it starts (or when someone else first meets it)."""

    run_id: str
    environment: str
    provider: str
    command: str
    started_at: float
    machines: tuple[MachineSpec, ...]
    commit: str = ""
    host: str = ""


@dataclass(frozen=True)
class RunUsage:
    """A run as the savings report sees it: which machines existed, from when to when."""

    run_id: str
    environment: str
    command: str
    started_at: float
    machines: tuple[MachineSpec, ...]
    alive_from: float
    """Start of the first `up`; the run's start when no phase was recorded (a killed run)."""
    released_at: float | None
    """None while the machines may still exist."""
    outcome: str = ""
    host: str = ""
    """The runner's host that started it: a shared history holds every runner's runs."""


@dataclass
class Timeline:
    """Phase spans of one command, collected as they happen (from several threads)."""

    clock: Callable[[], float] = time.time
    spans: list[PhaseSpan] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, phase: str, machine: str, started_at: float, status: str = "passed") -> None:
        with self._lock:
            self.spans.append(PhaseSpan(phase, machine, started_at, self.clock(), status))

    @contextmanager
    def span(self, phase: str, machine: str = "environment") -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.add(phase, machine, started)


class Db(Protocol):
    """One open transaction, in SQLite's dialect (`?` placeholders, `INSERT OR IGNORE`)."""

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...


class History(ABC):
    """The run history: one interface, one implementation per kind of database.

    Every call opens, writes and closes (short, safe transactions); every write first brings
    the schema to this cdd's version. `open_history` picks the implementation.
    """

    location: str
    """Where the history is, fit to print (a URL without its password)."""

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Db | None]:
        """A transaction; for reading, None when the history was never written.

        A write transaction excludes every other writer until it ends (migrations included).
        """

    @abstractmethod
    def _version(self, db: Db) -> int:
        """The schema version; 0 for a database without one."""

    @abstractmethod
    def _create(self, db: Db, sql: str) -> None:
        """Run a schema script, translated to the database's dialect."""

    @abstractmethod
    def _set_version(self, db: Db) -> None: ...

    @abstractmethod
    def _has_runs(self, db: Db) -> bool:
        """Whether the `runs` table exists (a version-0 file may be a version-1 one)."""

    @abstractmethod
    def _errors(self) -> tuple[type[Exception], ...]:
        """The driver's own errors, reported as HistoryError."""

    @contextmanager
    def _write(self) -> Iterator[Db]:
        try:
            with self._transaction(write=True) as db:
                assert db is not None
                self._migrate(db)
                yield db
        except HistoryError:
            raise
        except self._errors() as exc:
            raise HistoryError(f"{self.location}: {exc}") from exc

    @contextmanager
    def _read(self, *, since: int = SCHEMA_VERSION) -> Iterator[Db | None]:
        """A transaction on a history at schema `since` or later (never newer than this cdd's
        version); None for one not written yet, or older (upgraded by its next write)."""
        try:
            with self._transaction(write=False) as db:
                if db is None:
                    yield None
                    return
                version = self._version(db)
                if version > SCHEMA_VERSION:
                    self._migrate(db)  # raises the "newer cdd" error
                yield db if version >= since else None
        except HistoryError:
            raise
        except self._errors() as exc:
            raise HistoryError(f"{self.location}: {exc}") from exc

    def _migrate(self, db: Db) -> None:
        version = self._version(db)
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.location}: written by a newer cdd (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade cdd or point [report] history elsewhere"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0 and not self._has_runs(db):
            self._create(db, _SCHEMA)
            version = 1
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            self._create(db, _MIGRATIONS[target])
        self._set_version(db)

    # -- writing -----------------------------------------------------------------------

    def begin(
        self, start: RunStart, *, command: str | None = None, at: float | None = None
    ) -> int:
        """Record a run as it starts (before any machine exists); returns the event id.

        A run killed outright never reaches `finish`, yet its machines are counted: from
        its start until whoever destroys it `note`s the release. `command` and `at` are
        for an event of another command on a run that already started.
        """
        with self._write() as db:
            self._ensure_run(db, start)
            ((event_id,),) = db.all(
                "INSERT INTO events (run_id, command, started_at) VALUES (?, ?, ?)"
                " RETURNING id",
                (start.run_id, command or start.command,
                 start.started_at if at is None else at))
            return int(event_id)

    def finish(
        self,
        event_id: int,
        *,
        finished_at: float,
        outcome: str,
        spans: Sequence[PhaseSpan],
        released_at: float | None = None,
        released_by: str = "",
        hold_until: float | None = None,
        commit: str = "",
    ) -> None:
        """Close an event: its phases, the verdict, and whether the machines are gone."""
        with self._write() as db:
            rows = db.all("SELECT run_id, command FROM events WHERE id = ?", (event_id,))
            if not rows:
                raise HistoryError(f"{self.location}: no event {event_id}")
            run_id, command = rows[0]
            db.run("UPDATE events SET finished_at = ?, outcome = ? WHERE id = ?",
                   (finished_at, outcome, event_id))
            db.many(
                "INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?)",
                [(event_id, s.phase, s.machine, s.started_at, s.finished_at, s.status)
                 for s in spans])
            if command in ("run", "up"):
                db.run("UPDATE runs SET outcome = ?, hold_until = ? WHERE run_id = ?",
                       (outcome, hold_until, run_id))
            if commit:
                db.run("UPDATE runs SET commit_sha = ? WHERE run_id = ?", (commit, run_id))
            if released_at is not None:
                db.run(
                    "UPDATE runs SET released_at = ?, released_by = ? "
                    "WHERE run_id = ? AND released_at IS NULL",
                    (released_at, released_by or command, run_id))

    def note(
        self,
        start: RunStart,
        *,
        command: str,
        started_at: float,
        finished_at: float,
        outcome: str,
        spans: Sequence[PhaseSpan],
        released: bool,
    ) -> None:
        """One whole event by another command (down, reap, destroy) on a recorded run.

        `start` describes the run in case this history never saw it begin (its ledger
        named another file, or the file was lost): the hours are still counted.
        """
        event_id = self.begin(start, command=command, at=started_at)
        self.finish(event_id, finished_at=finished_at, outcome=outcome, spans=spans,
                    released_at=finished_at if released else None, released_by=command)

    @staticmethod
    def _ensure_run(db: Db, start: RunStart) -> None:
        db.run(
            "INSERT OR IGNORE INTO runs (run_id, environment, provider, command, commit_sha,"
            " host, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (start.run_id, start.environment, start.provider, start.command, start.commit,
             start.host, start.started_at))
        db.many(
            "INSERT OR IGNORE INTO machines VALUES (?, ?, ?, ?)",
            [(start.run_id, m.name, m.cpus, m.memory_mb) for m in start.machines])

    def record_inventory(self, run_id: str, inventory: Inventory) -> None:
        """What the run's machines were built from and ended up with (replaces any earlier)."""
        with self._write() as db:
            for table in ("inventories", "tools"):
                db.run(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            lists = [_list_id(m.packages) for m in inventory.machines]
            db.many(
                "INSERT INTO inventories (run_id, machine, box, box_version, manager,"
                " problem, packages) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, m.machine, m.box, m.box_version, m.manager, m.problem, list_id)
                 for m, list_id in zip(inventory.machines, lists, strict=True)])
            for machine, list_id in zip(inventory.machines, lists, strict=True):
                if list_id and not db.all(
                        "SELECT 1 FROM package_lists WHERE list_id = ? LIMIT 1", (list_id,)):
                    db.many(
                        "INSERT OR IGNORE INTO package_lists VALUES (?, ?, ?)",
                        [(list_id, p.name, p.version) for p in machine.packages])
            tools = [Package(VAGRANT, inventory.vagrant)] if inventory.vagrant else []
            # a name listed twice: the last one counts
            latest = {t.name: t.version for t in [*tools, *inventory.plugins]}
            db.many("INSERT INTO tools VALUES (?, ?, ?)",
                    [(run_id, name, version) for name, version in latest.items()])

    # -- reading -----------------------------------------------------------------------

    def last_green(self, environment: str, *, before: float, other_than: str) -> GreenRun | None:
        """The latest run of `environment` that started before `before` and passed.

        Whichever host ran it: a history shared by the runners of a team sees them all.
        """
        with self._read() as db:
            if db is None:
                return None
            rows = db.all(
                "SELECT run_id, started_at, commit_sha FROM runs WHERE environment = ?"
                " AND outcome = 'passed' AND command IN (?, ?) AND started_at < ?"
                " AND run_id != ? ORDER BY started_at DESC LIMIT 1",
                (environment, *GREEN, before, other_than))
        return GreenRun(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def inventory(self, run_id: str) -> Inventory | None:
        """A run's inventory; None when none was recorded (an older cdd, nothing came up)."""
        with self._read() as db:
            if db is None:
                return None
            machines = db.all(
                "SELECT machine, box, box_version, manager, problem FROM inventories"
                " WHERE run_id = ? ORDER BY machine", (run_id,))
            if not machines:
                return None
            packages: dict[str, list[Package]] = {}
            for machine, name, version in db.all(
                    "SELECT i.machine, l.name, l.version FROM inventories i JOIN package_lists l"
                    " ON l.list_id = i.packages WHERE i.run_id = ? AND i.packages != ''"
                    " ORDER BY i.machine, l.name", (run_id,)):
                packages.setdefault(machine, []).append(Package(name, version))
            tools = [Package(name, version) for name, version in db.all(
                "SELECT name, version FROM tools WHERE run_id = ? ORDER BY name", (run_id,))]
        return Inventory(
            tuple(MachineInventory(m, box, version, manager,
                                   tuple(packages.get(m, ())), problem)
                  for m, box, version, manager, problem in machines),
            vagrant=next((t.version for t in tools if t.name == VAGRANT), ""),
            plugins=tuple(t for t in tools if t.name != VAGRANT))

    def usage(self, since: float, until: float) -> list[RunUsage]:
        """Runs whose machines may have existed at some time in [since, until), any host's."""
        with self._read(since=1) as db:  # the tables it reads are those of version 1
            if db is None:
                return []
            rows = db.all(
                "SELECT r.run_id, r.environment, r.command, r.started_at, r.released_at,"
                " COALESCE(r.outcome, ''), r.host,"
                " (SELECT MIN(p.started_at) FROM phases p JOIN events e"
                "  ON p.event_id = e.id WHERE e.run_id = r.run_id AND p.phase = 'up')"
                " FROM runs r WHERE r.started_at < ?"
                " AND (r.released_at IS NULL OR r.released_at > ?)"
                " ORDER BY r.started_at",
                (until, since))
            machines: dict[str, list[MachineSpec]] = {}
            for run_id, name, cpus, memory in db.all(
                    "SELECT run_id, name, cpus, memory_mb FROM machines ORDER BY name"):
                machines.setdefault(run_id, []).append(MachineSpec(name, cpus, memory))
        return [
            RunUsage(run_id, env, command, started, tuple(machines.get(run_id, ())),
                     alive_from=first_up if first_up is not None else started,
                     released_at=released, outcome=outcome, host=host)
            for run_id, env, command, started, released, outcome, host, first_up in rows
        ]

    def schema_version(self) -> int:
        try:
            with self._transaction(write=False) as db:
                return 0 if db is None else self._version(db)
        except self._errors() as exc:
            raise HistoryError(f"{self.location}: {exc}") from exc


class _SqliteDb:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.db.execute(sql, params)

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.db.executemany(sql, rows)


class SqliteHistory(History):
    """One SQLite file: the default, for one machine (or the runners of one host)."""

    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.location = str(path)
        self.timeout = timeout

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_SqliteDb | None]:
        if not write and not self.path.is_file():
            yield None
            return
        with closing(self._connect()) as db:
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield _SqliteDb(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._use_wal(db)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch a new file to WAL once (it stays so). The switch needs the file to itself
        and SQLite answers "locked" at once, without its busy handler, when writers that
        started together race for it: wait as a busy writer would, up to the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _version(self, db: Db) -> int:
        return int(db.all("PRAGMA user_version")[0][0])

    def _set_version(self, db: Db) -> None:
        db.run(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _has_runs(self, db: Db) -> bool:
        return bool(db.all("SELECT 1 FROM sqlite_master WHERE name = 'runs'"))

    def _create(self, db: Db, sql: str) -> None:
        # one statement at a time: executescript() would commit the open transaction
        for statement in sql.split(";"):
            if statement.strip():
                db.run(statement)

    def _errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)


URL_SCHEMES = ("postgresql://", "postgres://")
"""A history location that starts so is a PostgreSQL server; anything else is a file."""


def kept_location(location: str) -> str:
    """What may be written down of a history's location (a run's ledger keeps it): a URL
    without its password, in the user part or as a `password=` parameter; a file as it is."""
    if not location.startswith(URL_SCHEMES):
        return location
    try:
        parts = urlsplit(location)
        has_password = parts.password is not None
    except ValueError:
        return text.without_passwords(location)
    netloc = parts.netloc
    if has_password:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def usable_location(kept: str, configured: str) -> str:
    """The location to open for a history written down as `kept`: `configured` (this
    process's own URL, CDD_HISTORY_URL) when it is the same history with its password;
    otherwise `kept`, and the driver finds the password in PGPASSWORD or ~/.pgpass."""
    if configured and kept.startswith(URL_SCHEMES) and kept_location(configured) == kept:
        return configured
    return kept


def open_history(location: str | Path, *, timeout: float = BUSY_TIMEOUT) -> History:
    """The history at `location`: a PostgreSQL URL, or the path of a SQLite file.

    Raises DriverMissing for a URL when psycopg is not installed.
    """
    if isinstance(location, str) and location.startswith(URL_SCHEMES):
        if importlib.util.find_spec("psycopg") is None:
            raise DriverMissing(
                "a PostgreSQL history needs its driver: pip install 'cdd-ci[postgres]'")
        from cdd_ci.history.postgres import PostgresHistory

        return PostgresHistory(location, timeout=timeout)
    return SqliteHistory(Path(location), timeout=timeout)


def _list_id(packages: Sequence[Package]) -> str:
    """The same packages and versions, the same id: unchanged machines share one list."""
    if not packages:
        return ""
    text = "\n".join(f"{p.name}\t{p.version}" for p in sorted(packages, key=lambda p: p.name))
    return hashlib.sha256(text.encode()).hexdigest()[:32]

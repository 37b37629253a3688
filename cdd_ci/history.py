"""Run history: every run, and every `cdd up`/`cdd down`, in one SQLite file.

What is kept is what the savings report needs and what a person asks afterwards ("when did
the machines of that run exist, and how big were they?"):

    runs      one row per run id: environment, provider, commit, when it started, when its
              machines were verified gone (NULL while any may exist), the verdict
    machines  the run's machines with their CPUs and memory
    events    one row per command that touched the run: run, up, down, reap, destroy
    phases    start and end of each phase of each event, per machine where it applies

The file defaults to `reports/history.sqlite` (`[report] history` in cdd.toml), so CI can
carry it from run to run as a cache or an artifact (upload it after cdd has exited: it is
a single file then). The schema version is SQLite's `user_version`; a newer cdd migrates an
older file, an older cdd refuses a newer one rather than guess. Writers from several
processes are safe: WAL journal, a busy timeout, and every write in one `BEGIN IMMEDIATE`
transaction. Callers treat every error here as a warning: history never decides a verdict.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cdd_ci.models import ExitCode, RunResult

SCHEMA_VERSION = 1
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
_MIGRATIONS: dict[int, str] = {}
"""Version -> SQL that brings a file at version-1 to it; none yet."""


OUTCOMES = {
    ExitCode.OK: "passed",
    ExitCode.CHECKS_FAILED: "checks-failed",
    ExitCode.USAGE: "usage-error",
    ExitCode.INFRASTRUCTURE: "infrastructure-error",
    ExitCode.TEARDOWN: "teardown-failed",
    ExitCode.INTERRUPTED_SIGINT: "interrupted",
    ExitCode.INTERRUPTED_SIGTERM: "interrupted",
}
"""The same words as the job summary's `outcome` output."""


def outcome_of(result: RunResult) -> str:
    return OUTCOMES[result.exit_code()]


class HistoryError(Exception):
    """The history file cannot be used (unreadable, locked too long, newer schema)."""


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


class History:
    """One history file; every call opens, writes and closes (short, safe transactions)."""

    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                self._migrate(db)
                yield db
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
            db.execute("PRAGMA journal_mode = WAL")
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.path}: written by a newer cdd (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade cdd or point [report] history elsewhere"
            )
        if version == 0 and not db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = SCHEMA_VERSION
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute(_MIGRATIONS[target])
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- writing -----------------------------------------------------------------------

    def begin(
        self, start: RunStart, *, command: str | None = None, at: float | None = None
    ) -> int:
        """Record a run as it starts (before any machine exists); returns the event id.

        A run killed outright never reaches `finish`, yet its machines are counted: from
        its start until whoever destroys it `note`s the release. `command` and `at` are
        for an event of another command on a run that already started.
        """
        try:
            with self._write() as db:
                self._ensure_run(db, start)
                cursor = db.execute(
                    "INSERT INTO events (run_id, command, started_at) VALUES (?, ?, ?)",
                    (start.run_id, command or start.command,
                     start.started_at if at is None else at))
                return int(cursor.lastrowid or 0)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc

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
        try:
            with self._write() as db:
                row = db.execute("SELECT run_id, command FROM events WHERE id = ?",
                                 (event_id,)).fetchone()
                if row is None:
                    raise HistoryError(f"{self.path}: no event {event_id}")
                run_id, command = row
                db.execute("UPDATE events SET finished_at = ?, outcome = ? WHERE id = ?",
                           (finished_at, outcome, event_id))
                db.executemany(
                    "INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?)",
                    [(event_id, s.phase, s.machine, s.started_at, s.finished_at, s.status)
                     for s in spans])
                if command in ("run", "up"):
                    db.execute("UPDATE runs SET outcome = ?, hold_until = ? WHERE run_id = ?",
                               (outcome, hold_until, run_id))
                if commit:
                    db.execute("UPDATE runs SET commit_sha = ? WHERE run_id = ?",
                               (commit, run_id))
                if released_at is not None:
                    db.execute(
                        "UPDATE runs SET released_at = ?, released_by = ? "
                        "WHERE run_id = ? AND released_at IS NULL",
                        (released_at, released_by or command, run_id))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc

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
    def _ensure_run(db: sqlite3.Connection, start: RunStart) -> None:
        db.execute(
            "INSERT OR IGNORE INTO runs (run_id, environment, provider, command, commit_sha,"
            " host, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (start.run_id, start.environment, start.provider, start.command, start.commit,
             start.host, start.started_at))
        db.executemany(
            "INSERT OR IGNORE INTO machines VALUES (?, ?, ?, ?)",
            [(start.run_id, m.name, m.cpus, m.memory_mb) for m in start.machines])

    # -- reading -----------------------------------------------------------------------

    def usage(self, since: float, until: float) -> list[RunUsage]:
        """Runs whose machines may have existed at some time in [since, until)."""
        if not self.path.is_file():
            return []
        try:
            with closing(self._connect()) as db:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version == 0:
                    return []
                if version > SCHEMA_VERSION:
                    self._migrate(db)  # raises the "newer cdd" error
                rows = db.execute(
                    "SELECT r.run_id, r.environment, r.command, r.started_at, r.released_at,"
                    " COALESCE(r.outcome, ''),"
                    " (SELECT MIN(p.started_at) FROM phases p JOIN events e"
                    "  ON p.event_id = e.id WHERE e.run_id = r.run_id AND p.phase = 'up')"
                    " FROM runs r WHERE r.started_at < ?"
                    " AND (r.released_at IS NULL OR r.released_at > ?)"
                    " ORDER BY r.started_at",
                    (until, since)).fetchall()
                machines: dict[str, list[MachineSpec]] = {}
                for run_id, name, cpus, memory in db.execute(
                        "SELECT run_id, name, cpus, memory_mb FROM machines ORDER BY name"):
                    machines.setdefault(run_id, []).append(MachineSpec(name, cpus, memory))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: {exc}") from exc
        return [
            RunUsage(run_id, env, command, started, tuple(machines.get(run_id, ())),
                     alive_from=first_up if first_up is not None else started,
                     released_at=released, outcome=outcome)
            for run_id, env, command, started, released, outcome, first_up in rows
        ]

    def schema_version(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

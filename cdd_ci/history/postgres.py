"""The run history on a PostgreSQL server: one history for the runners of a team.

The same schema and migrations as the SQLite file (store.py writes its SQL in SQLite's
dialect; it is translated here). The schema version is the one row of `cdd_schema`. Every
write transaction first takes one advisory lock, as SQLite's `BEGIN IMMEDIATE` does: writers
queue (a migration never races another), readers never wait. The driver, psycopg, is an
optional extra (`cdd-ci[postgres]`): without it a URL is a one-line error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cdd_ci.history.store import SCHEMA_VERSION, Db, History, HistoryError
from cdd_ci.text import without_passwords

if TYPE_CHECKING:
    import psycopg

WRITE_LOCK = 0x0CDD_1157
"""The advisory lock every writer holds for its transaction."""
_DIALECT = (
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),  # PostgreSQL's REAL is 4 bytes: seconds lost
    (re.compile(r"INTEGER PRIMARY KEY AUTOINCREMENT"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),
)


def password(url: str) -> str:
    """The password in `url` ("" without one): a secret to scrub from any output."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def translate(sql: str) -> str:
    """A statement of store.py (SQLite's dialect) as PostgreSQL takes it."""
    for pattern, replacement in _DIALECT:
        sql = pattern.sub(replacement, sql)
    if sql.lstrip().startswith("INSERT OR IGNORE INTO"):
        sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1) + " ON CONFLICT DO NOTHING"
    return sql.replace("?", "%s")


class _PostgresDb:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(translate(sql), params)
            return list(cursor.fetchall()) if cursor.description else []

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(translate(sql), params)

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(translate(sql), rows)


class PostgresHistory(History):
    """The history in a PostgreSQL database, given by a `postgresql://` URL."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.location = without_passwords(url)
        self.timeout = timeout

    def _errors(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.Error,)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_PostgresDb | None]:
        import psycopg
        wait = max(1, int(self.timeout))
        try:
            connection = psycopg.connect(
                self.url, connect_timeout=wait,
                options=f"-c lock_timeout={wait * 1000} -c statement_timeout={wait * 3000}")
        except psycopg.Error as exc:
            # the driver's message may quote the URL: never its password
            secret = password(self.url)
            text = without_passwords(str(exc).strip())
            text = text.replace(secret, "***") if secret else text
            raise HistoryError(f"{self.location}: {text.splitlines()[0]}") from None
        with connection, connection.transaction():
            db = _PostgresDb(connection)
            if write:
                db.run(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            yield db

    def _version(self, db: Db) -> int:
        if not db.all("SELECT to_regclass('cdd_schema')")[0][0]:
            return 0
        rows = db.all("SELECT version FROM cdd_schema")
        return int(rows[0][0]) if rows else 0

    def _set_version(self, db: Db) -> None:
        db.run("CREATE TABLE IF NOT EXISTS cdd_schema (version INTEGER NOT NULL)")
        db.run("DELETE FROM cdd_schema")
        db.run(f"INSERT INTO cdd_schema VALUES ({SCHEMA_VERSION})")

    def _has_runs(self, db: Db) -> bool:
        return bool(db.all("SELECT to_regclass('runs')")[0][0])

    def _create(self, db: Db, sql: str) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                db.run(statement)

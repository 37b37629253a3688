"""A team's history URL carries a password; a run's ledger, a plain file that outlives the
run, keeps the URL without it, and whoever closes the run's hours later borrows it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdd_ci.history.store import kept_location, usable_location
from cdd_ci.host.ledger import LedgerStore, new_ledger

from ..helpers import make_project

SECRET = "s3cr3t-Pa55word"
URL = f"postgresql://cdd:{SECRET}@db.example.com:5432/cdd_history?sslmode=require"


@pytest.mark.parametrize(("location", "kept"), [
    (URL, "postgresql://cdd@db.example.com:5432/cdd_history?sslmode=require"),
    (f"postgres://db/cdd?user=cdd&password={SECRET}", "postgres://db/cdd?user=cdd"),
    ("postgresql://cdd@db/cdd", "postgresql://cdd@db/cdd"),
    ("/var/lib/cdd/history.sqlite", "/var/lib/cdd/history.sqlite"),
])
def test_what_is_written_down_has_no_password(location: str, kept: str) -> None:
    assert kept_location(location) == kept


def test_the_password_comes_back_only_for_the_same_history() -> None:
    kept = kept_location(URL)
    assert usable_location(kept, URL) == URL
    # another server's password is never sent to this one; the driver's PGPASSWORD is
    assert usable_location(kept, "postgresql://cdd:other@elsewhere/cdd") == kept
    assert usable_location(kept, "") == kept
    assert usable_location("/h.sqlite", URL) == "/h.sqlite"


def test_a_runs_ledger_never_holds_the_password(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDD_HISTORY_URL", URL)
    config = make_project(tmp_path)
    ledger = new_ledger(config, "run", subnets_in_use=lambda: [])
    LedgerStore(config.state_dir).write(ledger)
    assert ledger.history == kept_location(URL)
    written = b"".join(p.read_bytes() for p in config.state_dir.rglob("*") if p.is_file())
    assert SECRET.encode() not in written


def test_whoever_closes_the_hours_opens_its_own_url_of_that_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cdd destroy` from the checkout whose cdd.toml holds the URL, password included: the
    ledger's URL without it names the same history, so the configured one is opened."""
    from cdd_ci.history import store
    from cdd_ci.host import release

    monkeypatch.delenv("CDD_HISTORY_URL", raising=False)
    config = make_project(tmp_path)
    ledger = new_ledger(config, "run", subnets_in_use=lambda: [])
    ledger.history = kept_location(URL)
    opened: list[str] = []

    def open_history(location: str) -> store.History:
        opened.append(location)
        raise store.HistoryError("not reached in this test")

    monkeypatch.setattr(store, "open_history", open_history)
    released = release.Released(ledger.run_id)
    for configured in (URL, ""):
        problem = release.record(ledger, "destroy", 0.0, 1.0, store.Timeline(), released,
                                 configured)
        assert problem == "run history not updated: not reached in this test"
    assert opened == [URL, kept_location(URL)]

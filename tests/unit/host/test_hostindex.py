"""The host-wide index: every run of every project is findable, and only while it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdd_ci.durations import format_duration, parse_duration
from cdd_ci.host.index import HostIndex, index_dir
from cdd_ci.host.ledger import Ledger, LedgerStore


def ledger(run_id: str, environment: str = "demo") -> Ledger:
    return Ledger(run_id=run_id, environment=environment, directory="/nowhere",
                  provider="fake", machines=["a"], vagrant_env={}, started_at=0.0)


@pytest.mark.parametrize(("environ", "is_root", "expected"), [
    ({"CDD_STATE_HOME": "/tmp/st"}, True, "/tmp/st/runs"),
    ({"CDD_STATE_HOME": "/tmp/st"}, False, "/tmp/st/runs"),
    ({}, True, "/var/lib/cdd-ci/runs"),
    ({}, False, "/home/u/.local/state/cdd/runs"),
    ({"XDG_STATE_HOME": "/x"}, False, "/x/cdd/runs"),
    ({"CDD_STATE_HOME": ""}, True, "/var/lib/cdd-ci/runs"),
])
def test_where_the_index_lives(environ: dict[str, str], is_root: bool, expected: str) -> None:
    assert index_dir(environ, is_root=is_root, home=Path("/home/u")) == Path(expected)


def test_tests_never_use_the_hosts_index(state_home: Path) -> None:
    assert HostIndex.from_environ().directory == state_home / "runs"
    assert os.environ["CDD_STATE_HOME"] == str(state_home)


def test_runs_of_every_project_are_indexed_until_forgotten(tmp_path: Path) -> None:
    index = HostIndex(tmp_path / "index")
    one = LedgerStore(tmp_path / "p1" / ".cdd", index)
    two = LedgerStore(tmp_path / "p2" / ".cdd", index)
    one.write(ledger("20240101000000-aaaaaa", "web"))
    two.write(ledger("20240101000001-bbbbbb", "db"))
    one.write(ledger("20240101000000-aaaaaa", "web"))  # rewritten as the run goes on
    entries = index.entries()
    assert [(e.run_id, e.environment) for e in entries] == [
        ("20240101000000-aaaaaa", "web"), ("20240101000001-bbbbbb", "db")]
    assert entries[1].state_dir == (tmp_path / "p2" / ".cdd").resolve()
    assert LedgerStore(entries[1].state_dir, index).read("20240101000001-bbbbbb").environment \
        == "db"
    one.forget("20240101000000-aaaaaa")
    assert [e.run_id for e in index.entries()] == ["20240101000001-bbbbbb"]


def test_an_unwritable_index_does_not_stop_the_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = LedgerStore(tmp_path / ".cdd", HostIndex(tmp_path / "file" / "runs"))
    store.write(ledger("20240101000000-aaaaaa"))
    assert store.read("20240101000000-aaaaaa").run_id == "20240101000000-aaaaaa"
    assert "file" in store.index_error


def test_garbage_in_the_index_is_skipped(tmp_path: Path) -> None:
    index = HostIndex(tmp_path)
    (tmp_path / "junk.json").write_text("{not json")
    index.register("20240101000000-aaaaaa", tmp_path / "r")
    assert [e.run_id for e in index.entries()] == ["20240101000000-aaaaaa"]
    with pytest.raises(ValueError):
        index.register("../../etc/passwd", tmp_path)


def test_holding_a_run_keeps_a_second_holder_off(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / ".cdd", HostIndex(tmp_path / "i"))
    store.write(ledger("20240101000000-aaaaaa"))
    with store.hold("20240101000000-aaaaaa") as first:
        assert first
        assert store.is_live("20240101000000-aaaaaa")
        with store.hold("20240101000000-aaaaaa") as second:
            assert not second
    assert not store.is_live("20240101000000-aaaaaa")
    with store.hold("20240101000000-zzzzzz") as missing:
        assert not missing


@pytest.mark.parametrize(("text", "seconds"), [
    ("6h", 6 * 3600), ("30d", 30 * 86400), ("2h30m", 9000), ("90m", 5400), ("1w", 604800),
    ("45s", 45), ("1.5h", 5400), (" 2H ", 7200),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["6", "", "h", "6x", "-1h", "0h", "6h and a bit"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"), (7 * 3600 + 300, "7h05m"),
    (50 * 3600, "2d02h"), (-5, "0s"),
])
def test_formatted_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text

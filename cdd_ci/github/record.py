"""What cdd remembers about one failure between runs, kept hidden in its issue's body.

Each CI run starts on a clean runner, so nothing local survives; the issue does. Its body
starts with two HTML comments (invisible on GitHub): the fingerprint, which is how a later
run finds the issue, and the record as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

VERSION = 1
_FINGERPRINT = re.compile(r"<!-- cdd-fingerprint: ([0-9a-f]{16}) -->")
_RECORD = re.compile(r"<!-- cdd-record: (\{.*?\}) -->")
_GH_REFERENCE = re.compile(r"\b(gh)-(?=\d)", re.IGNORECASE)


@dataclass(frozen=True)
class RunFacts:
    """A run as issues describe it: the one reporting, or the last in which a step passed."""

    run_id: str
    run_url: str
    at: datetime
    commit: str = ""
    provider: str = ""
    box: str = ""
    """`name version` of each box, as Vagrant records it (records of older cdd versions may
    also hold a `box_version`, never written: ignored when read)."""
    vagrant_version: str = ""


@dataclass(frozen=True)
class Record:
    fingerprint: str
    environment: str
    phase: str
    machine: str
    check: str
    first_seen: datetime
    failing_since: datetime
    """Start of the current episode: first_seen, or the run that reopened the issue."""
    last_seen: datetime
    occurrences: int
    last_run_id: str
    """The last run that changed this record: reporting the same run twice changes nothing."""
    last_run_url: str = ""
    last_commit: str = ""
    notified_at: datetime | None = None
    """When cdd last notified watchers (opened, commented, reopened): comments are spaced out."""
    green_streak: int = 0
    last_green: RunFacts | None = None
    """The last run in which the step passed: the "before" of what changed."""
    reopened: int = 0
    summary: bool = False
    """The one issue that collects the failures past the per-run cap."""
    counted: tuple[str, ...] = ()
    """The last runs that counted an occurrence. GitHub has no transactions: a run that finds
    itself missing here after its write was overwritten by another run's, and counts again."""
    count_may_be_low: bool = False
    """Runs reporting at once overwrote a count that could not be put back: the issue says so."""


def marker(fingerprint: str) -> str:
    return f"<!-- cdd-fingerprint: {fingerprint} -->"


def encode(record: Record) -> str:
    """The two hidden lines that start an issue body."""
    # fields added since version 1 are left out while they hold their defaults
    data = {"v": VERSION, **{k: v for k, v in asdict(record).items()
                             if k not in _LATER or v != _LATER[k]}}
    text = json.dumps(data, default=_iso, sort_keys=True, separators=(",", ":"))
    # `-->` inside the JSON would end the comment early, and names from the config could hold
    # a mention or a reference: JSON may escape those characters, so it does
    for char in "<>@#":
        text = text.replace(char, f"\\u{ord(char):04x}")
    text = _GH_REFERENCE.sub(r"\1\\u002d", text)
    return f"{marker(record.fingerprint)}\n<!-- cdd-record: {text} -->"


def fingerprint_of(body: str) -> str | None:
    match = _FINGERPRINT.search(body)
    return match.group(1) if match else None


def decode(body: str) -> Record | None:
    """The record in an issue body; None when absent, unreadable or of a newer version."""
    match = _RECORD.search(body)
    if not match:
        return None
    try:
        data = json.loads(match.group(1))
        if data.pop("v", None) != VERSION:
            return None
        green = data.pop("last_green", None)
        record: Record = _build(Record, data)
        return replace(record, last_green=_build(RunFacts, green)) if green else record
    except (ValueError, TypeError, KeyError):
        return None


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            continue  # written by a later version; ignored rather than fatal
        if name in _DATES:
            value = None if value is None else datetime.fromisoformat(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


_LATER: dict[str, object] = {"counted": (), "count_may_be_low": False}
_DATES = frozenset({"first_seen", "failing_since", "last_seen", "notified_at", "at"})


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")

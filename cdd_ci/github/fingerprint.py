"""Which failures are "the same failure": a fingerprint per distinct failure.

The same check failing the same way on two days must map to one issue, although its message
carries that day's timestamps, addresses, temporary paths and durations. So the message is
normalised first, and the fingerprint covers environment, phase, machine, check and that
normalised message; nothing else (not the log tail, which always differs). The message leads
with the failure's cause (cdd_ci/report/cause.py), not Vagrant's boilerplate, so the fingerprint
follows the cause: one machine failing for two reasons gives two issues.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from cdd_ci.text import clean


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    # a full address has seven colons; a shortened one has "::" (times are gone already)
    return "<ip>" if "::" in text or text.count(":") == 7 else text


_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_EPHEMERAL_PORT = 32768
"""Linux's default lowest ephemeral port: ports from here up are a connection's own and vary;
lower ones are services (5672, 3306) and say which dependency failed, so they are kept."""

# Order matters: timestamps before clock times before hex, UUIDs before hex, and IPv6 (which
# looks like a clock time) after times are gone.
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"),
     "<time>"),
    (re.compile(rf"(?:{_WEEKDAY},? )?{_MONTH} +\d{{1,2}}(?: \d{{4}})? \d{{2}}:\d{{2}}:\d{{2}}"),
     "<time>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
     "<uuid>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?\b"), "<ip>"),
    (re.compile(r"(?<![\w:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])", re.I), _ipv6),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b", re.I), "<hex>"),
    (re.compile(r"(?:/private)?/(?:var/)?tmp/\S+|/var/folders/\S+|/run/user/\d+/\S*"), "<tmp>"),
    (re.compile(r"\btmp[A-Za-z0-9_]{6,}\b"), "<tmp>"),
    (re.compile(r"\b(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?(?:ms|s)\b"), "<duration>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|msec|millis(?:econds?)?|secs?|seconds?|mins?|"
                r"minutes?|hours?|hrs?)\b", re.I), "<duration>"),
    (re.compile(r"\b(pid[ =:]?)\d+\b", re.I), r"\1<pid>"),
    # cdd's run ids (and so machine names cdd-<run id>-<machine>), one per run
    (re.compile(r"\b\d{14}-[0-9a-f]{6}\b"), "<run>"),
    (re.compile(r"\btmp\.[A-Za-z0-9]{6,}\b"), "<tmp>"),  # mktemp's names
    (re.compile(r"(?<=\w)\[\d+\]:"), "[<pid>]:"),  # syslog's "sshd[1234]:"
    # how long the retries went on, and where a script stood, are not what failed
    (re.compile(r"\(after \d+ attempts?\)"), "(after <n> attempts)"),
    (re.compile(r"\bline \d+(?=: )"), "line <n>"),
]
_PORT = re.compile(r"(?<=:)(\d{5})\b|(?<=\bport )(\d{5})\b", re.I)


def normalise(message: str) -> str:
    """The parts of a message that stay the same when the same failure happens again."""
    text = clean(message)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = _PORT.sub(_port, text)
    return " ".join(text.split())[:1000]


def _port(match: re.Match[str]) -> str:
    value = match.group(0)
    return "<port>" if int(value) >= _EPHEMERAL_PORT else value


def fingerprint(environment: str, phase: str, machine: str, check: str, message: str) -> str:
    """Sixteen hex digits naming one distinct failure (64 bits: collisions are not a concern)."""
    key = "\x1f".join([environment, phase, machine, check, normalise(message)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

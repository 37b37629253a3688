"""Untrusted text (check messages, log tails) made safe to put in a GitHub issue.

Logs are written by software we do not control, so they may contain `@someone` (a ping),
`#123` (a cross-reference that shows up on that issue), backtick runs that would end our
code block early, HTML comments that would look like our own state markers, and, worst, a
token. Everything here is pure so that it can be tested with tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cdd_ci.junit import clean

ZWJ = "\u200d"
"""Zero-width joiner: invisible, but GitHub no longer sees a mention or a reference."""

BODY_LIMIT = 65_536
"""GitHub rejects an issue or comment body longer than this (422)."""

REDACTED = "***"

# GitHub's own token formats (classic, fine-grained, app installation, OAuth, refresh):
# redacted wherever they appear, not only the one token we were given.
_TOKEN_SHAPES = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_REFERENCE = re.compile(r"(#|\bGH-)(?=\d)", re.IGNORECASE)
_COMMENT_OPEN = re.compile(r"<!--")
_BACKTICKS = re.compile(r"`+")
_MIN_SECRET = 8
"""Shorter strings are not tokens, and replacing them everywhere would mangle the text."""


class Scrubber:
    """Replaces known secrets, and anything shaped like a GitHub token, by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so that a secret containing another is replaced whole
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _TOKEN_SHAPES.sub(REDACTED, text)


def neutralise(text: str) -> str:
    """Mentions, issue references and HTML comment openers made inert, looking the same."""
    text = _MENTION.sub("@" + ZWJ, text)
    text = _REFERENCE.sub(lambda m: m.group(1) + ZWJ, text)
    return _COMMENT_OPEN.sub("<!" + ZWJ + "--", text)


def one_line(text: str, limit: int = 500) -> str:
    """A message as one line of at most `limit` characters (plus an ellipsis)."""
    line = " ".join(clean(text).split())
    return line if len(line) <= limit else line[:limit].rstrip() + "…"


def code_span(text: str) -> str:
    """Inline code that no backtick inside `text` can end early."""
    text = neutralise(one_line(text))
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fence(text: str, info: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run in `text`."""
    text = neutralise(clean(text)).rstrip("\n")
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, starting on a line boundary where possible."""
    if len(text) <= limit:
        return text
    cut = text[len(text) - max(limit, 0):]
    newline = cut.find("\n")
    if 0 <= newline < len(cut) - 1:
        cut = cut[newline + 1:]
    return cut


def github_length(text: str) -> int:
    """Length as GitHub counts it for its body limit (UTF-16 code units, the larger count)."""
    return len(text.encode("utf-16-le")) // 2

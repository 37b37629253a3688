"""Untrusted text (check messages, log tails) made safe to put in a GitHub issue, or anywhere.

Logs are written by software we do not control, so they may contain `@someone` (a ping),
`#123` (a cross-reference that shows up on that issue), backtick runs that would end our
code block early, HTML comments that would look like our own state markers, and, worst, a
token. Everything here is pure so that it can be tested with tables, except `ScrubbedStream`,
which applies the one `Scrubber` to a stream.

`Scrubber` is the only scrubber: the issues, the job summary, the JUnit report, the logs under
reports/logs (everything a child process prints passes `infra.procs`) and cdd's own stdout and
stderr all use it, built from the environment with `Scrubber.from_env`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from cdd_ci.models import RunResult

ZWJ = "\u200d"
"""Zero-width joiner: invisible, but GitHub no longer sees a mention or a reference."""

BODY_LIMIT = 65_536
"""GitHub rejects an issue or comment body longer than this (422)."""

REDACTED = "***"

# GitHub's own token formats (classic, fine-grained, app installation, OAuth, refresh):
# redacted wherever they appear, not only the one token we were given.
_TOKEN_SHAPES = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")
# the password of any URL (a history's postgresql://user:password@host/db): whoever prints it
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# characters XML 1.0 cannot carry at all, even escaped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_REFERENCE = re.compile(r"(#|\bGH-)(?=\d)", re.IGNORECASE)
_COMMENT_OPEN = re.compile(r"<!--")
_BACKTICKS = re.compile(r"`+")
_MIN_SECRET = 8
"""Shorter strings are not tokens, and replacing them everywhere would mangle the text."""
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PRIVATE|CREDENTIAL|(^|_)KEY($|_)", re.I)
"""Environment variables whose values are secrets (GITHUB_TOKEN, DB_PASSWORD, AWS_SECRET_...)."""


TOKEN_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN", "CDD_GITHUB_TOKEN")
"""Where a GitHub token usually sits in a job's environment. Vagrant, the providers and the
guests never need one: they do not get these at all (`without_tokens`), beside every
secret-looking value being scrubbed from what they print."""


def without_tokens(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a child process (Vagrant, a provider's tool) is given."""
    return {k: v for k, v in environ.items() if k not in TOKEN_VARIABLES}


def without_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


class Scrubber:
    """Replaces known secrets, and anything shaped like a GitHub token, by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so that a secret containing another is replaced whole
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    @classmethod
    def from_env(cls, *envs: Mapping[str, str], secrets: Iterable[str] = ()) -> Scrubber:
        """The values of every secret-looking variable of `envs`, and `secrets`."""
        found = [value for env in envs for name, value in env.items() if _SECRET_NAME.search(name)]
        return cls([*found, *secrets])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return without_passwords(_TOKEN_SHAPES.sub(REDACTED, text))

    def stream(self, target: TextIO) -> TextIO:
        """`target`, scrubbed: for sys.stdout and sys.stderr, which must stay TextIO."""
        return cast(TextIO, ScrubbedStream(target, self))


class ScrubbedStream:
    """A text stream that scrubs what goes through it, a whole line at a time (a token never
    spans lines, but one line is often written in pieces). Everything else is the target's."""

    def __init__(self, target: IO[str], scrub: Scrubber) -> None:
        self._target = target
        self._scrub = scrub
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        end = self._pending.rfind("\n") + 1
        if end:
            self._target.write(self._scrub(self._pending[:end]))
            self._pending = self._pending[end:]
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        # a progress line ends in `\r`, not `\n`, and must show now: scrubbed as it is
        if self._pending:
            self._target.write(self._scrub(self._pending))
            self._pending = ""
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # writing bytes beneath the scrubber would bypass it
            raise AttributeError(name)
        return getattr(self._target, name)


def clean(text: str) -> str:
    """Terminal colours and control characters out; everything else as it was."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


def scrub_run(result: RunResult, scrub: Scrubber) -> RunResult:
    """A copy of `result` whose every message, output and property is scrubbed: done before
    any cut, since half a token is no longer a token the scrubber can find."""
    return replace(
        result,
        steps=[replace(step, name=scrub(step.name), message=scrub(step.message),
                       output=scrub(step.output)) for step in result.steps],
        box=scrub(result.box), vagrant_version=scrub(result.vagrant_version),
        properties={key: scrub(value) for key, value in result.properties.items()},
    )


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


def fit(text: str, limit: int) -> str:
    """`text`, cut with an ellipsis to at most `limit` as GitHub counts length.

    A cut never makes neutralised text live again: it drops the zero-width joiner only with
    everything after it, and `@…` or `#…` mention and reference nothing.
    """
    if github_length(text) <= limit:
        return text
    cut = text[:limit]
    while cut and github_length(cut) > limit - 1:
        cut = cut[:-1]
    return cut.rstrip() + "…"

"""GitHub Actions' runner protocol: workflow commands on stdout and the step-output file.

Only the formatting lives here, as pure functions, so the escaping rules can be tested with
tables; deciding what to say is the summary's job. The rules are GitHub's own (the
`@actions/core` toolkit's `escapeData`/`escapeProperty` and its file-command writer).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def escape_data(text: str) -> str:
    """Escape a command's message: the runner reads up to the end of the line, and `%` is
    its escape character, so both must be encoded or a message could end the command early.
    """
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value: as data, plus `:` and `,`, which separate properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, properties: Mapping[str, str] | None = None) -> str:
    """One workflow command line, e.g. `::error title=Check failed::rabbitmq is down`.

    Properties whose value is empty are left out: GitHub treats `title=` as no title anyway,
    and the line stays readable in the raw log.
    """
    props = ",".join(
        f"{key}={escape_property(value)}" for key, value in (properties or {}).items() if value
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def format_output(name: str, value: str, delimiter: str | None = None) -> str:
    """One entry for `$GITHUB_OUTPUT`, newline-terminated.

    A single-line value is `name=value`; anything with a line break uses the heredoc form
    `name<<DELIMITER`, with a random delimiter that provably occurs in neither the name nor
    the value, since a value that contained it would end the entry early and could inject
    other outputs.
    """
    if not _NAME.match(name):
        raise ValueError(f"not a valid output name: {name!r}")
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delim = delimiter or f"ghadelimiter_{uuid.uuid4()}"
    if delim in name or delim in value:
        raise ValueError(f"output {name!r}: the delimiter occurs in the value")
    return f"{name}<<{delim}\n{value}\n{delim}\n"

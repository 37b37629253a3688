"""The one place templates are rendered: package data under `cdd_ci/templates/`.

Every report and scaffold (issue body, job summary, `cdd init` files) goes through `render`,
so they share one jinja2 environment with the same strictness and the same filters. The
environment is built per call: rendering is rare and cheap, and nothing is left global.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2

from cdd_ci.durations import format_elapsed

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~#$"})


def md(text: object) -> str:
    """Text safe to put inline in Markdown, e.g. a table cell.

    Reasons and names come from commands' output, which may hold anything: escaping keeps
    a stray `|` from splitting a table and `<`/`*` from turning into markup. Line breaks
    become spaces because a cell or list item is one line.
    """
    flat = " ".join(str(text).split())
    return flat.translate(_SPECIAL)


def quote(value: object) -> str:
    """A string or list as a double-quoted literal valid in TOML, YAML and JSON alike.

    JSON's escapes are a subset of what TOML basic strings and YAML double-quoted scalars
    accept, so one filter serves cdd.toml and the workflow files.
    """
    return json.dumps(value, ensure_ascii=False)


def environment() -> jinja2.Environment:
    """The jinja2 environment for every template of the package.

    StrictUndefined: a misspelt variable is a crash in the tests, not a blank in an issue.
    No autoescape: none of the outputs is HTML; each template escapes for its own format
    with the filters above.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cdd_ci", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = md
    env.filters["quote"] = quote
    env.filters["duration"] = format_elapsed
    return env


def render(template_name: str, **context: Any) -> str:
    """Render `cdd_ci/templates/<template_name>` with `context`."""
    return environment().get_template(template_name).render(**context)

"""Counts read as people write them: never "1 machines", never "run(s)"."""

from __future__ import annotations

import pytest

from cdd_ci.words import plural


@pytest.mark.parametrize(("count", "noun", "nouns", "said"), [
    (0, "run", "", "0 runs"),
    (1, "run", "", "1 run"),
    (2, "machine", "", "2 machines"),
    (1, "process", "processes", "1 process"),
    (3, "process", "processes", "3 processes"),
    (1, "stale index entry", "stale index entries", "1 stale index entry"),
    (2, "stale index entry", "stale index entries", "2 stale index entries"),
])
def test_plural(count: int, noun: str, nouns: str, said: str) -> None:
    assert plural(count, noun, nouns) == said

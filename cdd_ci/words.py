"""Counts in words, as people write them: "1 machine", "2 machines", "1 index entry"."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str = "") -> str:
    """`count` and the noun it takes; `nouns` for a plural that is not `noun` + "s"."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"

"""Durations as people write them on a command line (`6h`, `30d`, `2h30m`), and moments
as they read them in a log (UTC, always: runners and laptops disagree on time zones)."""

from __future__ import annotations

import re
import time

UNITS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError with a message fit for the user.

    A bare number is refused: "6" could mean hours or days, and a reaper that reads it
    as seconds destroys everything.
    """
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"{text!r} is not a duration (examples: 90m, 6h, 2h30m, 30d, 1w)")
    seconds = sum(float(n) * UNITS[unit] for n, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Short and readable: 45s, 12m, 3h05m, 2d04h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(timestamp: float) -> str:
    """2024-05-06 17:30 UTC"""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def format_elapsed(seconds: float) -> str:
    """How long a step took, to the tenth of a second while that matters: 0.4s, 3m 05s."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"

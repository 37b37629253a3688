"""Does the runner reach the internet? One TCP connection to a configured target.

An environment that clones from the internet (`environment.needs_network`) is refused on a
runner without it before anything is built: a half-built environment fails later, slower and
with a message about git rather than about the runner.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_PROBE = "https://opendev.org"
DEFAULT_TIMEOUT = 5.0
_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """`https://host[:port][/path]`, `http://...` or `host:port` (`[v6]:port`)."""
    text = text.strip()
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in _PORTS:
            raise ValueError("expected an http(s) URL or host:port")
        try:
            port = parts.port or _PORTS[parts.scheme]
        except ValueError:
            raise ValueError("bad port") from None
        if not parts.hostname:
            raise ValueError("no host in the URL")
        return Target(parts.hostname, port)
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("expected an http(s) URL or host:port")
    return Target(host, int(port_text))


Connect = Callable[[tuple[str, int], float], socket.socket]


def probe(
    target: str, timeout: float = DEFAULT_TIMEOUT, *, connect: Connect = socket.create_connection
) -> str | None:
    """None when a TCP connection to `target` opens within `timeout` seconds; else why not
    (one line, e.g. "[Errno 111] Connection refused").

    The name lookup counts against the timeout too (getaddrinfo has none of its own), so the
    attempt runs in a thread that is given up on, not waited for.
    """
    where = parse_target(target)
    outcome: list[str] = []

    def attempt() -> None:
        try:
            with connect((where.host, where.port), timeout):
                outcome.append("")
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, name=f"probe {where}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0] or None

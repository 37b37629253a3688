"""What every provider module shares: the machine's name scheme, and running its tool."""

from __future__ import annotations

import calendar
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from cdd_ci.infra import procs

TIMEOUT = 60.0
NAME_RE = re.compile(r"^cdd-(\d{14}-[0-9a-f]{6})-(.+)$")


class ListingFailed(Exception):
    """The provider's tool could not say what exists (it failed, or did not answer in time)."""


@dataclass(frozen=True)
class Resource:
    provider: str
    name: str
    run_id: str
    machine: str

    def __str__(self) -> str:
        return f"{self.provider} {self.name}"


def machine_name(run_id: str, machine: str) -> str:
    return f"cdd-{run_id}-{machine}"


def started_at(run_id: str) -> float | None:
    """When a run started, from its id (`YYYYmmddHHMMSS-xxxxxx`, UTC); None if not one."""
    try:
        return float(calendar.timegm(time.strptime(run_id[:14], "%Y%m%d%H%M%S")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Driver:
    """One provider: how its machines are listed, stopped at once and removed."""

    name: str
    tool: Callable[[], str]
    """The executable whose presence means the provider can have machines here."""
    listing: Callable[[], list[Resource]]
    stop_argv: Callable[[str], list[str]]
    remove_argvs: Callable[[str], list[list[str]]]
    sockets: Callable[[], list[str]] = lambda: []
    """The daemon's Unix sockets, any of which answering means it runs (none: no daemon)."""
    vagrant_pulls_the_plug: bool = False
    """Vagrant's own destroy powers the machine off at once, with no polite shutdown, so
    stopping it first would only put a step in front of Vagrant's start-up."""

    def installed(self) -> bool:
        return shutil.which(self.tool()) is not None

    def in_service(self) -> bool:
        """Installed, and its daemon (if it has one) is running.

        A runner often carries a provider's client without its daemon (a docker CLI in the
        image, libvirt's clients pulled in by another package); nothing of that provider can
        be created there, and its listing only fails.
        """
        paths = self.sockets()
        return self.installed() and (not paths or any(answers(p) for p in paths))


def answers(path: str) -> bool:
    """A Unix socket that something listens on (absent or refused: no daemon)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def lines(provider: str, argv: list[str]) -> list[str]:
    """The non-empty lines a listing printed; ListingFailed if it did not succeed."""
    what = f"listing {provider} machines failed: `{' '.join(argv)}`"
    try:
        result = procs.run(argv, timeout=TIMEOUT)
    except procs.CommandTimeout as exc:
        raise ListingFailed(f"{what} did not answer in {TIMEOUT:.0f}s") from exc
    except OSError as exc:
        raise ListingFailed(f"{what} could not start: {exc}") from exc
    if result.exit_code != 0:
        why = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ListingFailed(f"{what} exited {result.exit_code}: {why[0]}")
    return [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]


def named(provider: str, names: list[str]) -> list[Resource]:
    """The cdd machines among a provider's machine names."""
    out = []
    for name in names:
        match = NAME_RE.match(name)
        if match:
            out.append(Resource(provider, name, match.group(1), match.group(2)))
    return out


def run_tolerating_failure(argv: list[str]) -> None:
    """Run a stop or remove command whose failure the listing afterwards judges."""
    try:
        procs.run(argv, timeout=TIMEOUT)
    except (OSError, procs.CommandTimeout):
        pass

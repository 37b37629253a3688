"""SIGINT and SIGTERM turned into one orderly teardown.

A cancelled GitHub Actions job gets SIGINT, then SIGTERM 7.5 s later, then SIGKILL: about
ten seconds in all. The first signal cancels the build at once (running Vagrant process
groups are killed, so nothing keeps building) and raises Interrupted in the main thread, so
the lifecycle's `finally` starts destroying immediately. Later signals are noted and
ignored: interrupting the teardown itself is what leaks machines.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from cdd_ci.infra import procs


class Interrupted(BaseException):
    """Raised once, on the first signal. A BaseException so no `except Exception` eats it."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


class Cancellation:
    """Shared by the lifecycle and its worker threads."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signame = ""
        self.build = procs.new_registry()
        """Processes that build; killed on cancellation. Teardown uses its own."""

        self.shielded = False
        """Set once teardown starts: a signal is then noted, never raised."""

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def shield(self) -> None:
        self.shielded = True

    def cancel(self, signame: str) -> None:
        if not self.signame:
            self.signame = signame
        self.event.set()
        self.build.cancel()


@contextmanager
def interruptible(cancellation: Cancellation) -> Iterator[None]:
    """Install the handlers for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        first = not cancellation.cancelled
        cancellation.cancel(signal.Signals(signum).name)
        if first and not cancellation.shielded:
            raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""Progress for people: a live per-machine view on a terminal, plain lines in a CI log.

Vagrant's full output goes to `reports/logs/<machine>/*.log`; the screen shows only the
latest line per machine (terminal) or Vagrant's `==>` milestones (CI log), so a two-minute
build reads at a glance either way.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.status import Status as Spinner

from cdd_ci.models import Status, StepResult

MARKS = {
    Status.PASSED: "[green]✔ passed[/]",
    Status.FAILED: "[red]✘ FAILED[/]",
    Status.ERROR: "[magenta]✘ ERROR[/]",
    Status.SKIPPED: "[yellow]- skipped[/]",
}


class Display(Protocol):
    """Where progress goes: a live terminal view, or plain lines in a CI log."""

    def phase(self, text: str) -> None: ...

    def line(self, machine: str, text: str) -> None: ...

    def step(self, step: StepResult) -> None: ...

    def warn(self, text: str) -> None: ...


class ConsoleDisplay:
    def __init__(self, console: Console | None = None) -> None:
        # CI logs are read in a browser: long lines must not be wrapped at 80 columns
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal
        self._lock = threading.Lock()
        self._latest: dict[str, str] = {}
        self._spinner: Spinner | None = None
        self._started = time.monotonic()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self._started:6.1f}s[/]"

    def phase(self, text: str) -> None:
        with self._lock:
            self._stop_spinner()
            self.console.print(f"{self._stamp()} [bold]{escape(text)}[/]")

    def line(self, machine: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        with self._lock:
            if self.live:
                self._latest[machine] = text[:100]
                status = "   ".join(f"[cyan]{escape(m)}[/] {escape(t)}"
                                    for m, t in sorted(self._latest.items()))
                if self._spinner is None:
                    self._spinner = self.console.status(status)
                    self._spinner.start()
                else:
                    self._spinner.update(status)
            elif text.startswith("==>") or "rror" in text:
                self.console.print(f"{self._stamp()} [cyan]{escape(machine)}[/] "
                                   f"{escape(text[:200])}")

    def step(self, step: StepResult) -> None:
        with self._lock:
            self._stop_spinner()
            detail = f" — {escape(step.message)}" if step.message and not step.ok else ""
            self.console.print(
                f"{self._stamp()} {MARKS[step.status]} {escape(step.machine)}: "
                f"{escape(step.name)} [dim]({step.duration:.1f}s)[/]{detail}"
            )

    def warn(self, text: str) -> None:
        with self._lock:
            self._stop_spinner()
            self.console.print(f"[bold yellow on red] WARNING [/] [bold yellow]{escape(text)}[/]")

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
            self._latest.clear()


class QuietDisplay:
    """For tests and library use: remembers, prints nothing."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def phase(self, text: str) -> None:
        self.events.append(f"phase {text}")

    def line(self, machine: str, text: str) -> None:
        pass

    def step(self, step: StepResult) -> None:
        self.events.append(f"{step.status.value} {step.machine} {step.name}")

    def warn(self, text: str) -> None:
        self.events.append(f"warn {text}")

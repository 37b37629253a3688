"""`cdd status`: this host's cdd environments, one row per run, and what `cdd reap` would
do with each (the reasons under the table, where a CI log has room for them)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cdd_ci.durations import format_duration, format_time
from cdd_ci.inventory import Inventory
from cdd_ci.reaper import judge


def render(inventory: Inventory, *, now: float, older_than: float) -> RenderableType:
    parts: list[RenderableType] = []
    if not inventory.runs:
        parts.append(Text("no cdd environments on this host"))
    else:
        table = Table(title=f"cdd environments on {inventory.host}", title_justify="left",
                      box=None, header_style="bold", pad_edge=False)
        for column in ("run", "environment", "by", "stage", "process", "age", "held until",
                       "machines left", "reap?"):
            table.add_column(column, no_wrap=column in ("run", "age"))
        reasons = []
        for run in inventory.runs:
            verdict = judge(run, now=now, older_than=older_than, host=inventory.host)
            reasons.append(f"{run.run_id}: {'reap' if verdict.reap else 'keep'}, "
                           f"{verdict.reason}")
            led = run.ledger
            table.add_row(
                run.run_id,
                run.environment or "-",
                f"cdd {led.command}" if led else "-",
                run.stage,
                ("[green]live[/]" if run.live else "gone") if led else "-",
                format_duration(now - run.started_at) if run.started_at is not None else "-",
                format_time(led.hold_until) if led and led.hold_until else "-",
                ", ".join(run.machines_left) or "none",
                "[red]yes[/]" if verdict.reap else "no",
            )
        parts += [table, Text(f"\nwhat `cdd reap --older-than {format_duration(older_than)}` "
                              "would do:", style="bold")]
        parts += [Text(f"  {line}") for line in reasons]
    parts += [Text(f"warning: {p}", style="yellow") for p in inventory.problems]
    return Group(*parts)

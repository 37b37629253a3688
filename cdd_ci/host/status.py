"""`cdd status`: this host's cdd environments, one row per run, and what `cdd reap` would
do with each (the reasons under the table, where a long line has room for them).

Six columns, so that a run id, a status word and a name are never cut on an 80-column
terminal: who started the run, how far it got and whether its process lives share one cell.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from cdd_ci.durations import format_duration, format_time
from cdd_ci.history.store import RunUsage
from cdd_ci.host.inventory import HostRun, Inventory
from cdd_ci.host.reaper import judge
from cdd_ci.report import tables

COLUMNS = (tables.Column("run", whole=True), tables.Column("environment"),
           tables.Column("state"), tables.Column("age", whole=True),
           tables.Column("machines left"), tables.Column("reap?", whole=True))


def render(inventory: Inventory, *, now: float, older_than: float,
           terminal: bool = True) -> RenderableType:
    parts: list[RenderableType] = []
    if not inventory.runs:
        parts.append(Text("no cdd environments on this host"))
    else:
        rows: list[list[tables.Cell]] = []
        reasons = []
        for run in inventory.runs:
            verdict = judge(run, now=now, older_than=older_than, host=inventory.host)
            reasons.append(f"{run.run_id}: {'reap' if verdict.reap else 'keep'}, "
                           f"{verdict.reason}")
            rows.append([
                run.run_id,
                run.environment or "-",
                _state(run),
                format_duration(now - run.started_at) if run.started_at is not None else "-",
                ", ".join(run.machines_left) or "none",
                Text("yes", style="red") if verdict.reap else "no",
            ])
        parts += [tables.render(tables.Table(COLUMNS, rows,
                                             title=f"cdd environments on {inventory.host}"),
                                terminal=terminal),
                  Text(f"\nwhat `cdd reap --older-than {format_duration(older_than)}` "
                       "would do:", style="bold")]
        parts += [Text(f"  {line}") for line in reasons]
    parts += [Text(f"warning: {p}", style="yellow") for p in inventory.problems]
    return Group(*parts)


FLEET_COLUMNS = (tables.Column("run", whole=True), tables.Column("host"),
                 tables.Column("environment"), tables.Column("command", whole=True),
                 tables.Column("age", whole=True), tables.Column("machines"))


def render_fleet(runs: list[RunUsage], *, now: float, location: str,
                 terminal: bool = True) -> RenderableType:
    """`cdd status --all-hosts`: the runs of every host whose machines the shared history
    does not know to be gone (each host's own `cdd status` and reaper act on them)."""
    if not runs:
        return Text(f"no run of any host has machines left, says the history ({location})")
    rows: list[list[tables.Cell]] = [
        [run.run_id, run.host or "-", run.environment, run.command,
         format_duration(now - run.started_at), ", ".join(m.name for m in run.machines) or "-"]
        for run in sorted(runs, key=lambda r: (r.host, r.started_at))]
    return tables.render(tables.Table(
        FLEET_COLUMNS, rows, title=f"runs with machines left, every host ({location})"),
        terminal=terminal)


def _state(run: HostRun) -> Text:
    """`cdd run, checks, live`: the owner command, how far it got, its process."""
    led = run.ledger
    if led is None:
        return Text(run.stage)
    state = Text(f"cdd {led.command}, {run.stage}, ")
    state.append("live", style="green") if run.live else state.append("gone")
    if led.hold_until:
        state.append(f", held until {format_time(led.hold_until)}")
    return state

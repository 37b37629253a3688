"""`cdd savings`: the machine-hours cdd actually used, against what the same environments
would have used had they never been switched off.

Used hours come from the run history: each run's machines count from the start of its
first `up` until they were verified gone, or until now for machines still up (a leak is
counted, never hidden). Two baselines are set against them, for the same environments
with the same machines (those of each environment's latest run):

    always on       24 hours a day, every day
    working hours   `working_hours_per_day` on `working_days` (default 10 h, Mon-Fri),
                    as an environment kept up by hand through the working day would be

Days are UTC days. The window is the last N days including today, and today counts only
up to now, for the baselines as much as for the runs, so the comparison stays fair at any
hour. Money is machine-hours times a flat price per machine-hour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from rich.console import Group, RenderableType
from rich.text import Text

from cdd_ci.history.store import RunUsage
from cdd_ci.report import tables

DAY = 86400.0
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    start: float
    """Midnight UTC of the first day."""
    end: float
    """Now: nothing after it is counted, by the runs or the baselines."""

    @property
    def days(self) -> list[date]:
        first = _utc_date(self.start)
        count = max(1, math.ceil((self.end - self.start) / DAY))
        return [first + timedelta(days=i) for i in range(count)]

    def day_bounds(self, day: date) -> tuple[float, float]:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        return start, min(start + DAY, self.end)


def window_since(seconds: float, now: float) -> Window:
    """The last ceil(seconds / 1 day) UTC days, today included, up to `now`."""
    days = max(1, math.ceil(seconds / DAY))
    today = _utc_date(now)
    first = today - timedelta(days=days - 1)
    return Window(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp(), now)


@dataclass(frozen=True)
class Baseline:
    name: str
    hours_per_day: float
    weekdays: frozenset[int]
    """0 = Monday."""

    def hours(self, window: Window, day: date) -> float:
        """Hours of one machine on `day`; a partial day (today) counts pro rata."""
        if day.weekday() not in self.weekdays:
            return 0.0
        start, end = window.day_bounds(day)
        return self.hours_per_day * max(0.0, end - start) / DAY


def always_on() -> Baseline:
    return Baseline("always on (24 h, 7 days a week)", 24.0, frozenset(range(7)))


def working_hours(hours_per_day: float = 10.0,
                  days: Sequence[str] = WEEKDAY_NAMES[:5]) -> Baseline:
    numbers = frozenset(WEEKDAY_NAMES.index(d) for d in days)
    return Baseline(f"working hours ({hours_per_day:g} h, {_day_span(numbers)})",
                    hours_per_day, numbers)


@dataclass
class EnvironmentUsage:
    name: str
    machines: int
    """Machines of its latest run: what a baseline would keep up."""
    runs: int = 0
    used: dict[date, float] = field(default_factory=dict)
    """Machine-hours used, per UTC day."""
    still_up: list[str] = field(default_factory=list)

    @property
    def used_hours(self) -> float:
        return sum(self.used.values())


@dataclass
class Savings:
    window: Window
    environments: list[EnvironmentUsage]
    baselines: list[Baseline]
    price: float = 0.0
    currency: str = "$"

    @property
    def days(self) -> list[date]:
        return self.window.days

    @property
    def used_hours(self) -> float:
        return sum(e.used_hours for e in self.environments)

    @property
    def runs(self) -> int:
        return sum(e.runs for e in self.environments)

    def used_on(self, day: date) -> float:
        return sum(e.used.get(day, 0.0) for e in self.environments)

    def baseline_on(self, baseline: Baseline, day: date) -> float:
        return sum(e.machines for e in self.environments) * baseline.hours(self.window, day)

    def baseline_hours(self, baseline: Baseline, environment: EnvironmentUsage | None = None
                       ) -> float:
        machines = (environment.machines if environment
                    else sum(e.machines for e in self.environments))
        return machines * sum(baseline.hours(self.window, d) for d in self.days)

    def saved_hours(self, baseline: Baseline) -> float:
        return self.baseline_hours(baseline) - self.used_hours

    def cost(self, hours: float) -> float:
        return hours * self.price


def compute(
    runs: Sequence[RunUsage],
    window: Window,
    baselines: Sequence[Baseline],
    *,
    price: float = 0.0,
    currency: str = "$",
) -> Savings:
    """Machine-hours per environment and per day within `window`."""
    envs: dict[str, EnvironmentUsage] = {}
    for run in sorted(runs, key=lambda r: r.started_at):
        until = run.released_at if run.released_at is not None else window.end
        if until <= window.start or run.alive_from >= window.end:
            continue
        env = envs.setdefault(run.environment, EnvironmentUsage(run.environment, 0))
        env.machines = len(run.machines)  # sorted by start: the latest run's wins
        env.runs += 1
        if run.released_at is None:
            env.still_up.append(run.run_id)
        for day in window.days:
            start, end = window.day_bounds(day)
            overlap = min(until, end) - max(run.alive_from, start)
            if overlap > 0:
                env.used[day] = env.used.get(day, 0.0) + len(run.machines) * overlap / 3600
    return Savings(window, sorted(envs.values(), key=lambda e: e.name), list(baselines),
                   price, currency)


# -- presenting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    hours: str
    cost: str
    saved: str


def rows(savings: Savings) -> list[Row]:
    """The summary table, as text cells shared by the terminal and Markdown renderings."""
    used = savings.used_hours
    out = [Row(f"used by cdd ({savings.runs} run{'s' if savings.runs != 1 else ''})",
               f"{used:,.1f}", _money(savings, used), "")]
    for baseline in savings.baselines:
        hours = savings.baseline_hours(baseline)
        saved = hours - used
        share = f" ({saved / hours:.0%})" if hours else ""
        money = f", {_money(savings, saved)}" if savings.price else ""
        out.append(Row(baseline.name, f"{hours:,.1f}", _money(savings, hours),
                       f"{saved:,.1f} h{share}{money}"))
    return out


def environment_rows(savings: Savings) -> list[list[str]]:
    out = []
    for env in savings.environments:
        cells = [env.name, str(env.machines), str(env.runs), f"{env.used_hours:,.1f}"]
        cells += [f"{savings.baseline_hours(b, env):,.1f}" for b in savings.baselines]
        out.append(cells)
    return out


def title(savings: Savings) -> str:
    days = savings.days
    end = datetime.fromtimestamp(savings.window.end, UTC)
    return (f"Machine-hours from {days[0].isoformat()} 00:00 to {end:%Y-%m-%d %H:%M} UTC "
            f"({len(days)} day{'s' if len(days) != 1 else ''})")


def render_markdown(savings: Savings) -> str:
    from cdd_ci.templating import render

    text = render("savings.md.j2", title=title(savings), rows=rows(savings),
                  money=savings.price > 0, empty=not savings.environments,
                  price=f"{savings.currency}{savings.price:g}",
                  baselines=[b.name for b in savings.baselines],
                  environments=environment_rows(savings) if len(savings.environments) > 1
                  else [],
                  still_up=[r for e in savings.environments for r in e.still_up])
    return text.rstrip("\n") + "\n"  # appended to a job summary: end the table cleanly


def render_table(savings: Savings, *, terminal: bool = True) -> RenderableType:
    """The same for people: fitted to a terminal, or plain lines in a log (see tables)."""
    columns = [tables.Column(""), tables.Column("machine-hours", right=True, whole=True)]
    if savings.price:
        columns.append(tables.Column(f"cost at {savings.currency}{savings.price:g}/h",
                                     right=True, whole=True))
    columns.append(tables.Column("cdd saves", right=True))
    cells: list[list[tables.Cell]] = []
    for i, row in enumerate(rows(savings)):
        style = "bold" if i == 0 else ""
        cells.append([Text(row.label, style=style), Text(row.hours, style=style),
                      *([Text(row.cost, style=style)] if savings.price else []),
                      Text(row.saved, style="green")])
    parts: list[RenderableType] = [Text(title(savings), style="bold"),
                                   tables.render(tables.Table(columns, cells),
                                                 terminal=terminal)]
    if len(savings.environments) > 1:
        per_env = [tables.Column("environment")] + [
            tables.Column(name, right=True, whole=True)
            for name in ("machines", "runs", "used h",
                         *(f"{b.name.split(' (')[0]} h" for b in savings.baselines))]
        parts += [Text("\nper environment", style="bold"),
                  tables.render(tables.Table(per_env, environment_rows(savings)),
                                terminal=terminal)]
    if not savings.environments:
        parts.append(Text("no run in the history used a machine in this window"))
    still = [r for e in savings.environments for r in e.still_up]
    if still:
        parts.append(Text(f"still up, counted until now: {', '.join(still)} "
                          "(`cdd down`, or `cdd reap` once they are over)", style="yellow"))
    return Group(*parts)


def _money(savings: Savings, hours: float) -> str:
    return f"{savings.currency}{savings.cost(hours):,.2f}" if savings.price else ""


def _utc_date(timestamp: float) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()


def _day_span(days: frozenset[int]) -> str:
    ordered = sorted(days)
    names = [WEEKDAY_NAMES[d].capitalize() for d in ordered]
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{names[0]}-{names[-1]}"
    return ", ".join(names)

"""Savings arithmetic on hand-made histories, and what `cdd savings` shows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from cdd_ci.history.savings import (
    Window,
    always_on,
    compute,
    render_markdown,
    window_since,
    working_hours,
)
from cdd_ci.history.store import MachineSpec, RunUsage


def t(day: int, hour: float = 0.0) -> float:
    """A time in the week of Monday 2024-05-06 (day 6) to Sunday 2024-05-12, UTC."""
    return datetime(2024, 5, day, tzinfo=UTC).timestamp() + hour * 3600


def run(start: float, end: float | None, machines: int = 2, env: str = "web",
        run_id: str = "") -> RunUsage:
    return RunUsage(run_id or f"r{start:.0f}", env, "run", start,
                    tuple(MachineSpec(f"m{i}") for i in range(machines)), start, end)


WEEK = Window(t(6), t(13))  # Monday 00:00 to the next Monday 00:00: 7 whole days


@pytest.mark.parametrize(("runs", "window", "used", "always", "working"), [
    # nothing ran: nothing used, and no environment to set a baseline for
    ([], WEEK, 0.0, 0.0, 0.0),
    # one hour on Monday, two machines
    ([run(t(6, 5), t(6, 6))], WEEK, 2.0, 2 * 24 * 7, 2 * 10 * 5),
    # a daily one-hour run, Monday to Friday
    ([run(t(d, 5), t(d, 6)) for d in range(6, 11)], WEEK, 10.0, 336.0, 100.0),
    # across midnight: half an hour on each day
    ([run(t(6, 23.5), t(7, 0.5), machines=1)], WEEK, 1.0, 168.0, 50.0),
    # started before the window: only the part inside counts
    ([run(t(5, 23), t(6, 1), machines=1)], WEEK, 1.0, 168.0, 50.0),
    # released before the window: not counted, not an environment of this window
    ([run(t(4, 1), t(4, 2))], WEEK, 0.0, 0.0, 0.0),
    # still up (a forgotten cdd down) since Saturday noon: counted until the window's end
    ([run(t(11, 12), None, machines=1)], WEEK, 36.0, 168.0, 50.0),
    # two environments: the baselines keep both up
    ([run(t(6, 5), t(6, 6), 2, "web"), run(t(7, 5), t(7, 7), 3, "db")], WEEK,
     2.0 + 6.0, 5 * 168.0, 5 * 50.0),
    # an environment that shrank: the baselines use its latest machines
    ([run(t(6, 5), t(6, 6), 3), run(t(7, 5), t(7, 6), 2)], WEEK, 5.0, 336.0, 100.0),
    # today is Wednesday noon: today counts half, for the baselines too
    ([run(t(8, 9), t(8, 10), 1)], Window(t(6), t(8, 12)), 1.0, 60.0, 25.0),
    # today, a run still going: counted up to now, not beyond
    ([run(t(8, 9), None, 1)], Window(t(6), t(8, 12)), 3.0, 60.0, 25.0),
])
def test_machine_hours_against_the_baselines(
    runs: list[RunUsage], window: Window, used: float, always: float, working: float,
) -> None:
    savings = compute(runs, window, [always_on(), working_hours()])
    assert savings.used_hours == pytest.approx(used)
    assert savings.baseline_hours(savings.baselines[0]) == pytest.approx(always)
    assert savings.baseline_hours(savings.baselines[1]) == pytest.approx(working)
    assert savings.saved_hours(savings.baselines[0]) == pytest.approx(always - used)


@pytest.mark.parametrize(("hours", "days", "expected", "name"), [
    (10, ["mon", "tue", "wed", "thu", "fri"], 2 * 10 * 5, "working hours (10 h, Mon-Fri)"),
    (8, ["mon", "tue", "wed", "thu"], 2 * 8 * 4, "working hours (8 h, Mon-Thu)"),
    (12, ["sat", "sun"], 2 * 12 * 2, "working hours (12 h, Sat, Sun)"),
    (24, ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], 336, "working hours (24 h, Mon-Sun)"),
])
def test_working_hours_are_configurable(hours: float, days: list[str], expected: float,
                                        name: str) -> None:
    baseline = working_hours(hours, days)
    savings = compute([run(t(6, 5), t(6, 6))], WEEK, [baseline])
    assert baseline.name == name
    assert savings.baseline_hours(baseline) == pytest.approx(expected)


@pytest.mark.parametrize(("price", "used_cost", "always_cost", "saved"), [
    (0.05, "$0.10", "$16.80", "334.0 h (99%), $16.70"),
    (1.0, "$2.00", "$336.00", "334.0 h (99%), $334.00"),
    (0.0, "", "", "334.0 h (99%)"),
])
def test_money(price: float, used_cost: str, always_cost: str, saved: str) -> None:
    from cdd_ci.history.savings import rows

    savings = compute([run(t(6, 5), t(6, 6))], WEEK, [always_on()], price=price)
    used, always = rows(savings)
    assert (used.cost, always.cost, always.saved) == (used_cost, always_cost, saved)


def test_daily_hours_for_the_plot() -> None:
    savings = compute([run(t(6, 23.5), t(7, 0.5), machines=2)], WEEK,
                      [always_on(), working_hours()])
    assert savings.days[0] == date(2024, 5, 6) and len(savings.days) == 7
    assert [savings.used_on(d) for d in savings.days[:3]] == [1.0, 1.0, 0.0]
    assert [savings.baseline_on(savings.baselines[1], d) for d in savings.days] == \
        [20.0] * 5 + [0.0, 0.0]


@pytest.mark.parametrize(("since_days", "now", "first", "count"), [
    (7, t(12, 15), date(2024, 5, 6), 7),
    (1, t(12, 15), date(2024, 5, 12), 1),
    (30, t(12, 15), date(2024, 4, 13), 30),
])
def test_the_window_is_whole_utc_days_up_to_now(since_days: int, now: float, first: date,
                                                count: int) -> None:
    window = window_since(since_days * 86400, now)
    assert window.days[0] == first and len(window.days) == count
    assert window.end == now


def test_markdown_for_the_job_summary() -> None:
    savings = compute([run(t(6, 5), t(6, 6)), run(t(7, 5), t(7, 6), 1, "db",
                                                  run_id="20240507050000-abcdef"),
                       run(t(12, 20), None, 1, "db", run_id="20240512200000-abcdef")],
                      WEEK, [always_on(), working_hours()], price=0.05)
    text = render_markdown(savings)
    assert text.splitlines()[0] == \
        "### Machine-hours from 2024-05-06 00:00 to 2024-05-13 00:00 UTC (7 days)"
    # every $ escaped: two bare ones in a line are inline math to GitHub
    assert r"| **used by cdd (3 runs)** | 7.0 | \$0.35 |  |" in text
    assert r"| always on (24 h, 7 days a week) | 504.0 | \$25.20 | 497.0 h (99%), \$24.85 |" \
        in text
    assert r"| working hours (10 h, Mon-Fri) | 150.0 | \$7.50 | 143.0 h (95%), \$7.15 |" in text
    assert "| db | 1 | 2 | 5.0 | 168.0 | 50.0 |" in text
    assert "Still up, counted until now: `20240512200000-abcdef`." in text


def test_the_plot_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from cdd_ci.history.plot import PlotError, plot

    savings = compute([run(t(d, 5), t(d, 6)) for d in range(6, 11)], WEEK,
                      [always_on(), working_hours()], price=0.05)
    png = plot(savings, tmp_path / "savings.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot(savings, tmp_path / "savings.svg").read_text()
    assert "<svg" in svg
    with pytest.raises(PlotError, match=r"\.png or \.svg"):
        plot(savings, tmp_path / "savings.pdf")

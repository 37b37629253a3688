"""What people read of cdd's tables: on an 80-column terminal, and in a CI log.

On a terminal nothing is cut with "…" (a status word, a run id, a name), no line is wider
than the terminal and none ends in spaces. In a log or a pipe every row is one full line,
not hard-wrapped at 80 columns nor padded to them, so a browser shows it whole.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console, RenderableType

from cdd_ci.history.savings import Savings, always_on, compute, render_table, working_hours
from cdd_ci.history.store import MachineSpec, PhaseSpan, RunStart, open_history
from cdd_ci.host.inventory import HostRun, Inventory
from cdd_ci.host.ledger import Ledger
from cdd_ci.host.status import render as render_status
from cdd_ci.infra.providers import Resource
from cdd_ci.report import tables
from cdd_ci.report.summary import publish_summary
from tests.unit.history.test_savings import WEEK, run, t
from tests.unit.report.test_summary import ISSUES, JUNIT, failing_run

NOW = 1_800_000_000.0
LONG_ENV = "openstack-base-with-a-name-as-long-as-a-dns-label-allows-it-is-x"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shown(part: RenderableType | Callable[[Console], None], *, terminal: bool) -> list[str]:
    """The lines printed to an 80-column terminal, or to a pipe (`terminal` False)."""
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=terminal, color_system=None,
                      highlight=False)
    if callable(part):
        part(console)
    else:
        tables.show(console, part)
    return out.getvalue().splitlines()


def assert_readable(lines: list[str], *, terminal: bool) -> None:
    assert lines
    for line in lines:
        assert "…" not in line, line
        assert line == line.rstrip(), f"trailing spaces: {line!r}"
        if terminal:
            assert cell_len(line) <= 80, line


def words(lines: list[str]) -> set[str]:
    """What is on screen, word by word: a cut or broken word is not among them."""
    return {word.rstrip(",:") for line in lines for word in line.split()}


def inventory(held_name: str = LONG_ENV) -> Inventory:
    def ledger(run_id: str, environment: str, **kw: object) -> Ledger:
        return Ledger(run_id=run_id, environment=environment, directory="/p", provider="lxc",
                      machines=["broker", "database"], vagrant_env={},
                      started_at=NOW - 7 * 3600, host="ci-1", **kw)  # type: ignore[arg-type]

    checking, held, lost = ("20270115080000-a1b2c3", "20270115070000-d4e5f6",
                            "20270114060000-0a0b0c")
    return Inventory(runs=[
        HostRun(checking, ledger(checking, "openstack-base",
                                 machine_states={"broker": "up", "database": "up"}),
                live=True, resources=[Resource("lxc", f"cdd-{checking}-{m}", checking, m)
                                      for m in ("broker", "database")]),
        HostRun(held, ledger(held, held_name, command="up", hold_until=NOW + 3600)),
        HostRun(lost, None, resources=[Resource("lxc", f"cdd-{lost}-x", lost, "x")]),
    ], stale=[], problems=[], host="ci-1")


@pytest.mark.parametrize("held_name", ["web", LONG_ENV])
@pytest.mark.parametrize("terminal", [True, False])
def test_status_keeps_run_ids_states_and_names_whole(terminal: bool, held_name: str) -> None:
    lines = shown(render_status(inventory(held_name), now=NOW, older_than=6 * 3600,
                                terminal=terminal), terminal=terminal)
    assert_readable(lines, terminal=terminal)
    assert {"20270115080000-a1b2c3", "20270115070000-d4e5f6", "20270114060000-0a0b0c",
            "openstack-base", held_name, "provision", "live", "gone", "unrecorded", "7h00m",
            "broker", "database", "reap?", "yes", "no"} <= words(lines)
    if terminal and held_name == LONG_ENV:
        # a 63-character name leaves no room for six columns: one field a line instead
        assert f"  environment: {LONG_ENV}" in lines
        assert "  state: cdd up, up, gone, held until 2027-01-15 09:00 UTC" in lines
    elif terminal:
        header = next(i for i, line in enumerate(lines) if line.startswith("run "))
        assert lines[header].split() == ["run", "environment", "state", "age", "left", "reap?"]
        assert lines[header + 1].startswith("20270115080000-a1b2c3  openstack-base  cdd run,")
    else:  # a log has room for every row on one line
        assert any(line.startswith("20270115070000-d4e5f6") and held_name in line
                   and "cdd up, up, gone, held until 2027-01-15 09:00 UTC" in line
                   for line in lines), lines
        assert any(line.startswith("20270115080000-a1b2c3  openstack-base")
                   and "cdd run, provision, live" in line and "broker, database" in line
                   for line in lines), lines


@pytest.mark.parametrize("terminal", [True, False])
def test_the_run_summary_never_cuts_a_status_word(terminal: bool) -> None:
    def render(console: Console) -> None:
        publish_summary(failing_run(), junit_path=JUNIT, issues=ISSUES, env={},
                        console=console)

    lines = shown(render, terminal=terminal)
    assert_readable(lines, terminal=terminal)
    rows = [line.split() for line in lines]
    assert ["broker", "check", "❌", "1/2", "passed", "2m", "00s"] in rows
    assert ["database", "harvest", "💥", "1/2", "passed", "2m", "04s"] in rows
    assert ["environment", "provision"] not in [r[:2] for r in rows]
    assert ["environment", "verify", "✅", "passed", "0.4s"] in rows
    failure = ("- ❌ keystone logs in to its database on broker (check failed after 41 "
               "attempts): stdout did not match ^keystone$")
    footer = ("Run 20250317-0500-4f2a · provider lxc · 2 machines × 25m 00s = 0.83 "  # noqa: RUF001
              "environment-hours · JUnit report: reports/junit.xml")
    if terminal:
        text = " ".join(" ".join(lines).split())
        assert failure in text and footer in text
    else:
        assert failure in lines and footer in lines
        assert "- #41 opened: https://github.com/example/infra/issues/41" in lines


def test_the_run_summary_masks_secrets_outside_actions_too() -> None:
    result = failing_run()
    result.steps[0].message = "login with hunter22 failed"
    out = io.StringIO()
    publish_summary(result, junit_path=JUNIT, env={"DB_PASSWORD": "hunter22"},
                    console=Console(file=out, width=80))
    assert "hunter22" not in out.getvalue()


def savings_report() -> Savings:
    runs = [run(t(6, 5), t(6, 6), 2, "web"), run(t(7, 5), t(7, 7), 3, LONG_ENV),
            run(t(11, 12), None, 1, "db", run_id="20240511120000-abcdef")]
    return compute(runs, WEEK, [always_on(), working_hours()], price=0.05)


@pytest.mark.parametrize("terminal", [True, False])
def test_savings_fit_the_terminal_and_are_whole_lines_in_a_log(terminal: bool) -> None:
    lines = shown(render_table(savings_report(), terminal=terminal), terminal=terminal)
    assert_readable(lines, terminal=terminal)
    assert {"1,008.0", "$50.40", "964.0", "(96%)", "$48.20", "machine-hours"} <= words(lines)
    if not terminal:
        text = "\n".join(lines)
        assert re.search(r"^always on \(24 h, 7 days a week\) +1,008\.0 +\$50\.40 +964\.0 h "
                         r"\(96%\), \$48\.20$", text, re.M), text
        assert re.search(rf"^{LONG_ENV} +3 +1 +6\.0 +504\.0 +150\.0$", text, re.M), text


def record(db: Path, run_id: str, environment: str, start: float, hours: float) -> None:
    history = open_history(db)
    event = history.begin(RunStart(run_id, environment, "lxc", "run", start,
                                   (MachineSpec("m0"), MachineSpec("m1"))))
    end = start + hours * 3600
    history.finish(event, finished_at=end, outcome="passed",
                   spans=[PhaseSpan("up", "m0", start, start + 60)], released_at=end)


@pytest.mark.parametrize("terminal", [True, False])
def test_cdd_savings_as_a_user_runs_it(tmp_path: Path, terminal: bool) -> None:
    db = tmp_path / "history.sqlite"
    now = time.time()
    record(db, "20240101000000-aaaaaa", "web", now - 86400, 1.0)
    record(db, "20240101000001-bbbbbb", LONG_ENV, now - 2 * 86400, 0.5)
    # rich takes a terminal's width from COLUMNS; FORCE_COLOR makes the pipe a terminal
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR",
                                                             "COLUMNS", "TTY_COMPATIBLE")}
    env |= {"COLUMNS": "80", "TERM": "xterm-256color"} | ({"FORCE_COLOR": "1"} if terminal else {})
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "savings", "--history", str(db),
                           "--since", "7d", "--price", "0.05"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [ANSI.sub("", line) for line in proc.stdout.splitlines()]
    assert_readable(lines, terminal=terminal)
    assert (ANSI.search(proc.stdout) is not None) is terminal
    if not terminal:
        assert any(line.startswith(LONG_ENV) for line in lines), lines
        assert any(line.startswith("always on (24 h, 7 days a week)") for line in lines)

"""The job summary as a reader of the GitHub run page (or of the terminal) sees it.

Golden files: `tests/unit/golden/summary-*.md` are the exact Markdown appended to the job
summary. After an intended change, regenerate them with

    CDD_UPDATE_GOLDEN=1 pytest tests/unit/report/test_summary.py

and review the diff like any other change.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cdd_ci.models import ENVIRONMENT, Phase, RunResult, Status, StepResult
from cdd_ci.report.summary import (
    MAX_ANNOTATIONS,
    IssueLink,
    environment_seconds,
    publish_summary,
    render_summary,
)
from cdd_ci.report.workflow_commands import command, escape_data, escape_property, format_output
from cdd_ci.templating import md

GOLDEN = Path(__file__).parent.parent / "golden"
JUNIT = Path("reports/junit.xml")
ISSUES = [
    IssueLink(41, "https://github.com/example/infra/issues/41", "opened"),
    (17, "https://github.com/example/infra/issues/17", "updated"),
]


def step(
    phase: Phase, machine: str, name: str, status: Status = Status.PASSED, **kw: Any
) -> StepResult:
    return StepResult(phase=phase, machine=machine, name=name, status=status, **kw)


def lifecycle(result: RunResult, checks: list[StepResult]) -> RunResult:
    """A whole run around the given checks: cleanup, up, provision, checks, harvest, destroy."""
    result.add(step(Phase.CLEANUP, ENVIRONMENT, "cleanup", duration=1.2))
    for machine, up, provision in (("broker", 61.0, 298.4), ("database", 57.5, 240.0)):
        result.add(step(Phase.UP, machine, "up", duration=up))
        result.add(step(Phase.PROVISION, machine, "provision", duration=provision))
    for check in checks:
        result.add(check)
    for machine in result.machines:
        result.add(step(Phase.HARVEST, machine, "harvest", duration=3.5))
    if any(not c.ok for c in checks):
        result.add(
            step(
                Phase.HARVEST,
                "database",
                "journal",
                Status.ERROR,
                duration=120.0,
                message="timed out after 120s: journalctl -b --no-pager -u mariadb",
            )
        )
    result.add(step(Phase.DESTROY, ENVIRONMENT, "destroy", duration=14.0))
    result.add(step(Phase.VERIFY, ENVIRONMENT, "destroy-verified", duration=0.4))
    result.add(step(Phase.REPORT, ENVIRONMENT, "report", duration=0.3))
    return result


def new_run(**kw: Any) -> RunResult:
    args: dict[str, Any] = {
        "run_id": "20250317-0500-4f2a",
        "environment": "openstack-base",
        "provider": "lxc",
        "machines": ["broker", "database"],
        "started_at": 1_742_187_600.0,
        "finished_at": 1_742_187_600.0 + 1501.5,
    }
    args.update(kw)
    return RunResult(**args)


def passing_run() -> RunResult:
    return lifecycle(
        new_run(),
        [
            step(Phase.CHECK, "broker", "rabbitmq running", duration=0.6),
            step(Phase.CHECK, "database", "mariadb running", duration=0.5),
            step(Phase.CHECK, "database", "broker port reachable from database", duration=0.2),
        ],
    )


def failing_run() -> RunResult:
    return lifecycle(
        new_run(),
        [
            step(Phase.CHECK, "broker", "rabbitmq running", duration=0.6),
            step(
                Phase.CHECK,
                "broker",
                "keystone logs in to its database",
                Status.FAILED,
                duration=120.3,
                attempts=41,
                message="stdout did not match ^keystone$\nexit code 1",
                output="ERROR 1045 (28000): Access denied for user 'keystone'@'broker'",
            ),
            step(
                Phase.CHECK,
                "database",
                "broker port reachable from database",
                Status.FAILED,
                duration=10.0,
                attempts=5,
                message="broker:5672: Connection refused",
            ),
            step(
                Phase.CHECK,
                "database",
                "mariadb | *answers*",
                Status.FAILED,
                duration=0.9,
                message="",
                output="first line\nmysqladmin: connect to server at 'localhost' failed",
            ),
        ],
    )


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CDD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"{path} differs; if the change is intended: CDD_UPDATE_GOLDEN=1 pytest {__file__}"
    )


def test_passing_run_summary_matches_golden() -> None:
    golden("summary-passed.md", render_summary(passing_run(), junit_path=JUNIT))


def test_failing_run_summary_matches_golden() -> None:
    golden("summary-failed.md", render_summary(failing_run(), junit_path=JUNIT, issues=ISSUES))


def test_failing_summary_says_what_a_reader_needs() -> None:
    text = render_summary(failing_run(), junit_path=JUNIT, issues=ISSUES)
    headline = text.splitlines()[0]
    assert headline.startswith("## ❌ openstack-base: checks failed")
    assert "**Exit code 1**" in text
    assert "keystone logs in to its database** on broker (check failed after 41 attempts)" in text
    assert "stdout did not match ^keystone\\$" in text
    # no message: the last line of the output is the reason, since that is where errors are
    assert "mysqladmin: connect to server at 'localhost' failed" in text
    # a '|' in a check name must not split the table or the list item
    assert "mariadb \\| \\*answers\\*" in text
    assert "- [#41](https://github.com/example/infra/issues/41) opened" in text
    assert "- [#17](https://github.com/example/infra/issues/17) updated" in text
    assert "2 machines \u00d7 25m 00s = **0.83 environment-hours**" in text


@pytest.mark.parametrize(
    ("mutate", "headline", "meaning"),
    [
        (lambda r: None, "## ✅ openstack-base: passed", "**Exit code 0**"),
        (
            lambda r: r.add(step(Phase.UP, "broker", "up", Status.ERROR, message="boom")),
            "## ❌ openstack-base: infrastructure error",
            "**Exit code 3**",
        ),
        (
            lambda r: r.add(step(Phase.DESTROY, ENVIRONMENT, "destroy", Status.ERROR)),
            "## ❌ openstack-base: teardown failed",
            "`cdd destroy` removes them",
        ),
        (
            lambda r: setattr(r, "interrupted_by", "SIGTERM"),
            "## ❌ openstack-base: cancelled",
            "**Exit code 143**: cancelled by SIGTERM",
        ),
    ],
)
def test_headline_names_the_exit_code_and_its_meaning(
    mutate: Callable[[RunResult], object], headline: str, meaning: str
) -> None:
    result = passing_run()
    mutate(result)
    text = render_summary(result, junit_path=JUNIT)
    assert text.splitlines()[0] == headline
    assert meaning in text


def test_table_has_a_row_per_machine_and_a_column_per_phase() -> None:
    text = render_summary(failing_run(), junit_path=JUNIT)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == (
        "| Machine | cleanup | up | provision | check | harvest | destroy | verify | report |"
    )
    assert rows[2].startswith("| broker | — | ✅ passed · 1m 01s | ✅ passed · 4m 58s |")
    assert "❌ 1/2 passed · 2m 00s" in rows[2]
    assert "❌ 0/2 passed · 10s" in rows[3]
    assert "💥 1/2 passed · 2m 04s" in rows[3]
    assert rows[4].startswith("| environment | ✅ passed · 1.2s |")
    assert all(row.count("|") == rows[0].count("|") for row in rows)


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        (1501.5, 1501.5 - 1.2 - 0.3),  # the run less cleanup before up and the report after
        (0.0, 1.2 + 61 + 298.4 + 57.5 + 240 + 1.3 + 3.5 * 2 + 14 + 0.4 + 0.3 - 1.5),
    ],
)
def test_environment_time_runs_from_up_to_destroy(finished: float, expected: float) -> None:
    result = lifecycle(
        new_run(finished_at=0.0 if not finished else 1_742_187_600.0 + finished),
        [step(Phase.CHECK, "broker", "c", duration=1.3)],
    )
    assert environment_seconds(result) == pytest.approx(expected)


def test_a_run_that_never_came_up_used_no_environment_time() -> None:
    result = new_run()
    result.add(step(Phase.CLEANUP, ENVIRONMENT, "cleanup", Status.ERROR, duration=30))
    assert environment_seconds(result) == 0
    assert "= **0.00 environment-hours**" in render_summary(result, junit_path=JUNIT)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain words", "plain words"),
        ("a|b", "a\\|b"),
        ("*bold* _it_ `code`", "\\*bold\\* \\_it\\_ \\`code\\`"),
        ("<script>", "\\<script\\>"),
        ("[x](y)", "\\[x\\](y)"),
        ("cost $5 and $6", "cost \\$5 and \\$6"),
        ("two\nlines\r\n  and  spaces", "two lines and spaces"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_markdown_inline_escaping(text: str, escaped: str) -> None:
    assert md(text) == escaped


# --- workflow commands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "escaped"),
    [
        ("plain", "plain"),
        ("100%", "100%25"),
        ("a\nb", "a%0Ab"),
        ("a\r\nb", "a%0D%0Ab"),
        ("%0A literally", "%250A literally"),
        ("key: a, b", "key: a, b"),  # ':' and ',' are fine in data
        ("::error::injected", "::error::injected"),  # harmless once on the same line
    ],
)
def test_escape_data(data: str, escaped: str) -> None:
    assert escape_data(data) == escaped


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ("Check failed: x on broker", "Check failed%3A x on broker"),
        ("a,b", "a%2Cb"),
        ("50%,\n", "50%25%2C%0A"),
        ("title=x::y", "title=x%3A%3Ay"),
    ],
)
def test_escape_property(value: str, escaped: str) -> None:
    assert escape_property(value) == escaped


@pytest.mark.parametrize(
    ("name", "message", "props", "line"),
    [
        ("error", "down", None, "::error::down"),
        ("error", "a\nb", {"title": "T: 1, 2"}, "::error title=T%3A 1%2C 2::a%0Ab"),
        ("warning", "kept", {"title": "Kept", "file": ""}, "::warning title=Kept::kept"),
        (
            "error",
            "m",
            {"file": "cdd.toml", "line": "3"},
            "::error file=cdd.toml,line=3::m",
        ),
    ],
)
def test_workflow_command_line(
    name: str, message: str, props: dict[str, str] | None, line: str
) -> None:
    assert command(name, message, props) == line
    assert "\n" not in command(name, message, props)


def parse_output_file(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT the way the runner does: `name=value` or a `name<<DELIM` heredoc."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if eq >= 0 and (heredoc < 0 or eq < heredoc):
            values[line[:eq]] = line[eq + 1 :]
            continue
        name, delim = line[:heredoc], line[heredoc + 2 :]
        body: list[str] = []
        while lines[i] != delim:
            body.append(lines[i])
            i += 1
        i += 1
        values[name] = "\n".join(body)
    return values


@pytest.mark.parametrize(
    ("name", "value", "written"),
    [
        ("outcome", "passed", "outcome=passed\n"),
        ("exit-code", "1", "exit-code=1\n"),
        ("junit", "reports/junit.xml", "junit=reports/junit.xml\n"),
        ("issues", "[41, 17]", "issues=[41, 17]\n"),
        ("empty", "", "empty=\n"),
        ("eq", "a=b<<c", "eq=a=b<<c\n"),
        ("multi", "one\ntwo", "multi<<EOF_X\none\ntwo\nEOF_X\n"),
        ("cr", "one\rtwo", "cr<<EOF_X\none\rtwo\nEOF_X\n"),
    ],
)
def test_output_entries(name: str, value: str, written: str) -> None:
    assert format_output(name, value, delimiter="EOF_X") == written
    assert parse_output_file(format_output(name, value)) == {name: value}


@pytest.mark.parametrize("name", ["", "a b", "a=b", "x<<y", "1st", "new\nline"])
def test_output_name_that_would_corrupt_the_file_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        format_output(name, "v")


def test_value_containing_the_delimiter_is_refused() -> None:
    with pytest.raises(ValueError):
        format_output("x", "a\nEOF_X\nevil=1", delimiter="EOF_X")


def test_multiline_value_cannot_inject_another_output() -> None:
    entry = format_output("x", "a\nevil=1\nghadelimiter_\n")
    assert parse_output_file(entry) == {"x": "a\nevil=1\nghadelimiter_\n"}


# --- publishing --------------------------------------------------------------------------


@pytest.fixture
def actions_env(tmp_path: Path) -> dict[str, str]:
    summary = tmp_path / "step_summary.md"
    summary.write_text("## An earlier step's summary\n", encoding="utf-8")
    (tmp_path / "output").write_text("earlier=1\n", encoding="utf-8")
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
    }


def publish(result: RunResult, env: dict[str, str], **kw: Any) -> str:
    out = io.StringIO()
    publish_summary(result, junit_path=JUNIT, env=env, console=Console(file=out, width=100), **kw)
    return out.getvalue()


def test_in_actions_the_summary_is_appended_not_overwritten(actions_env: dict[str, str]) -> None:
    publish(failing_run(), actions_env, issues=ISSUES)
    written = Path(actions_env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    expected = render_summary(failing_run(), junit_path=JUNIT, issues=ISSUES)
    assert written == "## An earlier step's summary\n" + expected + "\n"


def test_in_actions_outputs_are_set(actions_env: dict[str, str]) -> None:
    publish(failing_run(), actions_env, issues=ISSUES)
    outputs = parse_output_file(Path(actions_env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))
    assert outputs == {
        "earlier": "1",
        "outcome": "checks-failed",
        "exit-code": "1",
        "junit": "reports/junit.xml",
        "issues": "[41, 17]",
    }
    assert json.loads(outputs["issues"]) == [41, 17]


def test_in_actions_each_failure_is_an_error_annotation(actions_env: dict[str, str]) -> None:
    lines = publish(failing_run(), actions_env).splitlines()
    assert lines == [
        "::error title=Check failed%3A keystone logs in to its database on broker::"
        "stdout did not match ^keystone$%0Aexit code 1",
        "::error title=Check failed%3A broker port reachable from database on database::"
        "broker:5672: Connection refused",
        "::error title=Check failed%3A mariadb | *answers* on database::"
        "mysqladmin: connect to server at 'localhost' failed",
        "::error title=Infrastructure error%3A journal on database::"
        "timed out after 120s: journalctl -b --no-pager -u mariadb",
    ]


def test_a_passing_run_annotates_nothing(actions_env: dict[str, str]) -> None:
    assert publish(passing_run(), actions_env) == ""
    outputs = parse_output_file(Path(actions_env["GITHUB_OUTPUT"]).read_text(encoding="utf-8"))
    assert outputs["outcome"] == "passed"
    assert outputs["exit-code"] == "0"
    assert outputs["issues"] == "[]"


def test_a_kept_environment_is_a_warning(actions_env: dict[str, str]) -> None:
    result = failing_run()
    result.kept = True
    lines = publish(result, actions_env).splitlines()
    assert lines[-1] == (
        "::warning title=Environment kept::Environment openstack-base (run 20250317-0500-4f2a)"
        " was kept running; remove it with `cdd destroy` when done."
    )
    summary = Path(actions_env["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert "**The environment was kept running**" in summary


def test_annotations_are_capped_where_github_would_drop_them(
    actions_env: dict[str, str],
) -> None:
    result = new_run()
    for i in range(MAX_ANNOTATIONS + 5):
        result.add(step(Phase.CHECK, "broker", f"check {i}", Status.FAILED, message="no"))
    lines = publish(result, actions_env).splitlines()
    assert len(lines) == MAX_ANNOTATIONS + 1
    assert lines[-1] == "::error::5 more failures: see the job summary"


def test_secret_values_from_the_environment_never_appear(actions_env: dict[str, str]) -> None:
    token = "ghp_abcdefghijklmnopqrstuvwxyz012345"
    env = {**actions_env, "GITHUB_TOKEN": token, "DB_PASSWORD": "hunter22", "HOME": "/root"}
    result = new_run()
    result.add(
        step(
            Phase.CHECK,
            "broker",
            f"curl with {token}",
            Status.FAILED,
            message=f"mysql -phunter22 failed; token {token}; home /root",
        )
    )
    printed = publish(result, env, issues=[(1, "https://x/1", "opened")])
    files = "".join(Path(env[k]).read_text() for k in ("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT"))
    for text in (printed, files):
        assert token not in text
        assert "hunter22" not in text
        assert "***" in text or r"\*\*\*" in text  # Markdown shows `\*\*\*` as ***
    assert "home /root" in printed  # ordinary variables are not secrets


def test_outside_actions_the_summary_goes_to_the_terminal_only(tmp_path: Path) -> None:
    printed = publish(failing_run(), {"HOME": str(tmp_path)}, issues=ISSUES)
    assert "openstack-base: checks failed" in printed
    assert "keystone logs in to its database" in printed
    assert "::error" not in printed
    assert "|---" not in printed  # rendered as a table, not raw Markdown
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_summary_does_not_raise(actions_env: dict[str, str], tmp_path: Path) -> None:
    env = {**actions_env, "GITHUB_STEP_SUMMARY": str(tmp_path / "missing-dir" / "summary.md")}
    printed = publish(passing_run(), env)
    assert "could not write the job summary" in printed
    assert str(tmp_path) not in printed


def test_a_machine_s_checks_take_as_long_as_the_longest_not_their_sum() -> None:
    # the checks of a machine start together: 25 of 3.5 s are 3.5 s, not 1m 28s
    result = passing_run()
    result.steps = [s for s in result.steps if s.phase is not Phase.CHECK]
    for i in range(25):
        result.add(step(Phase.CHECK, "broker", f"check {i:02d}", duration=3.4 + i / 250))
    rows = [line for line in render_summary(result, junit_path=JUNIT).splitlines()
            if line.startswith("| broker")]
    assert "✅ 25/25 passed · 3.5s" in rows[0]

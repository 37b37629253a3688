"""One scrubber for every byte cdd writes: child output, logs, the JUnit report, the job summary,
and cdd's own stdout and stderr. (The issues are proven in tests/integration/test_github_*.py,
and all of it together on a real run in tests/integration/test_scrubbing_real.py.)"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from cdd_ci.infra import procs
from cdd_ci.models import Phase, RunResult, Status, StepResult
from cdd_ci.report import junit
from cdd_ci.report.summary import publish_summary
from cdd_ci.text import Scrubber

TOKEN = "ghs_R3alLookingT0kenF0rTheTestsOnly0000000"
PLAIN = "not-shaped-like-a-github-token-0042"
"""A token GitHub would not recognise by its shape: only the environment says it is one."""


def test_the_secrets_are_the_values_of_secret_looking_variables() -> None:
    scrub = Scrubber.from_env({"GITHUB_TOKEN": PLAIN, "DB_PASSWORD": "hunter22",
                               "API_KEY": "short", "HOME": "/root/home"}, secrets=["extra-0123"])
    assert scrub(f"{PLAIN} hunter22 short /root/home extra-0123") == "*** *** short /root/home ***"
    assert scrub(f"any other {TOKEN}") == "any other ***"  # GitHub's shape, whoever's it is


def test_a_urls_password_is_scrubbed_wherever_it_comes_from() -> None:
    scrub = Scrubber()  # not a known secret: a history URL in cdd.toml, say
    text = ("history: postgresql://cdd:team-pw-2026@db.example:5432/cdd?sslmode=require, "
            "socket postgresql:///cdd?host=/run/postgresql, page https://example.com/a:b@c")
    assert scrub(text) == (
        "history: postgresql://cdd:***@db.example:5432/cdd?sslmode=require, "
        "socket postgresql:///cdd?host=/run/postgresql, page https://example.com/a:b@c")


def test_a_stream_scrubs_a_token_written_in_pieces() -> None:
    out = io.StringIO()
    stream = Scrubber([PLAIN]).stream(out)
    for piece in ("the token is ", PLAIN[:10], PLAIN[10:], "\nand a partial line ", PLAIN[:5]):
        stream.write(piece)
    assert out.getvalue() == "the token is ***\n"
    stream.write(PLAIN[5:])
    stream.flush()
    assert out.getvalue() == "the token is ***\nand a partial line ***"
    with pytest.raises(AttributeError):
        stream.buffer  # noqa: B018  (bytes written beneath it would not be scrubbed)


@pytest.mark.parametrize("streaming", [True, False])
def test_every_byte_a_child_prints_is_scrubbed_before_anything_sees_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", PLAIN)
    script = f'echo "planted {PLAIN}"; echo "from the env $DEPLOY_TOKEN" >&2; echo {TOKEN}'
    lines: list[str] = []
    log = tmp_path / "up.log"
    with log.open("w") as handle:
        result = procs.run(["sh", "-c", script], timeout=30,
                           env={"DEPLOY_TOKEN": "d3ploy-s3cret-v4lue", "PATH": "/usr/bin:/bin"},
                           on_line=lines.append if streaming else None,
                           log=handle if streaming else None)
    text = result.stdout + result.stderr + "\n".join(lines) + log.read_text()
    for secret in (PLAIN, "d3ploy-s3cret-v4lue", TOKEN):
        assert secret not in text
    assert "planted ***" in result.stdout and "from the env ***" in result.stdout + result.stderr
    if streaming:
        assert lines == ["planted ***", "from the env ***", "***"]
        assert log.read_text() == "planted ***\nfrom the env ***\n***\n"


def test_a_timed_out_child_says_what_it_printed_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", PLAIN)
    with pytest.raises(procs.CommandTimeout) as caught:
        procs.run(["sh", "-c", f"echo {PLAIN}; sleep 30"], timeout=0.5)
    assert caught.value.output.strip() == "***"


def _run(message: str, output: str) -> RunResult:
    result = RunResult("r1", "demo", "lxc", ["one"], 1_700_000_000.0, 1_700_000_100.0,
                       commit="abc", properties={"note": f"prop {PLAIN}"})
    result.add(StepResult(Phase.CHECK, "one", "probe", Status.FAILED, message=message,
                          output=output))
    return result


def test_the_junit_report_holds_no_token_not_even_half_of_one_at_its_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", PLAIN)
    # the report keeps the last TAIL characters: the cut falls in the middle of the token
    output = "early line\n" + PLAIN + "y" * (junit.TAIL - len(PLAIN) // 2)
    path = junit.write(_run(f"failed with {PLAIN}", output), tmp_path / "junit.xml")
    text = path.read_text()
    assert PLAIN[-10:] not in text and PLAIN[:10] not in text
    assert "failed with ***" in text and "prop ***" in text


def test_the_job_summary_holds_no_token_not_even_half_of_one_at_its_cut(tmp_path: Path) -> None:
    summary, outputs = tmp_path / "summary.md", tmp_path / "output"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_OUTPUT": str(outputs), "GITHUB_TOKEN": PLAIN}
    message = "x" * 190 + f" {PLAIN} after the cut"  # a reason is cut at 200 characters
    console = io.StringIO()
    from rich.console import Console

    publish_summary(_run(message, f"log {PLAIN}\n"), junit_path=tmp_path / "junit.xml", env=env,
                    console=Console(file=console))
    written = summary.read_text() + outputs.read_text() + console.getvalue()
    assert PLAIN[:10] not in written and PLAIN[-10:] not in written
    assert "***" in written


def test_cdds_own_output_is_scrubbed(tmp_path: Path) -> None:
    # an error that quotes what the user typed, which happens to be the token
    missing = tmp_path / PLAIN / "cdd.toml"
    env = {"GITHUB_TOKEN": PLAIN, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "validate", "--config", str(missing)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2
    assert "/***/cdd.toml" in proc.stdout + proc.stderr
    assert PLAIN not in proc.stdout + proc.stderr


def test_an_issue_holds_no_secret_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdd_ci.github.context import GitHubContext
    from cdd_ci.github.issues import IssuePolicy, report_issues
    from tests.fakes.tracker import FakeTracker

    monkeypatch.setenv("DB_PASSWORD", "hunter22-of-the-job")
    tracker = FakeTracker()
    result = _run(f"mysql -phunter22-of-the-job failed; {TOKEN}", "login as hunter22-of-the-job\n")
    outcome = report_issues(result, GitHubContext(TOKEN, "acme/app"), tracker=tracker,
                            policy=IssuePolicy(claim_wait=0, poll_interval=0))
    assert outcome.ok, outcome.errors
    (issue,) = tracker.issues_by_number.values()
    for text in (issue.title, issue.body, *issue.comments):
        assert "hunter22-of-the-job" not in text and TOKEN not in text
    assert "mysql -p*** failed" in issue.body

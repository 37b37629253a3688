"""Every workflow we ship is one GitHub will accept and run as intended.

Two independent judges: actionlint (expressions, runner labels, cron, action inputs, and the
shell in `run:` through shellcheck when it is installed) and GitHub's workflow JSON schema as
vendored by check-jsonschema. Both come with the `test` extra. Without them these tests skip
on a developer's machine but fail under CI, where a skip would hide a broken workflow.

This covers this project's own workflows and what `cdd init` writes, with default and
non-default options; then the properties a reader of the workflow relies on are asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from cdd_ci.scaffold import DAILY, PULL_REQUEST, InitOptions, render_files

ROOT = Path(__file__).resolve().parents[2]
OWN = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
TIMEOUT = 120
GITHUB_LABELS = {"self-hosted", "linux", "macos", "windows", "x64", "arm64", "arm", "ubuntu-latest"}

INIT_CASES = {
    "defaults": InitOptions(name="myenv"),
    "options": InitOptions(
        name="web-shop",
        directory="envs/web",
        provider="libvirt",
        machines=("front", "back", "db"),
        runner_labels=("self-hosted", "linux", "x64", "big-vagrant-host"),
        schedule="30 3 * * SUN-FRI",
    ),
}


def tool(name: str) -> list[str]:
    # the one installed beside this Python first: that is the test extra's
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return [found]
    message = f"{name} is not installed (pip install '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def actionlint(files: list[Path], config: Path) -> None:
    result = run([*tool("actionlint"), "-no-color", "-config-file", str(config), *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr


def schema(files: list[Path]) -> None:
    result = run(
        [
            *tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, files),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def generated(tmp_path: Path, options: InitOptions) -> tuple[list[Path], Path]:
    """The workflows `cdd init` writes, and an actionlint config naming their custom labels."""
    files = render_files(options, install_spec="cdd-ci==1.2.3")
    paths = []
    for relative in (DAILY, PULL_REQUEST):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[relative], encoding="utf-8")
        paths.append(path)
    custom = [label for label in options.runner_labels if label not in GITHUB_LABELS]
    config = tmp_path / ".github" / "actionlint.yaml"
    config.write_text(
        "self-hosted-runner:\n  labels:\n" + "".join(f"    - {x}\n" for x in custom),
        encoding="utf-8",
    )
    return paths, config


def load(text: str) -> Any:
    # YAML 1.2, so `on:` stays the string GitHub reads and does not become True
    return YAML(typ="safe").load(text)


# --- the judges ----------------------------------------------------------------------------


def test_own_workflows_exist() -> None:
    assert [p.name for p in OWN] == ["ci.yml", "daily-environment.yml", "pr-environment.yml"]


def test_own_workflows_pass_actionlint() -> None:
    actionlint(OWN, ROOT / ".github" / "actionlint.yaml")


def test_own_workflows_match_githubs_schema() -> None:
    schema(OWN)


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_generated_workflows_pass_actionlint(case: str, tmp_path: Path) -> None:
    actionlint(*generated(tmp_path, INIT_CASES[case]))


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_generated_workflows_match_githubs_schema(case: str, tmp_path: Path) -> None:
    schema(generated(tmp_path, INIT_CASES[case])[0])


def test_the_judges_do_reject_a_broken_workflow(tmp_path: Path) -> None:
    """Guards the tests above: a linter that passes everything would prove nothing."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on:\n  schedule:\n    - cron: '61 5 * * *'\njobs:\n  a:\n"
        "    runs-on: [self-hosted, no-such-label]\n"
        "    steps:\n      - run: echo ${{ github.nope }}\n",
        encoding="utf-8",
    )
    config = tmp_path / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels: []\n", encoding="utf-8")
    assert run([*tool("actionlint"), "-no-color", "-config-file", str(config), str(bad)]).returncode
    no_jobs = tmp_path / "no-jobs.yml"
    no_jobs.write_text("on: push\n", encoding="utf-8")
    schema_argv = [*tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    assert run([*schema_argv, str(no_jobs)]).returncode


# --- what the workflows promise ------------------------------------------------------------


def own(name: str) -> Any:
    return load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))


def steps_named(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step.get("name", step.get("uses", "")): step for step in job["steps"]}


def environment_workflows() -> list[tuple[str, Any]]:
    out = [(name, own(name)) for name in ("daily-environment.yml", "pr-environment.yml")]
    for case, options in sorted(INIT_CASES.items()):
        files = render_files(options, install_spec="cdd-ci==1.2.3")
        out += [
            (f"init {case} daily", load(files[DAILY])),
            (f"init {case} pr", load(files[PULL_REQUEST])),
        ]
    return out


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_environment_workflows_always_destroy_and_upload(label: str, workflow: Any) -> None:
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] > 0
    steps = job["steps"]
    commands = [s.get("run", "") for s in steps]
    run_at = next(i for i, c in enumerate(commands) if c.startswith("cdd run"))
    destroy_at = next(i for i, c in enumerate(commands) if c.strip() == "cdd destroy")
    upload_at = next(i for i, s in enumerate(steps) if "upload-artifact" in s.get("uses", ""))
    assert run_at < destroy_at < upload_at
    assert "--destroy always" in commands[run_at]
    # the run step stops first, leaving the job time to destroy and upload
    assert (
        steps[run_at]["timeout-minutes"] + steps[destroy_at]["timeout-minutes"]
        < job["timeout-minutes"]
    )
    assert steps[destroy_at]["if"].startswith("always()")
    assert steps[upload_at]["if"] == "always()"
    assert steps[upload_at]["with"]["path"].rstrip("/") == "reports"
    # checkout must leave the ledger (.cdd/) for the destroy of a killed run
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["clean"] is False
    assert "git clean -ffdx -e .cdd/" in commands
    assert "self-hosted" in job["runs-on"]


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_daily_runs_on_a_schedule_and_opens_issues_pr_never(label: str, workflow: Any) -> None:
    (job,) = workflow["jobs"].values()
    run_step = next(s for s in job["steps"] if s.get("run", "").startswith("cdd run"))
    if "daily" in label:
        assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
        assert workflow["permissions"] == {"contents": "read", "issues": "write"}
        assert workflow["concurrency"]["cancel-in-progress"] is False
        assert "--issues" in run_step["run"]
        assert run_step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    else:
        assert set(workflow["on"]) == {"pull_request"}
        assert workflow["permissions"] == {"contents": "read"}
        assert "--issues" not in run_step["run"]
        # a fork's pull request would run a stranger's code on the team's machine
        assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"


def test_own_pr_workflow_runs_for_environment_changes_only() -> None:
    paths = own("pr-environment.yml")["on"]["pull_request"]["paths"]
    assert "vagrant/**" in paths
    assert "cdd.toml" in paths


def test_integration_tests_never_run_a_forks_code_on_the_vagrant_host() -> None:
    jobs = own("ci.yml")["jobs"]
    self_hosted = [name for name, job in jobs.items() if "self-hosted" in job["runs-on"]]
    assert self_hosted == ["integration"]
    assert (
        "github.event.pull_request.head.repo.full_name == github.repository"
        in (jobs["integration"]["if"])
    )
    assert {"ubuntu-latest"} == {job["runs-on"] for n, job in jobs.items() if n != "integration"}


def test_every_action_is_pinned_to_a_version() -> None:
    for path in OWN:
        for job in load(path.read_text(encoding="utf-8"))["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert "@v" in step["uses"], f"{path.name}: {step['uses']} is not pinned"

"""Every workflow we ship is one GitHub will accept and run as intended.

Three independent judges: actionlint (expressions, runner labels, cron, action inputs, and the
shell in `run:` through shellcheck when it is installed), GitHub's workflow JSON schema as
vendored by check-jsonschema, and zizmor (security: unpinned actions, broad permissions,
template injection, credentials left in the checkout). All come with the `test` extra.
Without them these tests skip on a developer's machine but fail under CI, where a skip would
hide a broken workflow.

This covers this project's own workflows and what `cdd init` writes, with default and
non-default options, each with the actionlint config it comes with; then the properties a
reader of the workflow relies on are asserted, and the matrix of environments each workflow
builds is produced by running its own plan step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from cdd_ci import scaffold
from cdd_ci.config import Report
from cdd_ci.scaffold import ACTIONLINT, DAILY, PULL_REQUEST, InitOptions, render_files

ROOT = Path(__file__).resolve().parents[2]
OWN = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
TIMEOUT = 120

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


def zizmor(directory: Path) -> None:
    # offline: the audits that ask GitHub about the actions' repositories need the network
    result = run([*tool("zizmor"), "--offline", "--no-progress", "--color=never", str(directory)])
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
    """The workflows `cdd init` writes, and the actionlint config it writes with them."""
    files = render_files(options, install_spec="cdd-ci==1.2.3")
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [tmp_path / DAILY, tmp_path / PULL_REQUEST], tmp_path / ACTIONLINT


def load(text: str) -> Any:
    # YAML 1.2, so `on:` stays the string GitHub reads and does not become True
    return YAML(typ="safe").load(text)


# --- the judges ----------------------------------------------------------------------------


def test_own_workflows_exist() -> None:
    assert [p.name for p in OWN] == [
        "ci.yml", "daily-environment.yml", "founding-environments.yml", "pr-environment.yml"]


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


def test_own_workflows_pass_zizmor() -> None:
    zizmor(ROOT / ".github")


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_generated_workflows_pass_zizmor(case: str, tmp_path: Path) -> None:
    generated(tmp_path, INIT_CASES[case])
    zizmor(tmp_path / ".github")


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
    unsafe = tmp_path / "unsafe" / ".github" / "workflows" / "unsafe.yml"
    unsafe.parent.mkdir(parents=True)
    unsafe.write_text(
        "on: push\npermissions:\n  issues: write\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v5\n", encoding="utf-8")
    found = run([*tool("zizmor"), "--offline", "--no-progress", "--color=never",
                 str(unsafe.parent)])
    assert found.returncode, found.stdout
    assert "unpinned-uses" in found.stdout


# --- what the workflows promise ------------------------------------------------------------

ENVIRONMENT_WORKFLOWS = ("daily-environment.yml", "pr-environment.yml",
                         "founding-environments.yml")
RUN_STEP = "Build, check, report and destroy"
DESTROY_STEP = "Destroy anything the run left behind (from the ledger)"
SHA_PIN = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(?:\.\d+)*$")


def own(name: str) -> Any:
    return load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))


def steps_named(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step.get("name", step.get("uses", "")): step for step in job["steps"]}


def environment_job(workflow: Any) -> dict[str, Any]:
    """The job that builds an environment: the one whose step execs `cdd run`."""
    (job,) = [job for job in workflow["jobs"].values()
              if any(s.get("run", "").startswith("exec cdd run") for s in job["steps"])]
    return job  # type: ignore[no-any-return]


def environment_workflows() -> list[tuple[str, Any]]:
    out = [(name, own(name)) for name in ENVIRONMENT_WORKFLOWS]
    for case, options in sorted(INIT_CASES.items()):
        files = render_files(options, install_spec="cdd-ci==1.2.3")
        out += [
            (f"init {case} daily", load(files[DAILY])),
            (f"init {case} pr", load(files[PULL_REQUEST])),
        ]
    return out


def plan(workflow: Any, replace: tuple[str, str] = ("", ""), cwd: Path = ROOT,
         **env: str) -> tuple[list[dict[str, Any]], int]:
    """Run the workflow's plan step as written, with the cdd under test for .venv/bin/cdd:
    the environments it hands the matrix, and their count."""
    (step,) = [s for s in workflow["jobs"]["plan"]["steps"] if s.get("id") == "plan"]
    script = step["run"].replace(".venv/bin/cdd", f"{sys.executable} -m cdd_ci")
    script = script.replace(*replace) if replace[0] else script
    assert script != step["run"]
    with tempfile.TemporaryDirectory() as temp:
        output = Path(temp) / "github-output"
        output.write_text("", encoding="utf-8")
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              env={**os.environ, **env, "GITHUB_OUTPUT": str(output)})
        assert done.returncode == 0, done.stderr
        lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    matrix = json.loads(lines["matrix"])
    assert set(matrix) == {"include"}, "any other key would be a matrix dimension of its own"
    assert json.loads(done.stdout) == matrix
    return matrix["include"], int(lines["count"])


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_environment_workflows_always_destroy_and_upload(label: str, workflow: Any) -> None:
    job = environment_job(workflow)
    assert job["timeout-minutes"] > 0
    steps = job["steps"]
    commands = [s.get("run", "") for s in steps]
    # `exec`: the cancel reaches cdd, not a shell that would not pass it on
    run_at = next(i for i, c in enumerate(commands) if c.startswith("exec cdd run"))
    destroy_at = next(i for i, c in enumerate(commands) if c.strip().startswith("cdd destroy"))
    upload_at = next(i for i, s in enumerate(steps) if "upload-artifact" in s.get("uses", ""))
    assert run_at < destroy_at < upload_at
    # the steps the cancel tests run, by name and text (tests/integration/test_cancel_real.py)
    assert steps[run_at]["name"] == RUN_STEP
    assert steps[destroy_at]["name"] == DESTROY_STEP
    assert commands[run_at] == "exec cdd run --destroy always --issues"
    assert commands[destroy_at] == "cdd destroy"
    assert steps[destroy_at]["timeout-minutes"] == 4
    # the run step stops first, leaving the job time to destroy and upload
    assert (
        steps[run_at]["timeout-minutes"] + steps[destroy_at]["timeout-minutes"]
        < job["timeout-minutes"]
    )
    assert steps[destroy_at]["if"].startswith("always()")
    assert steps[upload_at]["if"] == "always()"
    # the reports live where the environment's cdd.toml puts them
    assert steps[upload_at]["with"]["path"] == "${{ matrix.reports }}/"
    assert "${{ matrix.id }}" in steps[upload_at]["with"]["name"]
    # checkout must leave the ledger (.cdd/) for the destroy of a killed run
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["clean"] is False
    assert "git clean -ffdx -e .cdd/" in commands


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_the_run_history_survives_the_workflows_clean_step(
        label: str, workflow: Any, tmp_path: Path) -> None:
    """Yesterday's green run is what a failure's issue compares with: the clean step, run as
    written in a real checkout, keeps every environment's history and removes the rest."""
    (clean,) = [s["run"] for s in environment_job(workflow)["steps"]
                if s.get("run", "").startswith("git clean")]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=TIMEOUT)
    histories = [tmp_path / Report().history, tmp_path / "vagrant" / "db" / Report().history]
    for path in [*histories, tmp_path / "reports" / "junit.xml", tmp_path / ".venv" / "x"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x", encoding="utf-8")
    done = subprocess.run(["bash", "-c", clean], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert all(path.is_file() for path in histories)
    assert not (tmp_path / "reports").exists() and not (tmp_path / ".venv").exists()


@pytest.mark.parametrize(("label", "workflow"), [
    (label, workflow) for label, workflow in environment_workflows() if " pr" not in label
    and label != "pr-environment.yml"])
def test_workflows_that_open_issues_check_out_the_commits_since_the_last_green_run(
        label: str, workflow: Any) -> None:
    steps = environment_job(workflow)["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_environment_jobs_fan_out_over_a_generated_matrix(label: str, workflow: Any) -> None:
    job = environment_job(workflow)
    assert job["needs"] == "plan"
    assert job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    # one environment's failure never cancels another's build
    assert job["strategy"]["fail-fast"] is False
    assert "max-parallel" not in job["strategy"]
    # an empty matrix is an error on GitHub: the job is skipped instead
    assert job["if"].startswith("needs.plan.outputs.count != '0'")
    # the runner is chosen by the provider's label, from the matrix
    assert job["runs-on"] == "${{ matrix.labels }}"
    # every cdd command of the job reads its environment's config from CDD_CONFIG
    assert job["env"]["CDD_CONFIG"] == "${{ matrix.config }}"
    prepare = [s for s in job["steps"] if s.get("name", "").startswith("Prepare the host")]
    if prepare:  # this project's own: the host is prepared for the environment's provider
        assert job["env"]["CDD_PROVIDER"] == "${{ matrix.provider }}"
        assert 'setup-host.sh --provider "$CDD_PROVIDER"' in prepare[0]["run"]
    # one concurrency group per environment name: one environment on two providers takes
    # turns (same addresses); each job's title and artifact have its own id
    assert "${{ matrix.name }}" in job["concurrency"]["group"]
    assert "${{ matrix.id }}" in job["name"]
    # the plan runs on GitHub's machines: no self-hosted runner is held to make a list
    assert workflow["jobs"]["plan"]["runs-on"] == "ubuntu-latest"
    assert workflow["jobs"]["plan"]["permissions"] == {"contents": "read"}


@pytest.mark.parametrize(("label", "workflow"), environment_workflows())
def test_daily_runs_on_a_schedule_and_opens_issues_pr_only_reads_them(
        label: str, workflow: Any) -> None:
    job = environment_job(workflow)
    run_step = steps_named(job)[RUN_STEP]
    # --issues everywhere: on a pull request it says "already failing on main (#N)"
    assert "--issues" in run_step["run"]
    assert run_step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert workflow["permissions"] == {}
    if "daily" in label or "founding" in label:
        assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
        assert job["permissions"] == {"contents": "read", "issues": "write"}
        assert job["concurrency"]["cancel-in-progress"] is False
        assert job["concurrency"]["group"] == "cdd-environment-${{ matrix.name }}"
    else:
        assert set(workflow["on"]) == {"pull_request", "merge_group"}
        # no paths filter: a required check that never starts blocks the merge forever
        assert workflow["on"]["pull_request"] is None
        assert job["permissions"] == {"contents": "read", "issues": "read"}
        # a new push cancels the whole previous run; within a run, same-named ones take turns
        assert workflow["concurrency"]["cancel-in-progress"] is True
        assert job["concurrency"]["cancel-in-progress"] is False
        # a fork's pull request would run a stranger's code on the team's machine
        assert ("github.event.pull_request.head.repo.full_name == github.repository"
                in job["if"])
        assert "github.event_name == 'merge_group'" in job["if"]


@pytest.mark.parametrize("path", [*OWN, *[ROOT / ".github" / "dependabot.yml"]],
                         ids=lambda p: p.name)
def test_no_permission_is_granted_to_a_whole_workflow(path: Path) -> None:
    if path.name == "dependabot.yml":
        updates = load(path.read_text(encoding="utf-8"))["updates"]
        assert {"package-ecosystem": "github-actions", "directory": "/"}.items() <= \
            updates[0].items()
        return
    workflow = load(path.read_text(encoding="utf-8"))
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {name} says nothing of its permissions"


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    files = render_files(InitOptions(name="x"), install_spec="cdd-ci==1.2.3")
    texts = {p.name: p.read_text(encoding="utf-8") for p in OWN}
    texts.update({f"init {k}": v for k, v in files.items() if k.suffix == ".yml"})
    pins: dict[str, set[str]] = {}
    for name, text in texts.items():
        for line in text.splitlines():
            if line.strip().startswith(("uses:", "- uses:")):
                assert SHA_PIN.match(line), f"{name}: {line.strip()} is not pinned to a commit"
                action, _, pin = line.split("uses: ", 1)[1].partition("@")
                pins.setdefault(action, set()).add(pin)
    # Dependabot updates this project's workflows; what `cdd init` writes must follow
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}
    assert scaffold.CHECKOUT.split("@")[1] in pins["actions/checkout"]
    assert scaffold.UPLOAD_ARTIFACT.split("@")[1] in pins["actions/upload-artifact"]


def test_daily_builds_the_default_environment_and_founding_all_under_vagrant() -> None:
    daily, _ = plan(own("daily-environment.yml"))
    assert [e["name"] for e in daily] == ["openstack-base"]
    founding, count = plan(own("founding-environments.yml"))
    assert count == len(founding)
    assert {e["name"] for e in founding} >= {
        "openstack", "openstack-dev", "docker-swarm", "devstack"}
    assert "cdd.toml" not in {e["config"] for e in founding}
    for entry in founding:
        assert entry["config"] == f"{entry['directory']}/{Path(entry['config']).name}"
        assert (ROOT / entry["directory"] / "Vagrantfile").is_file()
        assert entry["labels"] == ["self-hosted", "linux", "vagrant", entry["provider"]]
    (schedule,) = own("founding-environments.yml")["on"]["schedule"]
    assert schedule["cron"].split()[4] != "*", "at least weekly, and not daily: too long"


def test_the_slow_tests_run_weekly_on_lxc_and_on_real_vms() -> None:
    job = own("founding-environments.yml")["jobs"]["slow-tests"]
    runs = {e["provider"]: e["tests"] for e in job["strategy"]["matrix"]["include"]}
    assert runs == {"lxc": "tests/integration/test_founding_envs.py",
                    "libvirt": "tests/integration/test_libvirt_real.py"}
    assert all((ROOT / t).is_file() for t in runs.values())
    assert job["runs-on"][-1] == "${{ matrix.provider }}"
    (step,) = [s for s in job["steps"] if "run" in s]
    assert step["run"].startswith('scripts/test.sh -m "slow and vagrant"')


def test_the_matrix_names_config_reports_provider_and_runner_labels() -> None:
    result = subprocess.run([sys.executable, "-m", "cdd_ci", "environments", "--root", str(ROOT)],
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)["include"]
    by_config = {e["config"]: e for e in entries}
    default = dict(by_config["cdd.toml"])
    assert default.pop("id") in ("openstack-base", "openstack-base-lxc")
    assert default == {
        "name": "openstack-base", "config": "cdd.toml", "directory": "vagrant/openstack-base",
        "reports": "reports", "provider": "lxc",
        "labels": ["self-hosted", "linux", "vagrant", "lxc"]}
    assert by_config["vagrant/devstack/cdd.toml"]["labels"] == [
        "self-hosted", "linux", "vagrant", "libvirt"]
    assert by_config["vagrant/openstack/cdd-dev.toml"]["reports"] == "vagrant/openstack/reports/dev"
    assert {e["name"] for e in entries} >= {
        "devstack", "docker-swarm", "openstack", "openstack-base", "openstack-dev"}
    # every job has an id of its own: the name, or name-provider where the name is shared
    names = [e["name"] for e in entries]
    assert len({e["id"] for e in entries}) == len(entries)
    for entry in entries:
        shared = names.count(entry["name"]) > 1
        assert entry["id"] == (f"{entry['name']}-{entry['provider']}" if shared
                               else entry["name"])
    # the labels the jobs ask for are the ones actionlint is told of
    known = set(load((ROOT / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]
                ["labels"]) | scaffold.GITHUB_LABELS
    assert {label for e in entries for label in e["labels"]} <= known


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's layout of environments, one of them on two providers."""
    root = tmp_path_factory.mktemp("project")
    write_env(root, "cdd.toml", "base", "vagrant/base")
    write_env(root, "vagrant/base/cdd-libvirt.toml", "base", provider="libvirt")
    write_env(root, "vagrant/openstack/cdd.toml", "openstack")
    write_env(root, "vagrant/openstack/cdd-dev.toml", "openstack-dev")
    write_env(root, "vagrant/swarm/cdd.toml", "swarm")
    write_env(root, "vagrant/devstack/cdd.toml", "devstack", provider="libvirt")
    return root


ALL = ["base-lxc", "base-libvirt", "devstack", "openstack-dev", "openstack", "swarm"]


@pytest.mark.parametrize(("changed", "built"), [
    (["vagrant/base/provision/database.sh"], ["base-lxc", "base-libvirt"]),
    (["cdd.toml"], ["base-lxc"]),
    (["vagrant/base/cdd-libvirt.toml"], ["base-libvirt"]),
    (["vagrant/openstack/Vagrantfile"], ["openstack-dev", "openstack"]),
    # a cdd file is its own environment's input, not its neighbour's
    (["vagrant/openstack/cdd-dev.toml"], ["openstack-dev"]),
    (["vagrant/openstack/cdd.toml"], ["openstack"]),
    (["vagrant/swarm/provision/node.sh", "vagrant/devstack/local.conf"],
     ["devstack", "swarm"]),
    (["vagrant/lib/cdd_env.rb"], ALL),
    (["cdd_ci/lifecycle.py"], ALL),
    (["pyproject.toml"], ALL),
    (["scripts/setup-host.sh"], ALL),
    ([".github/workflows/pr-environment.yml"], ALL),
    (["README.md", "tests/unit/test_config.py", "docs/notes.md"], []),
    (["vagrant/new-one/Vagrantfile"], []),
    (["vagrant/basement/x"], []),
], ids=lambda v: ",".join(v) if isinstance(v, list) and v else None)
def test_a_pull_request_builds_the_environments_its_change_touches(
        project: Path, changed: list[str], built: list[str]) -> None:
    """The shipped PR workflow's own plan step (its --shared paths: cdd itself, the host's
    setup, the workflow), with the changed paths given directly."""
    paths = " ".join(f"--changed {p}" for p in changed)
    entries, count = plan(own("pr-environment.yml"), cwd=project,
                          replace=('--changed-since "$BASE_SHA"', paths))
    assert [e["id"] for e in entries] == built
    assert count == len(built)


def test_a_pull_request_changing_nothing_builds_nothing() -> None:
    """`--changed-since` as the workflow runs it, against git: HEAD since HEAD."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=TIMEOUT, check=True).stdout.strip()
    assert plan(own("pr-environment.yml"), BASE_SHA=head) == ([], 0)


@pytest.mark.parametrize("workflow", [
    own("pr-environment.yml"),
    *[load(render_files(o, install_spec="cdd-ci==1.2.3")[PULL_REQUEST])
      for _, o in sorted(INIT_CASES.items())],
], ids=["own", *sorted(INIT_CASES)])
@pytest.mark.parametrize(("plan_result", "count", "built", "passes"), [
    ("success", "0", "skipped", True),     # nothing touched: nothing to build
    ("success", "2", "success", True),
    ("success", "2", "failure", False),
    ("success", "2", "cancelled", False),
    ("success", "2", "skipped", False),    # touched but not built: a fork's pull request
    ("failure", "", "skipped", False),
])
def test_the_required_check_always_reports_the_builds(
        workflow: Any, plan_result: str, count: str, built: str, passes: bool) -> None:
    jobs = workflow["jobs"]
    check = jobs["environments"]
    assert check["if"] == "always()"
    assert set(check["needs"]) == set(jobs) - {"environments"}
    assert check["runs-on"] == "ubuntu-latest"
    (step,) = check["steps"]
    assert step["env"] == {"PLAN": "${{ needs.plan.result }}",
                           "COUNT": "${{ needs.plan.outputs.count }}",
                           "BUILT": "${{ needs.environment.result }}"}
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False,
                          env={"PATH": os.environ["PATH"], "PLAN": plan_result, "COUNT": count,
                               "BUILT": built})
    assert (done.returncode == 0) is passes, done.stdout


def test_integration_tests_never_run_a_forks_code_on_the_vagrant_host() -> None:
    jobs = own("ci.yml")["jobs"]
    self_hosted = [name for name, job in jobs.items() if "self-hosted" in job["runs-on"]]
    assert self_hosted == ["integration"]
    assert (
        "github.event.pull_request.head.repo.full_name == github.repository"
        in (jobs["integration"]["if"])
    )
    assert {"ubuntu-latest"} == {job["runs-on"] for n, job in jobs.items() if n != "integration"}
    assert set(own("ci.yml")["on"]) == {"push", "pull_request", "merge_group"}


# --- `cdd environments` refuses what it cannot list -----------------------------------------


def environments(*args: str, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdd_ci", "environments", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          env={**os.environ, **(env or {})})


def write_env(root: Path, config: str, name: str, directory: str = ".",
              provider: str = "lxc") -> None:
    path = root / config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[environment]\nname = "{name}"\ndirectory = "{directory}"\n'
                    f'provider = "{provider}"\nmachines = ["a"]\n', encoding="utf-8")


@pytest.mark.parametrize(("args", "error"), [
    (["--changed-since", "no-such-ref"], "--changed-since no-such-ref: git diff failed: "),
    (["--changed-since=--output=x"], "--changed-since: '--output=x' is not a git revision"),
    (["--changed-since", "HEAD", "--changed", "x"], "give --changed-since or --changed, not both"),
    (["--glob", "../*.toml"], "--glob: '../*.toml' must be a path inside the project"),
    (["--changed", "x", "--shared", "/etc"], "--shared: '/etc' must be a path inside the project"),
    (["--github-output"], "--github-output: GITHUB_OUTPUT is not set"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], error: str) -> None:
    result = environments(*args, env={"GITHUB_OUTPUT": ""})
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(f"cdd: error: {error}"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_a_broken_cdd_file_is_an_error_naming_it_not_a_smaller_matrix(tmp_path: Path) -> None:
    write_env(tmp_path, "vagrant/good/cdd.toml", "good")
    (tmp_path / "vagrant/bad").mkdir()
    (tmp_path / "vagrant/bad/cdd.toml").write_text("[environment\n", encoding="utf-8")
    result = environments("--root", str(tmp_path))
    assert result.returncode == 2
    assert "vagrant/bad/cdd.toml: not valid TOML" in result.stderr
    assert result.stdout == ""


def test_two_environments_of_one_name_and_provider_are_refused(tmp_path: Path) -> None:
    """Nothing would tell their jobs, artifacts and reports apart."""
    write_env(tmp_path, "vagrant/a/cdd.toml", "same")
    write_env(tmp_path, "vagrant/b/cdd.toml", "same")
    result = environments("--root", str(tmp_path))
    assert result.returncode == 2
    assert "vagrant/b/cdd.toml: environment 'same' on lxc is also in vagrant/a/cdd.toml" \
        in result.stderr


def test_globs_and_labels_are_the_callers(tmp_path: Path) -> None:
    write_env(tmp_path, "envs/web/cdd.toml", "web")
    write_env(tmp_path, "cdd.toml", "main", "envs/main")
    assert json.loads(environments("--root", str(tmp_path)).stdout) == {"include": [{
        "id": "main", "name": "main", "config": "cdd.toml", "directory": "envs/main",
        "reports": "reports", "provider": "lxc",
        "labels": ["self-hosted", "linux", "vagrant", "lxc"]}]}
    result = environments("--root", str(tmp_path), "--glob", "envs/*/cdd.toml",
                          "--runner-labels", "self-hosted,big,lxc")
    (entry,) = json.loads(result.stdout)["include"]
    assert (entry["name"], entry["directory"]) == ("web", "envs/web")
    assert entry["labels"] == ["self-hosted", "big", "lxc"]  # the provider is there once


def test_a_job_names_its_environment_once_in_cdd_config(tmp_path: Path) -> None:
    """The environment jobs' steps say `cdd run`, `cdd destroy`: CDD_CONFIG picks the file."""
    write_env(tmp_path, "vagrant/web/cdd.toml", "web")
    (tmp_path / "vagrant/web/Vagrantfile").write_text("", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "cdd_ci", "validate"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT, check=False,
                            env={**os.environ, "CDD_CONFIG": "vagrant/web/cdd.toml"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vagrant/web/cdd.toml: ok: environment web")

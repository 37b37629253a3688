"""The token is in no byte cdd writes: a real run whose provisioner and check print it (and a
secret the environment holds), reported as the daily workflow does (`cdd run --issues`, the job
summary, step outputs) to the local GitHub server. Every file cdd wrote, its stdout and stderr,
and everything it sent to GitHub are searched for it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.github_server import GitHubServer
from tests.fakes.openapi import OpenApi

from .conftest import Project

pytestmark = pytest.mark.vagrant

TOKEN = "cdd-test-token-not-shaped-like-githubs-0001"
"""GITHUB_TOKEN: not in a GitHub token's shape, so only the environment says it is secret."""
DEPLOY = "d3ploy-s3cret-from-the-environment-0002"
"""A secret of the job's environment (DEPLOY_TOKEN) that Vagrant passes to the provisioner."""
SHAPED = "ghp_" + "A1b2C3d4" * 5
"""Some other GitHub token, recognised by its shape alone."""
SECRETS = (TOKEN, DEPLOY, SHAPED)
CHECK = f"""
[[checks]]
name = "leaky check"
type = "command"
on = "alpha"
command = "echo check saw {TOKEN} and {SHAPED}; exit 1"
deadline = 0
"""


@pytest.fixture
def github(github_openapi: OpenApi) -> Iterator[GitHubServer]:
    with GitHubServer.serving(github_openapi, token=TOKEN, repository="acme/cloud") as server:
        yield server


def _files(*roots: Path) -> dict[Path, bytes]:
    """Every file under `roots`, but the project's own (its config and Vagrantfile, where the
    test planted the secrets) and Vagrant's machine folder, which is Vagrant's, not cdd's."""
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and rel.parts[0] != ".vagrant" \
                    and str(rel) not in ("cdd.toml", "Vagrantfile"):
                found[path] = path.read_bytes()
    return found


def test_no_secret_is_in_any_byte_cdd_writes(pair: Project, github: GitHubServer,
                                             state_home: Path) -> None:
    vagrantfile = pair.root / "Vagrantfile"
    provision = (f'm.vm.provision "shell", inline: "echo planted {TOKEN} {SHAPED};'
                 ' echo from the env $1", args: [ENV.fetch("DEPLOY_TOKEN", "")]\n'
                 '      m.vm.provision "shell", inline: PROVISION,')
    vagrantfile.write_text(vagrantfile.read_text().replace(
        'm.vm.provision "shell", inline: PROVISION,', provision))
    pair.append_config(CHECK)
    actions = pair.root.parent / "actions"
    actions.mkdir()
    env = dict(os.environ, GITHUB_TOKEN=TOKEN, DEPLOY_TOKEN=DEPLOY,
               GITHUB_REPOSITORY="acme/cloud", GITHUB_API_URL=github.base_url,
               GITHUB_SERVER_URL="https://github.example", GITHUB_RUN_ID="77",
               GITHUB_EVENT_NAME="schedule", GITHUB_ACTIONS="true",
               GITHUB_STEP_SUMMARY=str(actions / "summary.md"),
               GITHUB_OUTPUT=str(actions / "output"))
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", "run", "--issues"], cwd=pair.root,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output

    written = _files(pair.root, actions, state_home)
    logs = pair.root / "reports" / "logs"
    # what the secrets were in was written, scrubbed
    assert "planted *** ***\n" in (logs / "alpha" / "provision.log").read_text()
    assert "from the env ***" in (logs / "alpha" / "provision.log").read_text()
    assert "check saw *** and ***" in (pair.root / "reports" / "junit.xml").read_text()
    assert "leaky check" in (actions / "summary.md").read_text()
    assert "check saw *** and ***" in output
    issues = github.real_issues()
    assert any("leaky check" in issue["title"] for issue in issues)
    sent = b"".join(r.raw for r in github.requests)
    names = sorted(str(path.relative_to(path.anchor)) for path in written)
    assert any(path.name.startswith("history.sqlite") for path in written), names  # its rows
    assert any(path.name == "provision.log" for path in written), names
    for secret in SECRETS:
        assert secret not in output, secret
        assert secret.encode() not in sent, secret
        leaked = [str(path) for path, data in written.items() if secret.encode() in data]
        assert leaked == [], (secret, leaked)
        for issue in issues:
            assert secret not in issue["title"] + (issue["body"] or "")
    assert pair.left_running(pair.run_ids()) == []

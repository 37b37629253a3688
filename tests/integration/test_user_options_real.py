"""What users choose and notice, on real machines: keeping an environment (`--destroy
passing|never`, `--hold-on-failure` and its expiry under `cdd reap`), `cdd check` and `cdd down`
on what was kept, http checks, a destroy that fails (exit 4), and the JUnit report of a failing
and of an errored run, validated against Jenkins' schema."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from .conftest import Project

pytestmark = pytest.mark.vagrant

HTTP_CHECKS = '''
[[checks]]
name = "alpha serves http to the host"
type = "http"
on = "host"
url = "http://alpha:8080/"
body = "hello from alpha"
deadline = 30

[[checks]]
name = "alpha serves http to beta"
type = "http"
on = "beta"
url = "http://alpha:8080/index.html"
status = 200
deadline = 30
'''

FAILING_CHECK = '''
[[checks]]
name = "a file that is not there"
type = "command"
on = "alpha"
command = "test -e /etc/not-there"
deadline = 0
'''


def with_env(project: Project, **env: str) -> None:
    """Give the Vagrantfile variables, as a project's cdd.toml does."""
    pairs = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    text = (project.root / "cdd.toml").read_text().replace(
        'machines = ["alpha", "beta"]', f'machines = ["alpha", "beta"]\nenv = {{ {pairs} }}')
    (project.root / "cdd.toml").write_text(text)


def junit(project: Project) -> tuple[etree._ElementTree, dict[str, ET.Element]]:
    path = project.root / "reports" / "junit.xml"
    cases = {f"{c.get('classname')}/{c.get('name')}": c
             for c in ET.parse(path).getroot().iter("testcase")}
    return etree.parse(str(path)), cases


def test_a_failed_run_kept_by_destroy_passing_then_checked_and_brought_down(
        pair: Project, junit_schema: etree.XMLSchema) -> None:
    with_env(pair, CDD_TEST_HTTP="1")
    pair.append_config(HTTP_CHECKS + FAILING_CHECK)
    run = pair.cdd("run", "--destroy", "passing")
    told = run.stdout + run.stderr
    assert run.returncode == 1, told
    assert "kept" in told.lower(), "keeping an environment is said loudly"
    report, cases = junit(pair)
    assert junit_schema.validate(report), junit_schema.error_log
    assert cases["pair.alpha.check/a file that is not there"].find("failure") is not None
    assert cases["pair.host.check/alpha serves http to the host"].find("failure") is None
    assert cases["pair.beta.check/alpha serves http to beta"].find("failure") is None, told
    (kept,) = pair.ledgers()
    assert kept["phase"] == "kept" and len(pair.left_running({str(kept["run_id"])})) == 2

    check = pair.cdd("check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "a file that is not there" in check.stdout + check.stderr

    down = pair.cdd("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert pair.left_running(pair.run_ids()) == [] and pair.ledgers() == []


def test_a_held_failure_is_kept_until_its_hold_expires_then_reaped(
        pair: Project, junit_schema: etree.XMLSchema) -> None:
    with_env(pair, CDD_TEST_FAIL="provision")
    run = pair.cdd("run", "--hold-on-failure", "20s")
    assert run.returncode == 3, run.stdout + run.stderr
    report, cases = junit(pair)
    assert junit_schema.validate(report), junit_schema.error_log
    assert cases["pair.beta.provision/provision"].find("error") is not None
    (held,) = pair.ledgers()
    run_id = str(held["run_id"])
    assert held["phase"] == "held" and pair.left_running({run_id})

    early = pair.cdd("reap")
    assert early.returncode == 0, early.stdout + early.stderr
    assert f"kept   run {run_id}" in early.stdout and "held for debugging" in early.stdout
    assert pair.left_running({run_id})

    time.sleep(max(0.0, float(str(held["hold_until"])) - time.time()) + 1)
    late = pair.cdd("reap")
    assert late.returncode == 0, late.stdout + late.stderr
    assert f"freed run {run_id}" in late.stdout and "hold expired" in late.stdout
    assert pair.left_running({run_id}) == [] and pair.ledgers() == []


def refusing(tmp_path: Path) -> dict[str, str]:
    """PATH on which Vagrant's destroy and the provider's removal both fail."""
    shims = tmp_path / "refusing"
    shims.mkdir()
    real_vagrant = next(p for p in ("/usr/bin/vagrant", "/usr/local/bin/vagrant")
                        if os.path.exists(p))
    for name, text in {
        "vagrant": f'#!/bin/sh\n[ "$1" = destroy ] && {{ echo "refused" >&2; exit 1; }}\n'
                   f'exec {real_vagrant} "$@"\n',
        "lxc-destroy": '#!/bin/sh\necho "lxc-destroy: refused" >&2\nexit 1\n',
    }.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755 | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}


def test_destroy_never_keeps_a_passing_run_and_a_failed_destroy_exits_4(
        pair: Project, tmp_path: Path) -> None:
    run = pair.cdd("run", "--destroy", "never")
    assert run.returncode == 0, run.stdout + run.stderr
    (kept,) = pair.ledgers()
    run_id = str(kept["run_id"])
    assert len(pair.left_running({run_id})) == 2

    failed = subprocess.run([sys.executable, "-m", "cdd_ci", "destroy"], cwd=pair.root,
                            env=refusing(tmp_path), capture_output=True, text=True,
                            timeout=600, check=False)
    told = failed.stdout + failed.stderr
    assert failed.returncode == 4, told
    assert "left behind" in told and pair.left_running({run_id}), told
    assert [r["run_id"] for r in pair.ledgers()] == [run_id], "kept for the next destroy"

    again = pair.cdd("destroy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert pair.left_running({run_id}) == [] and pair.ledgers() == []

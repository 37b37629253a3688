"""A failed step reports its cause, on real machines: provisioners that fail the ways real ones
do (CDD_TEST_CAUSE in the pair project's Vagrantfile), and a check across machines whose names
do not resolve there. The runs are independent, so they run at once (each gets its own subnet).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Project, copy_pair
from .test_lifecycle_real import junit_cases

pytestmark = pytest.mark.vagrant

# machine -> (kind of failure, what the JUnit message of its provision testcase must lead with)
RUNS: dict[str, dict[str, tuple[str, str]]] = {
    "apt-and-curl": {
        "alpha": ("package", "E: Unable to locate package cdd-no-such-package"),
        "beta": ("dns", "curl: (6) Could not resolve host: cdd-no-such-host.invalid"),
    },
    "unit-and-set-e": {
        "alpha": ("service", "Job for cdd-test-broker.service failed because the control "
                             "process exited with error code."),
        "beta": ("set-e", "command failed: grep -q '^ready' /etc/cdd-test"),
    },
    "traceback-and-timeout": {
        "alpha": ("traceback", "json.decoder.JSONDecodeError: Expecting value: line 1 "
                               "column 1 (char 0)"),
        "beta": ("hang", "vagrant provision beta timed out after 30 s while running: "
                         "waiting for the cluster to form"),
    },
}
CHECKS = "names-do-not-resolve"


def _configure(project: Project, env: str) -> None:
    text = (project.root / "cdd.toml").read_text()
    text = text.replace('machines = ["alpha", "beta"]',
                        f'machines = ["alpha", "beta"]\nenv = {{ {env} }}')
    (project.root / "cdd.toml").write_text(text.replace("provision = 300", "provision = 30"))


@pytest.fixture
def projects(vagrant_host: None, tmp_path: Path) -> Iterator[dict[str, Project]]:
    made = {name: copy_pair(tmp_path, name) for name in [*RUNS, CHECKS]}
    for name, machines in RUNS.items():
        kinds = " ".join(f"{m}={kind}" for m, (kind, _) in machines.items())
        _configure(made[name], f'CDD_TEST_CAUSE = "{kinds}"')
    _configure(made[CHECKS], 'CDD_TEST_NO_HOSTS = "1"')
    made[CHECKS].append_config(
        '\n[[checks]]\nname = "closed port from beta"\ntype = "port"\non = "beta"\n'
        'host = "alpha"\nport = 9\ndeadline = 0\n')
    yield made
    for project in made.values():
        project.clean_up()


def _run_all(projects: dict[str, Project]) -> dict[str, tuple[int, str]]:
    # a wide terminal, so the summary's lines are not wrapped in the middle of a cause
    env = {**os.environ, "COLUMNS": "400"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "cdd_ci", "run"], cwd=p.root,
                                    env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, p in projects.items()}
    return {name: (proc.wait(timeout=900), proc.communicate()[0])
            for name, proc in procs.items()}


def test_each_failure_reports_its_cause(projects: dict[str, Project]) -> None:
    results = _run_all(projects)
    for name, machines in RUNS.items():
        code, out = results[name]
        assert code == 3, out
        cases = junit_cases(projects[name])
        summary = " ".join(out.split())
        for machine, (kind, cause) in machines.items():
            error = cases[f"pair.{machine}.provision/provision"].find("error")
            assert error is not None, f"{name}: {machine} did not fail"
            message = error.get("message", "")
            assert message.startswith(cause), f"{kind}: {message!r}"
            assert "Vagrant assumes" not in message and "==>" not in message
            assert cause in summary, f"{kind}: the summary line does not lead with the cause"
            assert "non-zero exit status" in (error.text or "") or kind == "hang"  # all of it
        assert projects[name].left_running(projects[name].run_ids()) == []

    code, out = results[CHECKS]
    assert code == 1, out
    cases = junit_cases(projects[CHECKS])
    # alpha's name means nothing on beta; cdd knows its address, so the check still works
    assert cases["pair.beta.check/alpha ssh port from beta"].find("failure") is None, out
    closed = cases["pair.beta.check/closed port from beta"].find("failure")
    assert closed is not None
    assert "alpha:9 from beta: connection refused" in closed.get("message", "")
    assert "alpha does not resolve on beta" in closed.get("message", "")
    assert projects[CHECKS].left_running(projects[CHECKS].run_ids()) == []

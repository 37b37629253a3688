"""The JUnit report validates against Jenkins' schema and reads back as it was written."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from cdd_ci.models import ExitCode, Phase, RunResult, Status, StepResult
from cdd_ci.report import junit


@pytest.fixture(scope="module")
def schema(junit_schema: etree.XMLSchema) -> etree.XMLSchema:
    return junit_schema


def sample() -> RunResult:
    result = RunResult("20261124000000-abcdef", "demo", "lxc", ["broker", "database"],
                       started_at=1_764_000_000.0, finished_at=1_764_000_123.0,
                       commit="0123abc", vagrant_version="2.3.4", hold_until=1_764_003_723.0)
    result.add(StepResult(Phase.UP, "broker", "up", Status.PASSED, 12.5))
    result.add(StepResult(Phase.PROVISION, "broker", "provision", Status.PASSED, 40.0,
                          output="\x1b[32m==> broker: Running provisioner\x1b[0m\n"))
    result.add(StepResult(Phase.UP, "database", "up", Status.ERROR, 3.0,
                          "vagrant up database failed (exit 1): box not found",
                          "Bringing machine 'database' up\x00 <&>\n"))
    result.add(StepResult(Phase.CHECK, "broker", "rabbitmq running", Status.FAILED, 1.0,
                          "rabbitmq-server is inactive (after 3 attempts)", "inactive\n"))
    result.add(StepResult(Phase.CHECK, "database", "mariadb running", Status.SKIPPED,
                          message="environment did not come up"))
    result.add(StepResult(Phase.DESTROY, "environment", "destroy", Status.PASSED, 3.2))
    result.add(StepResult(Phase.VERIFY, "environment", "destroy-verified", Status.PASSED, 0.4))
    return result


def test_report_validates_against_jenkins_schema(tmp_path: Path, schema: etree.XMLSchema) -> None:
    path = junit.write(sample(), tmp_path / "reports" / "junit.xml")
    assert schema.validate(etree.parse(str(path))), schema.error_log


def test_one_suite_per_machine_plus_environment(tmp_path: Path) -> None:
    path = junit.write(sample(), tmp_path / "junit.xml")
    root = etree.parse(str(path)).getroot()
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "demo.broker", "demo.database", "demo.environment"]
    assert root.get("failures") == "1" and root.get("errors") == "1"
    failure = root.find(".//testcase[@name='rabbitmq running']/failure")
    assert failure is not None and failure.get("message", "").startswith("rabbitmq-server")
    error = root.find(".//testcase[@classname='demo.database.up']/error")
    assert error is not None and error.get("type") == "infrastructure"
    props = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
    assert props["run_id"] == "20261124000000-abcdef"
    assert props["commit"] == "0123abc" and props["provider"] == "lxc"


def test_reads_back_what_it_wrote(tmp_path: Path) -> None:
    original = sample()
    again = junit.read(junit.write(original, tmp_path / "junit.xml"))
    assert again.run_id == original.run_id and again.machines == original.machines
    assert again.started_at == original.started_at
    # grouped by machine in the file, so compared without order
    assert sorted((s.machine, s.name, s.phase.value, s.status.value) for s in again.steps) == \
        sorted((s.machine, s.name, s.phase.value, s.status.value) for s in original.steps)
    assert again.exit_code() is ExitCode.INFRASTRUCTURE
    assert (again.commit, again.vagrant_version, again.hold_until) == \
        ("0123abc", "2.3.4", 1_764_003_723.0)


def test_summed_times_still_validate(tmp_path: Path, schema: etree.XMLSchema) -> None:
    """Step times sum to floats like 0.30000000000000004, which the schema rejects."""
    result = RunResult("20261124000000-abcdef", "demo", "lxc", ["alpha"], started_at=1.0)
    for seconds in (0.1, 0.1, 0.1):
        result.add(StepResult(Phase.CHECK, "alpha", f"check {seconds}", Status.PASSED, seconds))
    path = junit.write(result, tmp_path / "junit.xml")
    assert schema.validate(etree.parse(str(path))), schema.error_log
    assert etree.parse(str(path)).getroot().find("testsuite").get("time") == "0.300"

"""The run as JUnit XML: what CI systems, dashboards and the issue reporter read.

Layout: one `<testsuite>` per machine (`<env>.<machine>`) plus one for the environment
(`<env>.environment`); each testcase has classname `<env>.<machine>.<phase>` and is named
after the phase or the check. `<failure>` means the product failed, `<error>` that the
infrastructure did. The output validates against Jenkins' JUnit schema, which is stricter
than what junit-xml emits by default (it has no `disabled` attribute), hence the trim.
"""

from __future__ import annotations

import calendar
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from junit_xml import TestCase, TestSuite

from cdd_ci.models import ENVIRONMENT, Phase, RunResult, Status, StepResult
from cdd_ci.text import Scrubber, clean, scrub_run

__all__ = ["clean", "read", "render", "write"]

TAIL = 20_000
"""Characters of output kept per testcase: enough to diagnose, small enough to open."""
_NOT_IN_SCHEMA = ("disabled",)
def render(result: RunResult, scrub: Scrubber | None = None) -> str:
    """The report as XML, scrubbed of the environment's secrets (and any GitHub token)."""
    result = scrub_run(result, scrub or Scrubber.from_env(os.environ))
    root = ET.Element("testsuites", name=f"cdd {result.environment}")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for suite in _suites(result):
        element = suite.build_xml_doc()
        for attr in _NOT_IN_SCHEMA:
            element.attrib.pop(attr, None)
        for key in totals:
            totals[key] += int(element.get(key, "0"))
        # junit-xml sums the case times as floats (6.765000000000001); the schema allows 3 decimals
        suite_time = float(element.get("time", "0"))
        element.set("time", f"{suite_time:.3f}")
        total_time += suite_time
        root.append(element)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def write(result: RunResult, path: Path, scrub: Scrubber | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(result, scrub), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _suites(result: RunResult) -> list[TestSuite]:
    properties = {
        "run_id": result.run_id,
        "environment": result.environment,
        "provider": result.provider,
        "machines": ",".join(result.machines),
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at) if result.finished_at else "",
        **({"interrupted_by": result.interrupted_by} if result.interrupted_by else {}),
        **({"kept": "true"} if result.kept else {}),
        **result.properties,
        **{name: value for name, value in (
            ("commit", result.commit), ("box", result.box),
            ("vagrant_version", result.vagrant_version),
            ("hold_until", _iso(result.hold_until) if result.hold_until else "")) if value},
    }
    suites = []
    # checks run from the runner itself are reported under their own suite, `<env>.host`
    others = (s.machine for s in result.steps if s.machine != ENVIRONMENT)
    for machine in dict.fromkeys([*result.machines, *others, ENVIRONMENT]):
        cases = [_case(result.environment, s) for s in result.steps if s.machine == machine]
        suites.append(TestSuite(
            f"{result.environment}.{machine}", cases, properties=properties,
            timestamp=_iso(result.started_at), hostname=os.uname().nodename,
        ))
    return suites


def _case(environment: str, step: StepResult) -> TestCase:
    output = clean(step.output[-TAIL:])
    message = clean(step.message)
    case = TestCase(
        clean(step.name),
        classname=f"{environment}.{step.machine}.{step.phase.value}",
        elapsed_sec=round(step.duration, 3),
        stdout=output if output and step.ok else None,
    )
    if step.status is Status.FAILED:
        case.add_failure_info(message, output or None, "check")
    elif step.status is Status.ERROR:
        case.add_error_info(message, output or None, "infrastructure")
    elif step.status is Status.SKIPPED:
        case.add_skipped_info(message or "skipped")
    return case


def read(path: Path) -> RunResult:
    """Rebuild a RunResult from a report this module wrote (for `cdd issues --junit`)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    props: dict[str, str] = {}
    steps: list[StepResult] = []
    machines: list[str] = []
    for suite in suites:
        for prop in suite.findall("properties/property"):
            props[prop.get("name", "")] = prop.get("value", "")
        for case in suite.findall("testcase"):
            steps.append(_step(case))
    for name in props.get("machines", "").split(","):
        if name:
            machines.append(name)
    known = {"run_id", "environment", "provider", "machines", "started_at", "finished_at",
             "interrupted_by", "kept", "commit", "box", "vagrant_version", "hold_until"}
    return RunResult(
        run_id=props.get("run_id", ""),
        environment=props.get("environment", ""),
        provider=props.get("provider", ""),
        machines=machines,
        started_at=_epoch(props.get("started_at", "")),
        finished_at=_epoch(props.get("finished_at", "")),
        steps=steps,
        commit=props.get("commit", ""),
        box=props.get("box", ""),
        vagrant_version=props.get("vagrant_version", ""),
        hold_until=_epoch(props.get("hold_until", "")),
        properties={k: v for k, v in props.items() if k not in known},
        interrupted_by=props.get("interrupted_by", ""),
        kept=props.get("kept") == "true",
    )


def _step(case: ET.Element) -> StepResult:
    _env, machine, phase = [*case.get("classname", "").split("."), "", "", ""][:3]
    status, message, output = Status.PASSED, "", (case.findtext("system-out") or "")
    for tag, st in (("failure", Status.FAILED), ("error", Status.ERROR),
                    ("skipped", Status.SKIPPED)):
        node = case.find(tag)
        if node is not None:
            status, message, output = st, node.get("message", ""), node.text or ""
    return StepResult(
        phase=Phase(phase) if phase in {p.value for p in Phase} else Phase.CHECK,
        machine=machine,
        name=case.get("name", ""),
        status=status,
        duration=float(case.get("time") or 0),
        message=message,
        output=output,
    )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def _epoch(text: str) -> float:
    if not text:
        return 0.0
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))

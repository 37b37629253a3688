"""The benchmark scripts must not rot: each parses its arguments and prints its plan.

Benchmarks are not timed tests; `python3 bench/run.py --smoke` runs them for real with tiny
counts. Here only what needs no Vagrant: argument parsing, dry runs, the scenario files they
write and the README table they render.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ["checks", "whole", "scale", "teardown", "startup", "run"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=BENCH, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_has_help_and_a_dry_run(script: str) -> None:
    helped = bench(f"{script}.py", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--dry-run" in helped.stdout
    dry = bench(f"{script}.py", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip()


def test_run_dry_run_names_all_five_benchmarks() -> None:
    dry = bench("run.py", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for name in ("checks", "whole", "scale", "teardown", "startup"):
        assert f"] {name} " in dry.stderr


@pytest.mark.parametrize("args", [
    ["checks.py", "--checks", "5", "--machines", "2"],
    ["scale.py", "--counts", "1,x"],
    ["scale.py", "--counts", "0,2"],
    ["run.py", "nosuch"],
    ["whole.py", "--provider", "nosuch"],
    ["whole.py", "--provider", "docker"],  # Molecule's settings here are lxc's
])
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    assert bench(*args, "--dry-run").returncode == 2


def test_the_naive_script_says_how_to_use_it() -> None:
    out = subprocess.run([str(BENCH / "naive.sh"), "nosuch"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 2 and "usage" in out.stderr


def _import_benchlib() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import benchlib
    finally:
        sys.path.remove(str(BENCH))
    return benchlib


def test_every_tool_gets_the_same_checks(tmp_path: Path) -> None:
    b = _import_benchlib()
    commands = b.check_commands(30)
    assert len(set(commands)) == 30
    project = b.Project(tmp_path / "p", 2, "192.168.66", commands)
    text = project.write().read_text()
    assert text.count("[[checks]]") == 30
    root = b.molecule_scenario(tmp_path / "m", "benchx", 2, commands)
    tests = (root / "molecule" / "default" / "tests" / "test_default.py").read_text()
    assert all(repr(c) in tests for c in commands)
    scenario = (root / "molecule" / "default" / "molecule.yml").read_text()
    assert "container_name = 'cdd-benchx-m1'" in scenario  # the naming contract
    env = b.BenchEnv("benchx", 2, "192.168.66", tmp_path / "s")
    lines = b.write_checks_file(tmp_path / "c.tsv", env, commands).read_text().splitlines()
    assert len(lines) == 60 and lines[0] == f"m1\t{commands[0]}"


def test_the_readme_table_renders_from_results(tmp_path: Path) -> None:
    host = {"date": "2026-01-01 00:00 UTC", "nproc": "2", "cpu": "CPU", "ram": "24 GiB",
            "kernel": "6", "vagrant": "2.3.4", "python": "3.11"}
    results = {
        "checks": {"host": host, "checks": 50, "machines": 2,
                   "median": {"cdd_check": 0.5, "checks_phase": 0.2, "loop": 70.0,
                              "molecule_verify": 1.5},
                   "ratios": {"loop_over_cdd_check": 140, "molecule_over_cdd_check": 3,
                              "loop_over_checks_phase": 350,
                              "molecule_over_checks_phase": 7.5}},
        "whole": {"host": host, "checks": 50,
                  "median": {"cdd_run": 25, "molecule_test": 50, "naive": 90,
                             "vagrant_up": 17, "naive_checks": 70, "vagrant_destroy": 3},
                  "ratios": {"cdd_over_molecule": 0.5, "cdd_over_naive": 0.28}},
        "scale": {"median": {"cdd_up": {"1": 10, "2": 12, "3": 14, "5": 20},
                             "vagrant_up": {"1": 9, "3": 13}}},
        "teardown": {"machines": 2, "median": {"cdd_sigterm_to_gone": 4,
                                               "cdd_sigterm_to_exit": 6, "vagrant_destroy": 3},
                     "difference": {"cdd_gone_minus_vagrant_destroy": 1.0}},
        "startup": {"tool": "hyperfine", "runs": 30,
                    "seconds": {"cdd --help": {"mean": 0.1}, "cdd validate": {"mean": 0.2},
                                "python3 -c pass": {"mean": 0.04}}},
    }
    for name, data in results.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = bench("run.py", "--table", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "140x faster" in out.stdout and "3.0x faster" in out.stdout
    assert "3 machines: 1.40x one" in out.stdout
    assert "+1.0 s" in out.stdout and "`cdd validate` 200 ms" in out.stdout
    assert "Measured 2026-01-01 00:00 UTC on 2 cores (`nproc`) of CPU, 24 GiB RAM" in out.stdout

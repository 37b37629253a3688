"""In CI a test that skips fails the run unless tests/expected-skips.txt lists it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXPECTED_SKIPS, REPO
from tests.skip_guard import expected_skips, unexpected

SUITE = '''
import pytest

def test_skips():
    pytest.skip("no provider here")

def test_passes():
    pass
'''
CONFTEST = '''
from pathlib import Path
from tests import skip_guard

def pytest_configure(config):
    skip_guard.register(config, Path(__file__).parent / "expected-skips.txt")
'''


def run_suite(tmp_path: Path, ci: str, listed: str = "") -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_skipping.py").write_text(SUITE)
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "expected-skips.txt").write_text(f"# why they may skip\n{listed}\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rs", str(suite)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_an_unlisted_skip_fails_the_run_in_ci(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 skipped test(s) not on expected-skips.txt" in proc.stdout
    assert "test_skipping.py::test_skips" in proc.stdout


def test_a_listed_skip_passes_in_ci(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "true", "*::test_skips -- no provider here on purpose")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_outside_ci_a_skip_is_only_reported(tmp_path: Path) -> None:
    proc = run_suite(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout


def test_the_projects_list_parses() -> None:
    patterns = expected_skips(EXPECTED_SKIPS)
    assert unexpected(["tests/x.py::test_a"], [*patterns, "tests/x.py::*"]) == []

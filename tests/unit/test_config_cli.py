"""What a newcomer meets first: one validation for every command, --version, whole help texts.

Every command that reads cdd.toml goes through the same validation as `cdd validate`: a
config that validate rejects is rejected by run, up, check, destroy and down with the same
line and exit 2, before anything is written or started.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ENV = '[environment]\nname = "x"\ndirectory = "v"\nmachines = ["a"]\n'
COMMANDS = ["validate", "run", "up", "check", "destroy", "down"]


def cdd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdd_ci", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cdd: error: ")
    assert len(lines[0]) < 300
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_directory_stops_every_command_and_creates_nothing(
        tmp_path: Path, command: str) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "Vagrantfile").write_text("# fake\n")
    (tmp_path / "cdd.toml").write_text(ENV.replace('"v"', '"vv"'))
    line = one_error_line(cdd(command, cwd=tmp_path))
    assert line == (f"cdd: error: cdd.toml: environment.directory: no Vagrantfile in "
                    f"{tmp_path.resolve() / 'vv'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdd.toml", "v"]


@pytest.mark.parametrize("provider", ["lxc --x", "fake", "LXC", "virtualbox "])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_provider_cdd_does_not_know_is_refused(tmp_path: Path, provider: str,
                                                 command: str) -> None:
    (tmp_path / "Vagrantfile").write_text("# fake\n")
    (tmp_path / "cdd.toml").write_text(ENV.replace('"v"', '"."') + f'provider = "{provider}"\n')
    line = one_error_line(cdd(command, cwd=tmp_path))
    assert line == ("cdd: error: cdd.toml: environment.provider: Value error, unknown provider "
                    f"(known: docker, libvirt, lxc, virtualbox) (got {provider!r})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Vagrantfile", "cdd.toml"]


@pytest.mark.parametrize(("config", "expected"), [
    ("/dev/zero", "/dev/zero: larger than 32 MiB"),
    (".", ".: cannot read: Is a directory"),
])
def test_a_file_that_is_no_config_is_one_line(tmp_path: Path, config: str,
                                               expected: str) -> None:
    assert expected in one_error_line(cdd("validate", "--config", config, cwd=tmp_path))


@pytest.mark.parametrize("args", [["run", "--bogus"], ["nosuch"], ["validate", "-c"],
                                  ["issues", "--close-after", "0"]])
def test_usage_errors_are_one_line_not_a_usage_block(tmp_path: Path, args: list[str]) -> None:
    assert "--help" in one_error_line(cdd(*args, cwd=tmp_path))


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_comes_from_the_package(tmp_path: Path, flag: str) -> None:
    proc = cdd(flag, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == f"cdd {version('cdd-ci')}\n"


def test_no_command_description_is_cut_in_the_help(tmp_path: Path) -> None:
    proc = cdd("--help", cwd=tmp_path)
    assert proc.returncode == 0
    commands = proc.stdout.split("Commands:", 1)[1]
    assert "..." not in commands
    for line in commands.strip().splitlines():
        assert line.rstrip().endswith("."), line


def test_validate_says_1_machine_and_1_check(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "Vagrantfile").write_text("# fake\n")
    (tmp_path / "cdd.toml").write_text(
        ENV + '[[checks]]\nname = "c"\ntype = "command"\ncommand = "true"\n')
    proc = cdd("validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(1 machine, 1 check, provider lxc" in proc.stdout

"""Bad config gives one line naming the file, the key path and the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdd_ci.config import ConfigError, DestroyPolicy, load_config

ENV = '[environment]\nname = "x"\ndirectory = "v"\nmachines = ["a", "b"]\n'


@pytest.mark.parametrize(("text", "expected"), [
    ('destroy = "sometimes"\n' + ENV,
     "cdd.toml: destroy: Input should be 'always', 'passing' or 'never' (got 'sometimes')"),
    (ENV + "colour = 1\n", "cdd.toml: environment.colour: unknown key (got 1)"),
    (ENV + '[[checks]]\nname = "p"\ntype = "port"\nhost = "a"\nport = 99999\n',
     "cdd.toml: checks[0].port: Input should be less than 65536 (got 99999)"),
    (ENV + '[[checks]]\nname = "p"\ntype = "porty"\n',
     "cdd.toml: checks[0]: type must be one of command, port, http, service"),
    (ENV + '[[checks]]\nname = "p"\ncommand = "true"\n',
     "cdd.toml: checks[0]: missing key 'type' (command, port, http or service)"),
    (ENV + '[[checks]]\nname = "p"\ntype = "command"\ncommand = "x"\non = "c"\n',
     "cdd.toml: checks[0].on: unknown machine 'c' (machines: a, b)"),
    (ENV + '[[checks]]\nname = "p"\ntype = "command"\ncommand = "x"\nstdout = "("\n',
     "cdd.toml: checks[0].stdout: Value error, not a valid regular expression"),
    (ENV + '[[checks]]\nname = "p"\ntype = "service"\nservice = "x"\non = "host"\n',
     "cdd.toml: checks[0].on: a service check runs on a machine, not on the host"),
    ('[environment]\nname = "x"\nmachines = ["a"]\n',
     "cdd.toml: environment.directory: Field required"),
    ("[environment\n", "cdd.toml: not valid TOML"),
    (ENV + "[timeouts]\nup = -1\n", "cdd.toml: timeouts.up: Input should be greater than 0"),
    (ENV + "[[harvest]]\nfiles = '/var/log/x'\n",
     "cdd.toml: harvest[0].files: Input should be a valid list"),
    (ENV.replace('"b"]', '"a"]'),
     "cdd.toml: environment.machines: Value error, duplicate machine name 'a'"),
    (ENV + '[[checks]]\nname = "p"\ntype = "command"\ncommand = "x"\non = []\n',
     "cdd.toml: checks[0].on: empty, so it would run nowhere"),
    (ENV + '[[checks]]\nname = "h"\ntype = "http"\nurl = "http://[broker:15672/"\n',
     "cdd.toml: checks[0].url: Value error, not a valid URL: Invalid IPv6 URL"),
    (ENV + '[[checks]]\nname = "h"\ntype = "http"\nurl = "http://broker:99999/"\n',
     "cdd.toml: checks[0].url: Value error, not a valid URL: Port out of range"),
    (ENV + '[[checks]]\nname = "h"\ntype = "http"\nurl = "http://broker/a b"\n',
     "cdd.toml: checks[0].url: Value error, a URL has no spaces"),
    (ENV + '[[checks]]\nname = "h"\ntype = "http"\nurl = "http://"\n',
     "cdd.toml: checks[0].url: Value error, no host in the URL"),
    (ENV + 'env = { "A=B" = "1" }\n',
     "cdd.toml: environment.env: Value error, variable name 'A=B' is empty or contains '='"),
    (ENV + 'env = { A = "x\\u0000y" }\n', "cdd.toml: environment.env.A: contains a NUL"),
    (ENV + "[timeouts]\nup = 1e12\n",
     "cdd.toml: timeouts.up: Input should be less than or equal to 604800"),
    (ENV + "[timeouts]\ncheck = inf\n",
     "cdd.toml: timeouts.check: Input should be a finite number (got inf)"),
    (ENV + '[report]\ndirectory = "/"\n',
     "cdd.toml: report.directory: / would have its logs/ emptied at each run"),
    (ENV + '[[checks]]\nname = "p"\ntype = "command"\ncommand = "x"\n'
     '[[checks]]\nname = "p"\ntype = "command"\ncommand = "y"\n',
     "cdd.toml: checks: duplicate check name 'p'"),
    ("\ufeff" + ENV, "cdd.toml: starts with a UTF-8 byte-order mark (BOM)"),
])
def test_errors_name_file_key_and_value(tmp_path: Path, text: str, expected: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cdd.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(Path("cdd.toml"))
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)
    assert len(str(err.value)) < 300


def test_a_huge_value_is_shortened_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "cdd.toml").write_text(ENV.replace('"x"', '"' + "y" * 1_000_000 + '!"'))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "cdd.toml")
    assert "environment.name: String should" in str(err.value)
    assert len(str(err.value)) < 300


def test_a_secret_in_env_is_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "cdd.toml").write_text(ENV + 'env = { TOKEN = ["hunter2-secret"] }\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "cdd.toml")
    assert "environment.env.TOKEN" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_defaults(tmp_path: Path) -> None:
    (tmp_path / "cdd.toml").write_text(ENV)
    config = load_config(tmp_path / "cdd.toml")
    assert config.destroy is DestroyPolicy.ALWAYS
    assert config.vagrant_dir == tmp_path / "v"
    assert config.report_dir == tmp_path / "reports"
    assert config.targets(["all"]) == ["a", "b"]


def test_the_repository_default_config_is_valid(repo_root: Path) -> None:
    config = load_config(repo_root / "cdd.toml")
    assert config.environment.name == "openstack-base"
    assert (config.vagrant_dir / "Vagrantfile").is_file()


@pytest.mark.parametrize("args", [
    ["validate", "--config", "missing.toml"],
    ["run", "--config", "bad.toml"],
    ["run", "--destroy", "sometimes", "--config", "good.toml"],
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "bad.toml").write_text(ENV + "oops = true\n")
    (tmp_path / "good.toml").write_text(ENV)
    proc = subprocess.run([sys.executable, "-m", "cdd_ci", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("cdd: error: ")
    assert "Traceback" not in proc.stderr


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    from cdd_ci.cli import app

    runner = CliRunner()
    for command in app.registered_commands:
        assert command.callback is not None and command.callback.__doc__, command.name
        name = command.name or command.callback.__name__
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name

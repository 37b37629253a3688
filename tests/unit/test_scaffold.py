"""`cdd init` as a user runs it: files written, what they say, exit codes, nothing clobbered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from cdd_ci import scaffold
from cdd_ci.cli import app
from cdd_ci.config import ConfigError, load_config

WRITTEN = [
    Path("cdd.toml"),
    Path(".github/workflows/daily-environment.yml"),
    Path(".github/workflows/pr-environment.yml"),
    Path(".github/actionlint.yaml"),
    Path(".github/dependabot.yml"),
]


def init(project: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["init", "--project", str(project), *args])
    return result.exit_code, result.stdout, result.stderr


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its content and modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def yaml(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return loaded


def git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com",
         *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def plan(project: Path, workflow: Path, **env: str) -> dict[str, Any]:
    """Run the workflow's plan step as written (the installed cdd for .venv/bin/cdd) in the
    project, and return the step outputs it wrote: the matrix and the count."""
    (step,) = [s for s in yaml(project / workflow)["jobs"]["plan"]["steps"]  # type: ignore[index]
               if s.get("id") == "plan"]
    outputs = project / "github-output"
    outputs.write_text("", encoding="utf-8")
    script = step["run"].replace(".venv/bin/cdd", f"{sys.executable} -m cdd_ci")
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=project,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **env, "GITHUB_OUTPUT": str(outputs)})
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return {"matrix": json.loads(lines["matrix"]), "count": int(lines["count"])}


def test_init_with_defaults_writes_a_config_that_validates(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    code, out, _ = init(project)
    assert code == 0, out
    for relative in [*WRITTEN, Path("vagrant/shop/Vagrantfile")]:
        assert (project / relative).is_file()
        assert f"wrote {project / relative}" in out
    config = load_config(project / "cdd.toml")
    assert config.environment.name == "shop"
    assert config.environment.directory == Path("vagrant/shop")
    assert config.environment.provider == "lxc"
    assert config.environment.machines == ["default"]
    assert config.destroy.value == "always"
    assert [c.name for c in config.checks] == ["machines answer over ssh"]
    daily = yaml(project / WRITTEN[1])
    assert daily["on"]["schedule"] == [{"cron": "0 5 * * 1-5"}]  # type: ignore[index]
    job = daily["jobs"]["environment"]  # type: ignore[index]
    assert job["runs-on"] == "${{ matrix.labels }}"
    assert plan(project, WRITTEN[1]) == {"count": 1, "matrix": {"include": [{
        "id": "shop", "name": "shop", "config": "cdd.toml", "directory": "vagrant/shop",
        "reports": "reports",
        "provider": "lxc", "labels": ["self-hosted", "linux", "vagrant", "lxc"]}]}}


def test_what_init_writes_passes_cdd_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert init(tmp_path, "--name", "web", "--machines", "a,b")[0] == 0
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "environment web (2 machines" in result.stdout


def test_init_with_options_uses_them_everywhere(tmp_path: Path) -> None:
    code, out, _ = init(
        tmp_path,
        "--name", "web-shop",
        "--directory", "envs/web",
        "--provider", "libvirt",
        "--machines", "front, back,db",
        "--runner-labels", "self-hosted,linux,big-host",
        "--schedule", "30 3 * * SUN-FRI",
    )  # fmt: skip
    assert code == 0, out
    config = load_config(tmp_path / "cdd.toml")
    assert config.environment.name == "web-shop"
    assert config.environment.directory == Path("envs/web")
    assert config.environment.provider == "libvirt"
    assert config.environment.machines == ["front", "back", "db"]
    assert (tmp_path / "envs/web/Vagrantfile").is_file()
    assert '["front", "back", "db"]' in (tmp_path / "envs/web/Vagrantfile").read_text()
    daily = yaml(tmp_path / WRITTEN[1])
    assert daily["on"]["schedule"] == [{"cron": "30 3 * * SUN-FRI"}]  # type: ignore[index]
    (entry,) = plan(tmp_path, WRITTEN[1])["matrix"]["include"]
    assert entry["name"] == "web-shop"
    assert entry["directory"] == "envs/web"
    assert entry["labels"] == ["self-hosted", "linux", "big-host", "libvirt"]
    assert "big-host" in yaml(tmp_path / WRITTEN[3])["self-hosted-runner"]["labels"]  # type: ignore[index]
    assert "labelled self-hosted, linux, big-host, libvirt (" in out
    # a provider already among the labels is not asked for twice
    code, out, _ = init(tmp_path / "again", "--runner-labels", "self-hosted,lxc")
    assert "labelled self-hosted, lxc (" in out


def test_init_ends_by_saying_what_keeps_fork_code_off_the_runners(tmp_path: Path) -> None:
    """The workflow's fork guard is in a file the fork itself can edit: init says so, and
    names the settings on GitHub that do keep a stranger's code off a self-hosted runner."""
    code, out, _ = init(tmp_path)
    assert code == 0, out
    closing = out[out.index("forks:"):]
    assert "fork guard is in the file a fork can edit" in closing
    assert "private repository" in closing
    assert '"Require approval for all outside collaborators"' in closing
    assert "runner group limited to this repository" in closing
    assert closing.rstrip().endswith("public repositories not allowed")


def test_the_pr_workflow_builds_only_what_the_change_touches(tmp_path: Path) -> None:
    """The scaffolded plan step as a pull request runs it: against the base commit."""
    assert init(tmp_path, "--name", "web", "--directory", "envs/web")[0] == 0
    (tmp_path / "README.md").write_text("# shop\n", encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    base = git(tmp_path, "rev-parse", "HEAD")

    def change(path: str) -> dict[str, Any]:
        git(tmp_path, "checkout", "-q", "-B", f"pr-{len(path)}", base)
        with (tmp_path / path).open("a", encoding="utf-8") as handle:
            handle.write("# changed\n")
        git(tmp_path, "commit", "-q", "-am", f"change {path}")
        return plan(tmp_path, WRITTEN[2], BASE_SHA=base)

    assert change("README.md") == {"count": 0, "matrix": {"include": []}}
    assert change("envs/web/Vagrantfile")["count"] == 1
    assert change("cdd.toml")["count"] == 1
    # the workflow pins cdd: a new cdd is a change to every environment
    assert change(str(WRITTEN[2]))["count"] == 1


def test_second_init_refuses_and_changes_nothing(tmp_path: Path) -> None:
    assert init(tmp_path, "--machines", "a,b")[0] == 0
    (tmp_path / "cdd.toml").write_text("# edited by hand\n", encoding="utf-8")
    before = snapshot(tmp_path)
    code, out, err = init(tmp_path, "--machines", "x")
    assert code == 2
    assert (
        err
        == f"cdd: error: {tmp_path / 'cdd.toml'}: already exists; not overwritten (use --force)\n"
    )
    assert out == ""
    assert snapshot(tmp_path) == before


def test_refusal_names_whichever_file_exists_and_writes_none(tmp_path: Path) -> None:
    existing = tmp_path / ".github/workflows/pr-environment.yml"
    existing.parent.mkdir(parents=True)
    existing.write_text("name: ours\n", encoding="utf-8")
    code, _, err = init(tmp_path)
    assert code == 2
    assert str(existing) in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "cdd.toml").exists()
    assert existing.read_text(encoding="utf-8") == "name: ours\n"


def test_force_overwrites_but_keeps_the_users_vagrantfile(tmp_path: Path) -> None:
    assert init(tmp_path, "--name", "web", "--machines", "a")[0] == 0
    vagrantfile = tmp_path / "vagrant/web/Vagrantfile"
    vagrantfile.write_text("# my real work\n", encoding="utf-8")
    # the project's own linter and Dependabot configs serve its other workflows too
    for kept in WRITTEN[3:]:
        (tmp_path / kept).write_text("# ours\n", encoding="utf-8")
    code, out, _ = init(tmp_path, "--name", "web", "--machines", "a,b", "--force")
    assert code == 0
    assert load_config(tmp_path / "cdd.toml").environment.machines == ["a", "b"]
    assert vagrantfile.read_text(encoding="utf-8") == "# my real work\n"
    for kept in WRITTEN[3:]:
        assert (tmp_path / kept).read_text(encoding="utf-8") == "# ours\n"
    assert "Vagrantfile" not in "".join(line for line in out.splitlines() if "wrote" in line)


def test_an_existing_vagrantfile_is_used_not_refused(tmp_path: Path) -> None:
    vagrantfile = tmp_path / "vagrant/app/Vagrantfile"
    vagrantfile.parent.mkdir(parents=True)
    vagrantfile.write_text("# existing\n", encoding="utf-8")
    code, _, _ = init(tmp_path, "--name", "app")
    assert code == 0
    assert vagrantfile.read_text(encoding="utf-8") == "# existing\n"
    assert (tmp_path / "cdd.toml").is_file()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--name", "bad name"], "--name: 'bad name' is not a valid name"),
        (["--machines", ""], "--machines: name at least one machine"),
        (["--machines", "a,a"], "--machines: a machine is named twice"),
        (["--machines", "all"], "--machines: 'all' is not a valid machine name"),
        (["--machines", "a b"], "--machines: 'a b' is not a valid machine name"),
        (["--provider", "virtual box"], "--provider: 'virtual box' is not a provider cdd knows"),
        (["--provider", "fake"], "--provider: 'fake' is not a provider cdd knows (docker, "
                                 "libvirt, lxc, virtualbox)"),
        (["--runner-labels", " , "], "--runner-labels: give at least one label"),
        (["--runner-labels", "self-hosted,a:b"], "--runner-labels: 'a:b' is not a valid"),
        (["--directory", "/abs/path"], "--directory: '/abs/path' must be a relative path"),
        (["--directory", "../outside"], "--directory: '../outside' must be a relative path"),
        (["--directory", "vagrant/*"], "--directory: 'vagrant/*' must be a relative path"),
        (["--schedule", "0 5 * *"], "--schedule: '0 5 * *' needs 5 fields"),
        (["--schedule", "60 5 * * *"], "--schedule: minute field '60' is not valid cron"),
        (["--schedule", "0 24 * * *"], "--schedule: hour field '24' is not valid cron"),
        (["--schedule", "0 5 * * 7"], "--schedule: day of week field '7' is not valid cron"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    code, _, err = init(tmp_path, *args)
    assert code == 2
    assert err.startswith(f"cdd: error: {complaint}")
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "schedule",
    [
        "0 5 * * 1-5",
        "*/15 * * * *",
        "30 3 1,15 * *",
        "0 0 * JAN-MAR MON",
        "5 4 * * sun",
        "0 9-17/2 * * *",
    ],
)
def test_valid_schedules_are_accepted(schedule: str) -> None:
    scaffold.validate(scaffold.InitOptions(name="x", schedule=schedule))


@pytest.mark.parametrize(
    "schedule",
    [
        "",
        "@daily",
        "* * * * * *",
        "5-1 * * * *",
        "*/0 * * * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "a b c d e",
    ],
)
def test_invalid_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(ConfigError, match="--schedule"):
        scaffold.validate(scaffold.InitOptions(name="x", schedule=schedule))


@pytest.mark.parametrize(
    ("directory", "name"),
    [("my project", "my-project"), ("env_1", "env_1"), ("---", "environment")],
)
def test_default_name_comes_from_the_project_directory(
    tmp_path: Path, directory: str, name: str
) -> None:
    assert scaffold.default_name(tmp_path / directory) == name


def test_cli_defaults_are_the_library_defaults() -> None:
    """The help shows the CLI's defaults; they must be what the library means by default."""
    result = CliRunner().invoke(app, ["init", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert f"[default: {','.join(scaffold.DEFAULT_RUNNER_LABELS)}]" in text
    assert f"[default: {scaffold.DEFAULT_SCHEDULE}]" in text
    assert f"[default: {scaffold.DEFAULT_PROVIDER}]" in text
    assert f"[default: {','.join(scaffold.DEFAULT_MACHINES)}]" in text


def test_generated_workflows_pin_the_cdd_that_wrote_them() -> None:
    files = scaffold.render_files(scaffold.InitOptions(name="x"), install_spec="cdd-ci==9.9.9")
    for relative in (scaffold.DAILY, scaffold.PULL_REQUEST):
        assert 'pip install --disable-pip-version-check "cdd-ci==9.9.9"' in files[relative]


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")
def test_generated_vagrantfile_is_valid_ruby(tmp_path: Path) -> None:
    assert init(tmp_path, "--name", "web", "--machines", "a,b")[0] == 0
    result = subprocess.run(
        ["ruby", "-c", str(tmp_path / "vagrant/web/Vagrantfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

"""The environments a project defines, as a workflow matrix, and which of them a change touches.

A project's environments are its cdd files (found by glob, `cdd.toml` and `vagrant/*/cdd*.toml`
by default), so a workflow never names them: one more cdd file is one more matrix entry. Each
entry carries what its job needs: the config, its name (the concurrency group), the provider
and the runner labels for that provider, and where its reports are.

Two cdd files may name one environment on two providers (its libvirt variant, say): their
entries share the name, so they share a concurrency group and take turns (they would fight
over the same addresses on one host), and each has an `id` of its own, `name-provider`, for
its job and its artifact.

For a pull request only the environments whose inputs changed are built. An environment's
inputs are its own cdd file and its Vagrant directory (less the cdd files of other
environments that share the directory); a change to a shared path (`vagrant/lib`, cdd itself,
the workflow) touches them all.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cdd_ci.config import ConfigError, load_config
from cdd_ci.infra.git import git

DEFAULT_GLOBS = ("cdd.toml", "cdd-*.toml", "vagrant/*/cdd.toml", "vagrant/*/cdd-*.toml")
DEFAULT_SHARED = ("vagrant/lib",)
"""Ruby that every Vagrantfile of the project may load."""
DEFAULT_RUNNER_LABELS = ("self-hosted", "linux", "vagrant")
"""The runner's own labels; the provider's name is added, so an lxc environment waits for a
runner that has lxc and a libvirt one for a runner with libvirt."""
GIT_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProjectEnvironment:
    """One environment of the project, with its paths relative to the project root."""

    name: str
    config: str
    directory: str
    reports: str
    provider: str
    labels: tuple[str, ...]
    id: str = ""
    """Unique in the project: the name, or `name-provider` where two share the name."""

    def matrix_entry(self) -> dict[str, object]:
        return {
            "id": self.id or self.name,
            "name": self.name,
            "config": self.config,
            "directory": self.directory,
            "reports": self.reports,
            "provider": self.provider,
            "labels": list(self.labels),
        }


def runner_labels(provider: str, base: Sequence[str] = DEFAULT_RUNNER_LABELS) -> tuple[str, ...]:
    """The labels a runner needs to build an environment of this provider."""
    return tuple(base) if provider in base else (*base, provider)


def discover(
    root: Path,
    globs: Sequence[str] = DEFAULT_GLOBS,
    base_labels: Sequence[str] = DEFAULT_RUNNER_LABELS,
) -> list[ProjectEnvironment]:
    """Every environment whose cdd file matches a glob, in path order.

    A cdd file that does not load is an error naming it, never a silently smaller matrix;
    so are two environments of one name and one provider, which nothing tells apart.
    """
    top = root.resolve()
    found: dict[Path, None] = {}
    for pattern in globs:
        _check_relative("--glob", pattern)
        for path in sorted(top.glob(pattern)):
            if path.is_file():
                found.setdefault(path.resolve(), None)
    environments = []
    for path in sorted(found):
        config = load_config(path)
        environments.append(ProjectEnvironment(
            name=config.environment.name,
            config=_inside(top, path, path),
            directory=_inside(top, config.vagrant_dir, path),
            reports=_inside(top, config.report_dir, path),
            provider=config.environment.provider,
            labels=runner_labels(config.environment.provider, base_labels),
        ))
    shared = Counter(env.name for env in environments)
    environments = [dataclasses.replace(
        env, id=env.name if shared[env.name] == 1 else f"{env.name}-{env.provider}")
        for env in environments]
    seen: dict[str, str] = {}
    for env in environments:
        if env.id in seen:
            raise ConfigError(f"{env.config}: environment {env.name!r} on {env.provider} is "
                              f"also in {seen[env.id]}: give one of them a name of its own")
        seen[env.id] = env.config
    return environments


def affected(
    environments: Sequence[ProjectEnvironment],
    changed: Iterable[str],
    shared: Sequence[str] = DEFAULT_SHARED,
) -> list[ProjectEnvironment]:
    """The environments a change to these paths (relative to the root) may break."""
    paths = [_normal(p) for p in changed if p.strip()]
    for item in shared:
        _check_relative("--shared", item)
    if any(_under(p, _normal(s)) for p in paths for s in shared):
        return list(environments)
    configs = {env.config for env in environments}
    return [env for env in environments
            if any(p == env.config or (_under(p, env.directory) and p not in configs)
                   for p in paths)]


def changed_since(root: Path, ref: str, timeout: float = GIT_TIMEOUT) -> list[str]:
    """Paths changed on HEAD since it left `ref` (git's `ref...HEAD`), renames as both names."""
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
        raise ConfigError(f"--changed-since: {ref!r} is not a git revision")
    done = git(root, "diff", "--name-only", "--no-renames", "-z", f"{ref}...HEAD", "--",
               timeout=timeout, errors="surrogateescape")
    if not done.ran:
        raise ConfigError(f"--changed-since: {done.error}")
    if not done.ok:
        # a shallow checkout lacks the base: say what fixes it
        raise ConfigError(f"--changed-since {ref}: git diff failed: {done.error} (a workflow "
                          "needs `fetch-depth: 0` on checkout)")
    return [p for p in done.stdout.split("\0") if p]


def matrix(environments: Sequence[ProjectEnvironment]) -> str:
    """The JSON a workflow's `strategy.matrix` takes through `fromJSON`."""
    return json.dumps({"include": [env.matrix_entry() for env in environments]},
                      separators=(",", ":"))


def step_outputs(environments: Sequence[ProjectEnvironment]) -> str:
    """`matrix` and `count` as lines for $GITHUB_OUTPUT: an empty matrix is an error on
    GitHub, so the job that uses it is skipped on `count == 0`."""
    return f"matrix={matrix(environments)}\ncount={len(environments)}\n"


def _inside(top: Path, path: Path, config: Path) -> str:
    try:
        relative = path.resolve().relative_to(top)
    except ValueError:
        raise ConfigError(f"{config}: {path} is outside the project {top}") from None
    return relative.as_posix() or "."


def _normal(path: str) -> str:
    text = PurePosixPath(path.strip().replace("\\", "/")).as_posix()
    return text[2:] if text.startswith("./") else text


def _under(path: str, directory: str) -> bool:
    directory = directory.rstrip("/")
    return directory in ("", ".") or path == directory or path.startswith(directory + "/")


def _check_relative(option: str, pattern: str) -> None:
    parts = PurePosixPath(pattern).parts
    if not pattern or pattern.startswith("/") or ".." in parts:
        raise ConfigError(f"{option}: {pattern!r} must be a path inside the project")

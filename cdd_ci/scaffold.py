"""`cdd init`: a starting cdd.toml and the daily and pull-request workflows for a project.

The files are rendered from templates under `cdd_ci/templates/init/`. Nothing is written
unless every file can be: an existing file is only replaced with `force`, so a second
`cdd init` never half-overwrites a project. A starting Vagrantfile is added only where the
environment's directory has none, and never replaced, even with `force`: it is where the
user's real work lives, and `cdd validate` wants one to be there. The same holds for the
actionlint and Dependabot configs, which a project may already have for its other workflows.

The workflows build a matrix of the project's environments (`cdd environments`), each on a
runner with the given labels plus its provider's name; the actionlint config names those
labels, so the workflows pass actionlint as written.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from cdd_ci.config import NAME_RE, ConfigError, Timeouts
from cdd_ci.environments import DEFAULT_RUNNER_LABELS as DEFAULT_BASE_LABELS
from cdd_ci.infra.providers import PROVIDERS
from cdd_ci.templating import render

DEFAULT_RUNNER_LABELS = DEFAULT_BASE_LABELS

# What `cdd init` closes with. A `pull_request` workflow runs the pull request's own copy of
# the workflow file, so the fork guard in it stops only forks that leave it alone: what keeps
# a stranger's Vagrantfile off a self-hosted runner has to be set on GitHub, not in the file.
FORK_SAFETY = (
    "forks: the pull-request workflow's fork guard is in the file a fork can edit, so it"
    " protects nothing on its own; keep a stranger's code off your runners on GitHub itself:",
    "  - a private repository (fork pull requests run no workflow unless Settings > Actions"
    " allows it), or",
    '  - in a public one, Settings > Actions > General: "Require approval for all outside'
    ' collaborators", and read the change to .github/ before approving, and',
    "  - the runners in a runner group limited to this repository, with public repositories"
    " not allowed",
)
GITHUB_LABELS = frozenset({"self-hosted", "linux", "macos", "windows", "x64", "arm", "arm64"})
"""Labels actionlint knows without being told: GitHub gives them to every self-hosted runner."""
CHECKOUT = "actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09 # v5.1.0"
UPLOAD_ARTIFACT = "actions/upload-artifact@b7c566a772e6b6bfb58ed0dc250532a479d7789f # v6.0.0"
"""Actions pinned by commit, as this project's own workflows pin them (a tag can be moved)."""
DEFAULT_SCHEDULE = "0 5 * * 1-5"
"""05:00 UTC on weekdays: done before people start, and nobody reads a report on Sunday."""
DEFAULT_PROVIDER = "lxc"
DEFAULT_MACHINES = ("default",)
"""Vagrant's own name for the machine of a single-machine Vagrantfile."""

CONFIG = Path("cdd.toml")
DAILY = Path(".github/workflows/daily-environment.yml")
PULL_REQUEST = Path(".github/workflows/pr-environment.yml")
ACTIONLINT = Path(".github/actionlint.yaml")
DEPENDABOT = Path(".github/dependabot.yml")
TEMPLATES = {
    CONFIG: "init/cdd.toml.j2",
    DAILY: "init/daily-environment.yml.j2",
    PULL_REQUEST: "init/pr-environment.yml.j2",
    ACTIONLINT: "init/actionlint.yaml.j2",
    DEPENDABOT: "init/dependabot.yml.j2",
}
KEPT = (ACTIONLINT, DEPENDABOT)
"""Written only where missing, like the Vagrantfile: the project's own, if it has them."""
VAGRANTFILE_TEMPLATE = "init/Vagrantfile.j2"

DESTROY_STEP_MINUTES = 4
"""A cancelled job ends about 5 minutes after the cancel: the destroy step fits in that."""
MARGIN_MINUTES = 10
"""Headroom in the run step for cdd's own work between phases, and in the job for setup."""
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIRECTORY = re.compile(r"^[A-Za-z0-9._/-]+$")
_RESERVED = {"all", "host"}
"""Words with a meaning of their own in a check's `on`."""
# field -> (lowest, highest, names allowed instead of numbers)
_CRON_FIELDS = (
    ("minute", 0, 59, ""),
    ("hour", 0, 23, ""),
    ("day of month", 1, 31, ""),
    ("month", 1, 12, "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC"),
    ("day of week", 0, 6, "SUN MON TUE WED THU FRI SAT"),
)


@dataclass(frozen=True)
class InitOptions:
    """What `cdd init` was asked for; `validate` says what is wrong with it."""

    name: str
    directory: str = ""
    """The Vagrantfile's directory, relative to the project; default `vagrant/<name>`."""
    provider: str = DEFAULT_PROVIDER
    machines: tuple[str, ...] = DEFAULT_MACHINES
    runner_labels: tuple[str, ...] = DEFAULT_RUNNER_LABELS
    schedule: str = DEFAULT_SCHEDULE

    @property
    def vagrant_directory(self) -> str:
        return self.directory or f"vagrant/{self.name}"


def split_list(text: str) -> tuple[str, ...]:
    """`a, b,c` -> ("a", "b", "c"): how the command line takes lists."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def default_name(project: Path) -> str:
    """An environment name from the project directory's name, made valid."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", project.resolve().name).strip("-_")
    return name or "environment"


def validate(options: InitOptions) -> None:
    """Raise ConfigError (one line, exit code 2) for the first bad option."""
    if not re.match(NAME_RE, options.name):
        raise ConfigError(f"--name: {options.name!r} is not a valid name (letters, digits, - _)")
    if options.provider not in PROVIDERS:
        raise ConfigError(f"--provider: {options.provider!r} is not a provider cdd knows "
                          f"({', '.join(sorted(PROVIDERS))})")
    if not options.machines:
        raise ConfigError("--machines: name at least one machine")
    for machine in options.machines:
        if not re.match(NAME_RE, machine) or machine in _RESERVED:
            raise ConfigError(f"--machines: {machine!r} is not a valid machine name")
    if len(set(options.machines)) != len(options.machines):
        raise ConfigError("--machines: a machine is named twice")
    if not options.runner_labels:
        raise ConfigError("--runner-labels: give at least one label")
    for label in options.runner_labels:
        if not _LABEL.match(label):
            raise ConfigError(f"--runner-labels: {label!r} is not a valid runner label")
    _validate_directory(options.vagrant_directory)
    _validate_cron(options.schedule)


def vagrantfile(options: InitOptions) -> Path:
    """Where the starting Vagrantfile goes, relative to the project."""
    return Path(options.vagrant_directory) / "Vagrantfile"


def render_files(options: InitOptions, install_spec: str | None = None) -> dict[Path, str]:
    """The files `cdd init` writes, relative to the project, with their content.

    The Vagrantfile comes last; `scaffold` writes it only where there is none.
    """
    validate(options)
    timeouts = Timeouts.model_validate({})
    # a run destroys leftovers first, then goes through every phase, destroy included
    phases = timeouts.destroy + timeouts.up + timeouts.provision + timeouts.check
    phases += timeouts.harvest + timeouts.destroy
    run_minutes = _round_up(math.ceil(phases / 60) + MARGIN_MINUTES, 5)
    context = {
        "name": options.name,
        "directory": options.vagrant_directory,
        "provider": options.provider,
        "machines": list(options.machines),
        "runner_labels": list(options.runner_labels),
        "schedule": " ".join(options.schedule.split()),
        "run_minutes": run_minutes,
        "destroy_minutes": DESTROY_STEP_MINUTES,
        "job_minutes": run_minutes + DESTROY_STEP_MINUTES + MARGIN_MINUTES,
        "install_spec": install_spec or _install_spec(),
        "report_dir": "reports/",
        "custom_labels": custom_labels(options.runner_labels),
        "checkout": CHECKOUT,
        "upload_artifact": UPLOAD_ARTIFACT,
    }
    files = {path: render(template, **context) for path, template in TEMPLATES.items()}
    files[vagrantfile(options)] = render(VAGRANTFILE_TEMPLATE, **context)
    return files


def scaffold(
    project: Path, options: InitOptions, *, force: bool = False, install_spec: str | None = None
) -> list[Path]:
    """Write cdd.toml, the two workflows and, if missing, a Vagrantfile and the actionlint
    and Dependabot configs into `project`.

    Returns the paths written. Without `force`, an existing file is an error naming it, and
    nothing is written.
    """
    files = render_files(options, install_spec)
    for kept in (vagrantfile(options), *KEPT):
        if (project / kept).exists():
            del files[kept]
    if not force:
        for relative in files:
            if (project / relative).exists():
                raise ConfigError(
                    f"{project / relative}: already exists; not overwritten (use --force)"
                )
    written = []
    for relative, text in files.items():
        path = project / relative
        _write_atomically(path, text)
        written.append(path)
    return written


def custom_labels(runner_labels: tuple[str, ...]) -> list[str]:
    """The labels actionlint must be told of: the runners' own and every provider's name."""
    own = [label for label in runner_labels if label not in GITHUB_LABELS]
    return own + [name for name in sorted(PROVIDERS) if name not in own]


def _write_atomically(path: Path, text: str) -> None:
    """A file is either the old one or the whole new one, never a torn write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _install_spec() -> str:
    """Pin the generated workflows to the cdd that wrote them, so an upgrade is a choice."""
    try:
        return f"cdd-ci=={metadata.version('cdd-ci')}"
    except metadata.PackageNotFoundError:
        return "cdd-ci"


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _validate_directory(directory: str) -> None:
    path = PurePosixPath(directory)
    # the directory also becomes a path filter in the pull-request workflow, where glob
    # characters would change its meaning, and a path outside the project cannot be checked out
    if path.is_absolute() or ".." in path.parts or not _DIRECTORY.match(directory):
        raise ConfigError(
            f"--directory: {directory!r} must be a relative path inside the project"
            " (letters, digits, . _ - /)"
        )


def _validate_cron(schedule: str) -> None:
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ConfigError(
            f"--schedule: {schedule!r} needs 5 fields: minute hour day-of-month month day-of-week"
        )
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            if not _cron_part_ok(part, low, high, names.split()):
                raise ConfigError(f"--schedule: {what} field {text!r} is not valid cron")


def _cron_part_ok(part: str, low: int, high: int, names: list[str]) -> bool:
    """One comma-separated item: `*`, `n`, `n-m`, each optionally `/step`."""
    base, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return False
    if base == "*":
        return True
    bounds = base.split("-")
    if len(bounds) > 2:
        return False
    values = []
    for bound in bounds:
        if bound.upper() in names:
            values.append(low + names.index(bound.upper()))
        elif bound.isdigit() and low <= int(bound) <= high:
            values.append(int(bound))
        else:
            return False
    return values == sorted(values)

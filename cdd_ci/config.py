"""`cdd.toml`: the environment, its smoke checks, what to harvest and the destroy policy.

Everything downstream receives these models, never a dict. Unknown keys are rejected so a
typo cannot silently disable a check.
"""

from __future__ import annotations

import enum
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdd_ci import network

DEFAULT_CONFIG = "cdd.toml"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
HOST = "host"
"""In `on`, the runner itself rather than a guest."""


class ConfigError(Exception):
    """Bad configuration or usage: reported as one line, exit code 2."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DestroyPolicy(enum.StrEnum):
    ALWAYS = "always"
    PASSING = "passing"
    NEVER = "never"


class Timeouts(Strict):
    """Per-phase limits in seconds; a phase over its limit is an infrastructure error."""

    up: float = Field(900, gt=0)
    provision: float = Field(1800, gt=0)
    check: float = Field(600, gt=0)
    harvest: float = Field(120, gt=0)
    destroy: float = Field(300, gt=0)


class MachineResources(Strict):
    """What one machine takes from the host, as its Vagrantfile sets it."""

    cpus: int = Field(1, gt=0)
    memory_mb: int = Field(1024, gt=0)


class Environment(Strict):
    name: str = Field(pattern=NAME_RE)
    directory: Path
    provider: str = "lxc"
    machines: list[Annotated[str, Field(pattern=NAME_RE)]] = Field(min_length=1)
    parallel: bool = True
    needs_network: bool = False
    """The environment downloads from the internet (git clones, images): refuse to start
    on a runner that has none, rather than half-build."""
    network_probe: str = network.DEFAULT_PROBE
    """With needs_network, what the runner must reach first: an http(s) URL (its host and
    port) or host:port. One TCP connection, no request."""
    network_probe_timeout: float = Field(network.DEFAULT_TIMEOUT, gt=0, le=60)
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every Vagrant call (read by the Vagrantfile)."""
    resources: dict[str, MachineResources] = Field(default_factory=dict)
    """Per machine, e.g. `broker = { cpus = 2, memory_mb = 2048 }`; machines not named here
    count as 1 CPU and 1024 MB. Recorded in the run history."""

    @field_validator("network_probe")
    @classmethod
    def _probe_target(cls, value: str) -> str:
        network.parse_target(value)
        return value

    def resources_of(self, machine: str) -> MachineResources:
        return self.resources.get(machine, MachineResources())


class Retry(Strict):
    timeout: float = Field(10, gt=0)
    """One attempt."""
    interval: float = Field(2, ge=0)
    """Pause between attempts."""
    deadline: float = Field(120, ge=0)
    """Keep retrying until this many seconds after the first attempt (0: one attempt)."""


class CheckBase(Retry):
    name: str = Field(min_length=1)
    on: list[str] = Field(default_factory=lambda: ["all"])
    """Where the check runs: machine names, "all" machines, or "host" (the runner)."""

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class CommandCheck(CheckBase):
    type: Literal["command"]
    command: str = Field(min_length=1)
    exit_code: int = 0
    sudo: bool = False
    stdout: str | None = None
    """A regular expression the command's stdout must match (re.search)."""

    @field_validator("stdout")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _valid_regex(value)


class PortCheck(CheckBase):
    type: Literal["port"]
    host: str = Field(min_length=1)
    """Target, as the machine running the check resolves it (a machine name or address)."""
    port: int = Field(gt=0, lt=65536)


class HttpCheck(CheckBase):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    status: int = Field(200, ge=100, le=599)
    body: str | None = None

    @field_validator("body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _valid_regex(value)


class ServiceCheck(CheckBase):
    type: Literal["service"]
    service: str = Field(pattern=r"^[A-Za-z0-9@._:-]+$")


Check = Annotated[
    CommandCheck | PortCheck | HttpCheck | ServiceCheck, Field(discriminator="type")
]


class Harvest(Strict):
    """What to copy off the machines before they are destroyed."""

    on: list[str] = Field(default_factory=lambda: ["all"])
    files: list[str] = Field(default_factory=list)
    """Guest paths or globs, e.g. /var/log/rabbitmq/*.log."""
    commands: dict[str, str] = Field(default_factory=dict)
    """Log name -> command whose output is kept, e.g. journal = "journalctl -b"."""

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Report(Strict):
    directory: Path = Path("reports")
    max_log_bytes: int = Field(1_000_000, gt=0)
    """Cap per harvested log; the tail is kept, since that is where failures are."""
    history: Path = Path("reports/history.sqlite")
    """The run history (SQLite), relative to cdd.toml; CI carries it between runs."""


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Savings(Strict):
    """`cdd savings`: what the machine-hours cost, and the baselines they are set against."""

    price_per_machine_hour: float = Field(0.0, ge=0)
    """0 leaves money out of the report; `cdd savings --price` overrides it."""
    currency: str = Field("$", max_length=8)
    working_hours_per_day: float = Field(10, gt=0, le=24)
    working_days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)


class Config(Strict):
    destroy: DestroyPolicy = DestroyPolicy.ALWAYS
    environment: Environment
    timeouts: Timeouts = Timeouts()
    checks: list[Check] = Field(default_factory=list)
    harvest: list[Harvest] = Field(default_factory=list)
    report: Report = Report()
    savings: Savings = Savings()

    root: Path = Field(default=Path("."), exclude=True)
    """Directory of the config file; relative paths are resolved against it."""

    @property
    def vagrant_dir(self) -> Path:
        return (self.root / self.environment.directory).resolve()

    @property
    def report_dir(self) -> Path:
        return (self.root / self.report.directory).resolve()

    @property
    def history_path(self) -> Path:
        return (self.root / self.report.history).resolve()

    @property
    def state_dir(self) -> Path:
        return (self.root / ".cdd").resolve()

    def targets(self, on: list[str]) -> list[str]:
        """Expand an `on` list to machine names (and "host")."""
        out: list[str] = []
        for item in on:
            names = self.environment.machines if item == "all" else [item]
            out.extend(n for n in names if n not in out)
        return out


def _valid_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def load_config(path: Path) -> Config:
    """Read and validate a config file; any problem raises ConfigError with one line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with `cdd init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, object], path: Path) -> Config:
    if "root" in raw:
        raise ConfigError(f"{path}: root: unknown key")
    try:
        config = Config.model_validate({**raw, "root": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc, raw)) from None
    _check_references(config, path)
    return config


def _check_references(config: Config, path: Path) -> None:
    """Names in `on` must be machines of the environment (cross-field, so done here)."""
    machines = set(config.environment.machines)
    for section, items in (("checks", config.checks), ("harvest", config.harvest)):
        for i, item in enumerate(items):
            allowed = machines | {"all"} | ({HOST} if section == "checks" else set())
            for name in item.on:
                if name not in allowed:
                    raise ConfigError(
                        f"{path}: {section}[{i}].on: unknown machine {name!r} "
                        f"(machines: {', '.join(sorted(machines))})"
                    )
            if section == "checks" and HOST in item.on and getattr(item, "type", "") in (
                "command",
                "service",
            ):
                raise ConfigError(
                    f"{path}: {section}[{i}].on: a {getattr(item, 'type', '')} check runs on"
                    " a machine, not on the host"
                )
    for name in config.environment.resources:
        if name not in machines:
            raise ConfigError(f"{path}: environment.resources.{name}: unknown machine "
                              f"(machines: {', '.join(sorted(machines))})")
    names = [c.name for c in config.checks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: checks: duplicate check name {dupes[0]!r}")


def _one_line(path: Path, exc: ValidationError, raw: dict[str, object]) -> str:
    err = exc.errors()[0]
    loc = _key_path(err["loc"], raw)
    value = err.get("input")
    shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "union_tag_invalid":
        msg = "type must be one of command, port, http, service"
    elif err["type"] == "union_tag_not_found":
        msg = "missing key 'type' (command, port, http or service)"
    return f"{path}: {loc}: {msg}{shown}"


def _key_path(loc: tuple[int | str, ...], raw: dict[str, object]) -> str:
    """Render pydantic's location as a TOML key path, dropping union-tag segments."""
    parts: list[str] = []
    node: object = raw
    prev_was_index = False
    for item in loc:
        if isinstance(item, int):
            prev_was_index = True
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and node.get("type") == item and prev_was_index:
            prev_was_index = False
            continue  # the union tag pydantic inserts after a list index, not a key in the file
        prev_was_index = False
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"

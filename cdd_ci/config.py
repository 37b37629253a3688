"""`cdd.toml`: the environment, its smoke checks, what to harvest and the destroy policy.

Everything downstream receives these models, never a dict. Unknown keys are rejected so a
typo cannot silently disable a check. `validate_config` is the one gate every command goes
through before it creates anything or starts any program: what passes it must not fail
later for a reason the file already showed (a missing Vagrantfile, a URL no library can
parse, a timeout no OS can wait for). Every error is one line under `MAX_LINE` characters,
so a 10 MB value is shortened, and every check is linear in the size of the file.
"""

from __future__ import annotations

import codecs
import enum
import os
import re
import tomllib
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdd_ci.infra import network
from cdd_ci.infra.providers import PROVIDERS

DEFAULT_CONFIG = "cdd.toml"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
NAME_MAX = 63
"""Machine and environment names become host names and container names: a DNS label."""
MAX_SECONDS = 7 * 24 * 3600.0
"""No CI job runs a week; and far past this (threading.TIMEOUT_MAX, select's limits) an OS
wait overflows and Python quietly waits forever instead."""
MAX_BYTES = 32 * 1024 * 1024
"""A config file larger than this is not a config file (`--config /dev/zero`)."""
MAX_LINE = 299
_VALUE_SHOWN = 60
_KEY_SHOWN = 100
HOST = "host"
"""In `on`, the runner itself rather than a guest."""


class ConfigError(Exception):
    """Bad configuration or usage: reported as one line, exit code 2."""


class Strict(BaseModel):
    # inf and nan pass `gt=0`-style bounds checks in odd ways and no OS call accepts them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seconds = Annotated[float, Field(le=MAX_SECONDS)]
Name = Annotated[str, Field(pattern=NAME_RE, max_length=NAME_MAX)]


class DestroyPolicy(enum.StrEnum):
    ALWAYS = "always"
    PASSING = "passing"
    NEVER = "never"


class Timeouts(Strict):
    """Per-phase limits in seconds; a phase over its limit is an infrastructure error."""

    up: Seconds = Field(900, gt=0)
    provision: Seconds = Field(1800, gt=0)
    check: Seconds = Field(600, gt=0)
    harvest: Seconds = Field(120, gt=0)
    # a cancelled job is ended about 5 minutes after the cancel: see recorded.OWNER_GRACE
    destroy: Seconds = Field(120, gt=0)
    inventory: Seconds = Field(60, gt=0)
    """Listing each machine's packages; past it they are not recorded, never an error."""


class MachineResources(Strict):
    """What one machine takes from the host, as its Vagrantfile sets it."""

    cpus: int = Field(1, gt=0, le=4096)
    memory_mb: int = Field(1024, gt=0, le=1 << 30)


class Environment(Strict):
    name: Name
    directory: Path
    # a provider name goes into Vagrant's argv and into the ledger as it is, and cdd finds
    # and removes leftovers only with the tools of a provider it knows
    provider: str = "lxc"
    machines: list[Name] = Field(min_length=1)
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

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider (known: {', '.join(sorted(PROVIDERS))})")
        return value

    @field_validator("machines")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = [n for n, count in Counter(value).items() if count > 1]
        if dupes:
            raise ValueError(f"duplicate machine name {_clip(dupes[0], _VALUE_SHOWN)!r}")
        return value

    @field_validator("env")
    @classmethod
    def _environ(cls, value: dict[str, str]) -> dict[str, str]:
        # a key with "=" cannot be set in a process environment; execve refuses NUL (checked
        # for every string in _no_nul)
        for key in value:
            if not key or "=" in key:
                raise ValueError(f"variable name {_clip(key, _VALUE_SHOWN)!r} is empty or "
                                 "contains '='")
        return value

    def resources_of(self, machine: str) -> MachineResources:
        return self.resources.get(machine, MachineResources())


class Retry(Strict):
    timeout: Seconds = Field(10, gt=0)
    """One attempt."""
    interval: Seconds = Field(2, ge=0)
    """Pause between attempts."""
    deadline: Seconds = Field(120, ge=0)
    """Keep retrying until this many seconds after the first attempt (0: one attempt)."""


class CheckBase(Retry):
    # a check's name is an issue title on GitHub, which takes at most 256 characters
    name: str = Field(min_length=1, max_length=200)
    # an empty list would run the check nowhere and report nothing: a silent hole
    on: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    """Where the check runs: machine names, "all" machines, or "host" (the runner)."""

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class CommandCheck(CheckBase):
    type: Literal["command"]
    command: str = Field(min_length=1)
    exit_code: int = Field(0, ge=0, le=255)
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
    url: str
    status: int = Field(200, ge=100, le=599)
    body: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _valid_url(value)

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

    on: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
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
    max_log_bytes: int = Field(1_000_000, gt=0, le=1 << 40)
    """Cap per harvested log; the tail is kept, since that is where failures are."""
    history: str = ".cdd/history.sqlite"
    """The run history: a SQLite file, relative to cdd.toml (beside the ledgers in `.cdd/`,
    which the shipped workflows keep when they clean the workspace: it survives from run to
    run), or the `postgresql://` URL of the database the runners of a team share.
    `CDD_HISTORY_URL` in the environment overrides it (where the password stays a secret)."""


HISTORY_URL_VARIABLE = "CDD_HISTORY_URL"
"""A history URL from the environment (a runner's, or a secret's) wins over cdd.toml's."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Savings(Strict):
    """`cdd savings`: what the machine-hours cost, and the baselines they are set against."""

    price_per_machine_hour: float = Field(0.0, ge=0, le=1e9)
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
    def history_path(self) -> str:
        """Where the history is, for `open_history`: a URL as it is, a file resolved."""
        url = os.environ.get(HISTORY_URL_VARIABLE, "")
        if url:
            return url
        if self.report.history.startswith(("postgresql://", "postgres://")):
            return self.report.history
        return str((self.root / self.report.history).resolve())

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


def _valid_url(value: str) -> str:
    """What urllib will later open, checked now: a scheme, a host, a port that exists."""
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("a URL has no spaces or control characters (write %20)")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("no host in the URL")
    if port == 0:
        raise ValueError("port 0 in the URL")
    return value


def load_config(path: Path) -> Config:
    """Read and validate a config file's content; any problem raises ConfigError, one line.

    What depends on the host (the Vagrantfile, the provider) is validate_config's.
    """
    return parse_config(_read_toml(path), path)


def validate_config(path: Path) -> Config:
    """The one validation every command that drives Vagrant runs before it creates anything
    or starts anything: the content, then the Vagrantfile it names on this host."""
    config = load_config(path)
    if not (config.vagrant_dir / "Vagrantfile").is_file():
        raise ConfigError(_line(path, "environment.directory",
                                f"no Vagrantfile in {config.vagrant_dir}"))
    return config


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(_line(path, None, "no such file (create one with `cdd init`)")) \
            from None
    except OSError as exc:
        raise ConfigError(_line(path, None, f"cannot read: {exc.strerror or exc}")) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(_line(path, None, f"larger than {MAX_BYTES >> 20} MiB: not a config"))
    if data.startswith(codecs.BOM_UTF8):
        raise ConfigError(_line(path, None, "starts with a UTF-8 byte-order mark (BOM), which "
                                "TOML does not allow: save it as UTF-8 without BOM"))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(_line(path, None, "is UTF-16 (it starts with a byte-order mark): "
                                "save it as UTF-8"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(_line(path, None, f"not UTF-8: byte 0x{data[exc.start]:02x} on "
                                f"line {line}")) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_line(path, None, f"not valid TOML: {exc}")) from None


def parse_config(raw: dict[str, object], path: Path) -> Config:
    if "root" in raw:
        raise ConfigError(_line(path, "root", "unknown key"))
    _no_nul(raw, path, [])
    try:
        config = Config.model_validate({**raw, "root": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc, raw)) from None
    _check_references(config, path)
    _check_report_dir(config, path)
    return config


def _no_nul(node: object, path: Path, loc: list[str | int]) -> None:
    """No program can take a NUL in an argument, an environment variable or a path; the
    value itself is not shown, since it may be a secret (an env value, a password)."""
    stack: list[tuple[object, list[str | int]]] = [(node, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and "\0" in item:
            raise ConfigError(_line(path, _render_loc(where), "contains a NUL character"))
        if isinstance(item, dict):
            for key, value in item.items():
                if "\0" in key:
                    raise ConfigError(_line(path, _render_loc([*where, key]),
                                            "key contains a NUL character"))
                stack.append((value, [*where, key]))
        elif isinstance(item, list):
            stack.extend((value, [*where, i]) for i, value in enumerate(item))


def _check_report_dir(config: Config, path: Path) -> None:
    """Each run empties `logs/` under the report directory: never the root's, the project's
    or any directory above it."""
    report = config.report_dir
    if report == Path(report.anchor) or report in (config.root, *config.root.parents):
        raise ConfigError(_line(path, "report.directory",
                                f"{report} would have its logs/ emptied at each run: use a "
                                "directory of its own, e.g. reports", None))


def _check_references(config: Config, path: Path) -> None:
    """Names in `on` must be machines of the environment (cross-field, so done here)."""
    machines = set(config.environment.machines)
    known = _clip(", ".join(sorted(machines)), _VALUE_SHOWN)
    for section, items in (("checks", config.checks), ("harvest", config.harvest)):
        allowed = machines | {"all"} | ({HOST} if section == "checks" else set())
        for i, item in enumerate(items):
            for name in item.on:
                if name not in allowed:
                    raise ConfigError(_line(path, f"{section}[{i}].on",
                                            f"unknown machine {_shown(name)} (machines: "
                                            f"{known})"))
            if section == "checks" and HOST in item.on and getattr(item, "type", "") in (
                "command",
                "service",
            ):
                raise ConfigError(_line(
                    path, f"{section}[{i}].on",
                    f"a {getattr(item, 'type', '')} check runs on a machine, not on the host"))
    for name in config.environment.resources:
        if name not in machines:
            raise ConfigError(_line(path, f"environment.resources.{_render_key(name)}",
                                    f"unknown machine (machines: {known})"))
    # Counter, not list.count per name: 50,000 checks took 21 minutes that way
    counts = Counter(c.name for c in config.checks)
    dupes = [name for name, count in counts.items() if count > 1]
    if dupes:
        raise ConfigError(_line(path, "checks", f"duplicate check name {_shown(dupes[0])}"))


def _one_line(path: Path, exc: ValidationError, raw: dict[str, object]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = _key_path(err["loc"], raw)
    value = err.get("input")
    secret = "env" in err["loc"][:2]  # environment.env values are often tokens
    shown = None if (err["type"] == "missing" or isinstance(value, dict | list) or secret) \
        else value
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg, shown = "unknown key", None if isinstance(value, dict | list) else value
    elif err["type"] == "union_tag_invalid":
        msg = "type must be one of command, port, http, service"
    elif err["type"] == "union_tag_not_found":
        msg = "missing key 'type' (command, port, http or service)"
    elif err["type"] == "finite_number":
        msg = "Input should be a finite number"
    elif err["type"] == "too_short" and err["loc"][-1] == "on":
        msg = "empty, so it would run nowhere: name machines, \"all\" or \"host\""
    return _line(path, loc, msg, shown, show=shown is not None)


def _line(path: Path, key: str | None, what: str, value: object = None, *,
          show: bool | None = None) -> str:
    """`file: key.path: what is wrong (got value)`: one printable line, at most MAX_LINE
    characters whatever the size of the key or the value."""
    head = _printable(str(path))
    if key is not None:
        head += ": " + _clip(_printable(key), _KEY_SHOWN)
    got = f" (got {_shown(value)})" if (value is not None if show is None else show) else ""
    return _clip(f"{head}: {_printable(_clip(what, MAX_LINE))}{got}", MAX_LINE)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str):
        return repr(_clip(text, _VALUE_SHOWN))
    return _clip(text, _VALUE_SHOWN)


def _clip(text: str, limit: int) -> str:
    """The start and the end of a long text, which is where a typo usually shows."""
    if len(text) <= limit:
        return text
    keep = limit - 3
    return f"{text[: keep - keep // 3]}...{text[len(text) - keep // 3:]}"


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _render_key(key: str) -> str:
    """A key as TOML would need it written: bare when it can be, else quoted."""
    key = _clip(key, _KEY_SHOWN)
    return key if _BARE_KEY.match(key) else repr(key)


def _render_loc(loc: list[str | int]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(_render_key(item))
    return ".".join(parts) or "(top level)"


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
        parts.append(_render_key(str(item)))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"

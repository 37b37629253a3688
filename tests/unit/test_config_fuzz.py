"""The project's own configs, mutated: bad input never reaches Vagrant.

Each example takes one of the configs this repository ships, breaks it one way (truncated,
a wrong type, an unknown key, a huge or non-finite number, odd bytes or another encoding, a
duplicate, an empty list, a malformed URL...) and runs the real `cdd` as a subprocess with
`vagrant` and every provider tool replaced by programs that record any call. A mutation
known to be invalid must give exit 2, one `cdd: error:` line under 300 characters naming
the file, from `cdd validate` and `cdd run` alike, with nothing created and nothing called.
A mutation that may stay valid (a truncation, a type that pydantic coerces) is only
validated: exit 0, or exit 2 with one line, never a traceback.

Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([REPO / "cdd.toml", *REPO.glob("vagrant/*/cdd.toml"),
                  REPO / "tests/integration/envs/pair/cdd.toml"])
TOOLS = ("vagrant", "lxc-ls", "lxc-start", "lxc-create", "lxc-destroy", "lxc-stop",
         "lxc-info", "lxc-attach", "docker", "virsh", "VBoxManage", "ssh", "scp", "rsync")
EXAMPLES = 40

Raw = dict[str, Any]


# -- writing TOML back (tomllib only reads) -------------------------------------------------

def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def dump(raw: Raw) -> bytes:
    """Every top-level key as one line (tables inline): what tomllib reads back as `raw`."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in raw.items()).encode()


# -- mutations --------------------------------------------------------------------------------

@dataclass
class Mutant:
    what: str
    content: bytes
    invalid: bool
    """True: must be rejected. False: may stay valid (then only `cdd validate` is run)."""


Mutation = Callable[[st.DataObject, Raw, bytes], Mutant]
BAD_NUMBERS = [math.inf, -math.inf, math.nan, 1e12, 1e308, -1, 10**30, -(10**30)]
BAD_URLS = ["http://[broker:15672/", "http://broker:99999/", "http://bro ker/", "http://",
            "https://", "ftp://broker/", "broker:80", "http://broker:0/", "http://\tx/",
            "http://x:-1/", "http://x:port/"]
BAD_PROBES = ["http://[x", "host:99999", "", " ", "host", "https://", "gopher://x:70"]


def tables(raw: Raw) -> list[tuple[str, dict[str, Any]]]:
    """Every table of the config, by its key path (top level included)."""
    out: list[tuple[str, dict[str, Any]]] = [("", raw)]
    for key, value in raw.items():
        if isinstance(value, dict):
            out.append((key, value))
            out.extend((f"{key}.{k}", v) for k, v in value.items() if isinstance(v, dict)
                       and k != "env")
        elif isinstance(value, list):
            out.extend((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict))
    return out


def scalars(raw: Raw) -> list[tuple[dict[str, Any], str]]:
    return [(table, key) for _, table in tables(raw) for key, value in table.items()
            if not isinstance(value, dict | list)]


def _checks(raw: Raw) -> list[dict[str, Any]]:
    checks = raw.setdefault("checks", [])
    if not checks:
        checks.append({"name": "added", "type": "command", "command": "true"})
    return checks  # type: ignore[no-any-return]


def truncate(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    n = data.draw(st.integers(0, len(text) - 1), label="keep bytes")
    return Mutant(f"truncated to {n} bytes", text[:n], invalid=False)


def unknown_key(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    where, table = data.draw(st.sampled_from(tables(raw)), label="table")
    key = "zz" + data.draw(st.text("abcdefghij_-", max_size=8), label="key")
    table[key] = data.draw(st.sampled_from([1, "x", True, [], {}]), label="value")
    return Mutant(f"unknown key {where}.{key}", dump(raw), invalid=True)


def bad_number(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    fields: list[tuple[dict[str, Any], str]] = [
        (raw.setdefault("timeouts", {}), k)
        for k in ("up", "provision", "check", "harvest", "destroy")]
    env = raw["environment"]
    fields += [(env, "network_probe_timeout")]
    for check in _checks(raw):
        fields += [(check, k) for k in ("timeout", "interval", "deadline")]
        fields += [(check, k) for k in ("port", "status", "exit_code") if k in check]
    table, key = data.draw(st.sampled_from(fields), label="field")
    value = data.draw(st.sampled_from(BAD_NUMBERS), label="number")
    table[key] = value
    return Mutant(f"{key} = {value}", dump(raw), invalid=True)


def wrong_type(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    table, key = data.draw(st.sampled_from(scalars(raw)), label="field")
    value = data.draw(st.sampled_from([[], {}, True, 0, 1.5, "x", [1], {"a": 1}]),
                      label="value")
    table[key] = value
    return Mutant(f"{key} = {value!r}", dump(raw), invalid=False)


def delete_key(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    table, key = data.draw(st.sampled_from(scalars(raw)), label="field")
    del table[key]
    return Mutant(f"without {key}", dump(raw), invalid=False)


def duplicate(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    how = data.draw(st.sampled_from(["machine", "check name", "toml key"]), label="duplicate")
    if how == "machine":
        machines = raw["environment"]["machines"]
        machines.append(data.draw(st.sampled_from(machines), label="machine"))
        return Mutant("duplicate machine", dump(raw), invalid=True)
    if how == "check name":
        checks = _checks(raw)
        checks.append({**checks[0], "on": checks[0].get("on", "all")})
        return Mutant("duplicate check name", dump(raw), invalid=True)
    line = f"environment = {toml_value(raw['environment'])}\n".encode()
    return Mutant("duplicate TOML key", dump(raw) + line, invalid=True)


def empty_list(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    targets: list[tuple[dict[str, Any], str]] = [(raw["environment"], "machines")]
    targets += [(c, "on") for c in _checks(raw)]
    targets += [(h, "on") for h in raw.get("harvest", [])]
    savings = raw.setdefault("savings", {})
    targets += [(savings, "working_days")]
    table, key = data.draw(st.sampled_from(targets), label="list")
    table[key] = []
    return Mutant(f"{key} = []", dump(raw), invalid=True)


def bad_url(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    if data.draw(st.booleans(), label="probe"):
        probe = data.draw(st.sampled_from(BAD_PROBES), label="probe url")
        raw["environment"]["network_probe"] = probe
        return Mutant(f"network_probe = {probe!r}", dump(raw), invalid=True)
    url = data.draw(st.sampled_from(BAD_URLS), label="url")
    raw.setdefault("checks", []).append(
        {"name": "fuzzed url", "type": "http", "on": "host", "url": url})
    return Mutant(f"url = {url!r}", dump(raw), invalid=True)


def bad_env(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    env = raw["environment"].setdefault("env", {})
    key, value = data.draw(st.sampled_from([("A=B", "1"), ("", "1"), ("=", ""),
                                            ("A", "x\0y"), ("A\0B", "1")]), label="env")
    env[key] = value
    return Mutant(f"env {key!r} = {value!r}", dump(raw), invalid=True)


def bad_value(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    env = raw["environment"]
    how = data.draw(st.sampled_from(["provider", "directory", "report", "type", "huge name",
                                     "nul in command", "machine name"]), label="value")
    if how == "provider":
        env["provider"] = data.draw(st.sampled_from(["", "lxc --rm", "LXC", "lx c", "fake",
                                                     "vmware_desktop"]))
    elif how == "directory":
        env["directory"] = env["directory"] + "-typo"
    elif how == "report":
        raw["report"] = {"directory": data.draw(st.sampled_from(["/", ".", ".."]))}
    elif how == "type":
        _checks(raw)[0]["type"] = data.draw(st.sampled_from(["porty", "", "HTTP"]))
    elif how == "huge name":
        env["name"] = "n" * 1_000_000 + "!"
    elif how == "nul in command":
        _checks(raw).append({"name": "nul", "type": "command", "command": "true\0false"})
    else:
        env["machines"].append(data.draw(st.sampled_from(["-x", "a b", "é", "m" * 64])))
    return Mutant(how, dump(raw), invalid=True)


def odd_bytes(data: st.DataObject, raw: Raw, text: bytes) -> Mutant:
    how = data.draw(st.sampled_from(["bom", "utf-16", "utf-32", "ff", "nul", "cr"]),
                    label="bytes")
    at = data.draw(st.integers(0, len(text)), label="at")
    if how == "bom":
        return Mutant("UTF-8 BOM", codecs.BOM_UTF8 + text, invalid=True)
    if how == "utf-16":
        return Mutant("UTF-16", text.decode().encode("utf-16"), invalid=True)
    if how == "utf-32":
        return Mutant("UTF-32", text.decode().encode("utf-32"), invalid=True)
    if how == "cr":  # a lone CR is no line ending in TOML
        return Mutant("lone CR", text[:at] + b"\r" + text[at:], invalid=False)
    byte = b"\xff" if how == "ff" else b"\0"
    return Mutant(f"{byte!r} at {at}", text[:at] + byte + text[at:], invalid=True)


MUTATIONS: list[Mutation] = [truncate, unknown_key, bad_number, wrong_type, delete_key,
                             duplicate, empty_list, bad_url, bad_env, bad_value, odd_bytes]


# -- running cdd --------------------------------------------------------------------------

class Sandbox:
    """A project directory with a stub Vagrantfile where the config expects it, and a PATH
    whose vagrant and provider tools only record that they were called."""

    def __init__(self, root: Path, source: Path, raw: Raw) -> None:
        self.root = root
        self.project = root / "project"
        directory = self.project / raw["environment"]["directory"]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Vagrantfile").write_text("# a stub: vagrant is fake here\n")
        self.calls = root / "calls.log"
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            stub = self.bin / tool
            stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {self.calls}\nexit 1\n')
            stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
        (root / "home").mkdir()
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(root / "home"),
                    "LANG": "C.UTF-8", "PYTHONPATH": str(REPO)}
        self.config = self.project / "cdd.toml"

    def files(self) -> set[Path]:
        return set(self.project.rglob("*"))

    def cdd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cdd_all([*args])[0]

    def cdd_all(self, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
        """Side by side: each start of Python costs a third of a second."""
        procs = [(argv, subprocess.Popen(
            [sys.executable, "-m", "cdd_ci", *argv, "--config", "cdd.toml"], cwd=self.project,
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace")) for argv in commands]
        done = []
        for argv, proc in procs:
            out, err = proc.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        return done


def rejected(proc: subprocess.CompletedProcess[str], what: str) -> str:
    report = f"{what}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 2, report
    assert "Traceback" not in proc.stderr, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, report
    assert lines[0].startswith("cdd: error: cdd.toml"), report
    assert len(lines[0]) < 300, report
    return lines[0]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_mutated_config_is_refused_before_anything_runs(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(SOURCES), label="config")
    text = source.read_bytes()
    raw = tomllib.loads(text.decode())
    pristine = json.loads(json.dumps(raw))
    mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    mutant = mutation(data, raw, dump(raw) if mutation is not truncate else text)
    what = f"{source.relative_to(REPO)}, {mutant.what}"
    event(mutation.__name__)
    with tempfile.TemporaryDirectory(prefix="cdd-fuzz-") as tmp:
        box = Sandbox(Path(tmp), source, pristine)
        box.config.write_bytes(mutant.content)
        before = box.files()
        if not mutant.invalid:
            checked = box.cdd("validate")
            if checked.returncode != 0:
                rejected(checked, f"validate, {what}")
            event(f"may stay valid: exit {checked.returncode}")
            assert "Traceback" not in checked.stderr, what
            return
        checked, ran = box.cdd_all(["validate"], ["run"])
        line = rejected(checked, f"validate, {what}")
        assert rejected(ran, f"run, {what}") == line, what
        assert box.files() == before, f"{what}: created {box.files() - before}"
        assert not box.calls.exists(), f"{what}: called {box.calls.read_text()}"


def test_every_config_of_the_project_is_valid_as_shipped_and_as_rewritten() -> None:
    """The base of every mutation: valid once more after tomllib and `dump`."""
    for source in SOURCES:
        raw = tomllib.loads(source.read_text())
        assert tomllib.loads(dump(raw).decode()) == raw
        with tempfile.TemporaryDirectory(prefix="cdd-fuzz-") as tmp:
            box = Sandbox(Path(tmp), source, raw)
            for content in (source.read_bytes(), dump(raw)):
                box.config.write_bytes(content)
                proc = box.cdd("validate")
                assert proc.returncode == 0, f"{source}: {proc.stderr}"
            assert not box.calls.exists()


def test_the_sandbox_would_notice_a_call(tmp_path: Path) -> None:
    """The stubs record what they are asked: a silent stub would prove nothing."""
    raw = tomllib.loads(SOURCES[0].read_text())
    box = Sandbox(tmp_path, SOURCES[0], raw)
    subprocess.run(["vagrant", "up"], env=box.env, check=False)
    assert box.calls.read_text() == "vagrant up\n"
    assert os.access(box.bin / "VBoxManage", os.X_OK)

"""What the benchmark scripts share: the environment, the tools under test, timing, cleanup.

Every tool is measured on the same machines: `bench/env/Vagrantfile` (N Debian bookworm
machines on the lxc provider, or docker or libvirt where a benchmark takes --provider, a
trivial provisioner) and the same command checks. Each tool gets its own run id, so its
machines are named `cdd-<run id>-<machine>` and only those are ever stopped or removed here.
Figures are wall-clock seconds; a benchmark repeats each measurement side by side (one of each
tool per round) and reports the median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ENV_DIR = BENCH / "env"
BOX = "cdd/debian-bookworm"
DEFAULT_SUBNET = "192.168.66"
MOLECULE_VENV = BENCH / ".venv"
MOLECULE_PACKAGES = ("molecule==25.12.0", "molecule-plugins[vagrant]==25.8.12",
                     "pytest-testinfra", "ansible-core")
"""molecule-plugins 26 moved its Vagrant module into an Ansible collection that only Ansible
Galaxy serves; 25.8.12 is the last release that ships the module itself, so everything
installs from PyPI alone. Molecule no longer adds a driver's module directory to Ansible's
library path, so molecule_env() does (ANSIBLE_LIBRARY, as a user would)."""

COMMANDS = (
    "test -f /etc/cdd-bench",
    "grep -q '^root:' /etc/passwd",
    "command -v python3",
    "test -d /var/log",
    "id vagrant",
    "test -x /usr/sbin/sshd",
    "hostname",
    "uname -r",
    "test -s /etc/hostname",
    "grep -q bookworm /etc/os-release",
    "test -r /etc/hosts",
    "command -v sudo",
    "test -d /home/vagrant",
    "ls /etc/ssh",
    "test -f /etc/debian_version",
    "command -v ip",
    "getent passwd vagrant",
    "test -d /tmp",
    "cat /proc/loadavg",
    "test -w /tmp",
    "command -v ps",
    "grep -q vagrant /etc/group",
    "test -e /dev/null",
    "df -P /",
    "true",
)
"""Cheap, read-only commands that pass on every bench machine: the checks measure the tool,
not the guest."""


def arguments(description: str, *, checks: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes; with `checks`, also --checks and --machines."""
    p = argparse.ArgumentParser(description=description)
    if checks:
        p.add_argument("--checks", type=int, default=50, help="checks in all (default 50)")
        p.add_argument("--machines", type=int, default=2, help="machines (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    p.add_argument("--subnet", default=DEFAULT_SUBNET)
    p.add_argument("--out", type=Path, help="write the result as JSON here too")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p


def parse_checks(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and refuse a check count that cannot be spread evenly over the machines."""
    args = p.parse_args(argv)
    if args.checks % args.machines:
        p.error("--checks must be a multiple of --machines (every check runs on every machine)")
    return args


def check_commands(count: int) -> list[str]:
    """`count` distinct commands (numbered past the list's length)."""
    return [COMMANDS[i % len(COMMANDS)] + (f" # {i}" if i >= len(COMMANDS) else "")
            for i in range(count)]


def machines(count: int) -> list[str]:
    return [f"m{i}" for i in range(1, count + 1)]


def new_run_id(tag: str) -> str:
    return f"bench{tag}{secrets.token_hex(3)}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- where and what -------------------------------------------------------------------------


def host_info() -> dict[str, str]:
    """The machine the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]
        ram = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, TypeError):
        pass
    vagrant = _output(["vagrant", "--version"]).removeprefix("Vagrant ").strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count() or 0),
        "cpu": cpu,
        "ram": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vagrant": vagrant,
        "load": _output(["cat", "/proc/loadavg"]).split(" ", 3)[:3].__str__(),
    }


def _output(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cdd_executable() -> list[str]:
    """The `cdd` a user would run: beside this interpreter, else on PATH, else the module."""
    beside = Path(sys.executable).parent / "cdd"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("cdd")
    return [found] if found else [sys.executable, "-m", "cdd_ci"]


# -- timing -----------------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    returncode: int
    output: str
    cpu: float = 0.0
    """CPU seconds (user + system) of the command and every process it waited for: what
    the tool itself took from the machines it builds (QEMU and containers are the daemons'
    children, not counted). Steadier than the wall clock on a host shared with others."""


def timed(argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 1800, log: Path | None = None) -> Timed:
    """Run argv to the end; wall-clock seconds, CPU seconds, exit status and merged output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {shlex.join(argv)}  # {seconds:.2f} s, exit {proc.returncode}\n")
            fh.write(proc.stdout)
    return Timed(seconds, proc.returncode, proc.stdout, cpu)


def must(result: Timed, what: str) -> Timed:
    if result.returncode != 0:
        tail = "\n".join(result.output.splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


# -- the provider -----------------------------------------------------------------------


PROVIDERS = ("lxc", "docker", "libvirt")
VIRSH = ("virsh", "-c", "qemu:///system")
LISTINGS = {
    "lxc": ("lxc-ls", "-1"),
    "docker": ("docker", "ps", "-a", "--format", "{{.Names}}"),
    "libvirt": (*VIRSH, "list", "--all", "--name"),
}


def containers(run_id: str, provider: str = "lxc") -> list[str]:
    """This run's machines at the provider level (and no one else's)."""
    out = _output(list(LISTINGS[provider]))
    return [n for n in out.split() if n.startswith(f"cdd-{run_id}-")]


def wait_gone(run_id: str, *, timeout: float = 300, interval: float = 0.05) -> float:
    """Poll until no container of the run is left; the perf_counter time it happened."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not containers(run_id):
            return time.perf_counter()
        time.sleep(interval)
    raise RuntimeError(f"containers of {run_id} still there after {timeout:.0f} s")


def sweep(run_id: str, provider: str = "lxc") -> list[str]:
    """Last resort after a failed benchmark: remove this run's machines (and on libvirt its
    private network), nothing else, with the removal commands of the cdd under test."""
    from cdd_ci.infra.providers import DRIVERS

    left = containers(run_id, provider)
    network = [f"cdd-{run_id}-private"] if provider == "libvirt" else []  # vagrant/lib
    for name in left + network:
        for argv in DRIVERS[provider].remove_argvs(name):
            subprocess.run(argv, capture_output=True, timeout=120, check=False)
    return left


# -- the environment under test ----------------------------------------------------------


@dataclass
class BenchEnv:
    """One run id's view of bench/env: the variables Vagrant needs, its own state directory."""

    run_id: str
    count: int
    subnet: str
    state: Path
    provider: str = "lxc"

    @property
    def machines(self) -> list[str]:
        return machines(self.count)

    def vagrant_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "CDD_RUN_ID": self.run_id,
            "CDD_BENCH_MACHINES": str(self.count),
            "CDD_SUBNET": self.subnet,
            "VAGRANT_DOTFILE_PATH": str(self.state / "vagrant"),
            "VAGRANT_DEFAULT_PROVIDER": self.provider,
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
        })
        return env

    def vagrant(self, *args: str, log: Path | None = None, timeout: float = 900) -> Timed:
        return timed(["vagrant", *args], cwd=ENV_DIR, env=self.vagrant_env(), log=log,
                     timeout=timeout)


@dataclass
class Project:
    """A throw-away project directory whose cdd.toml points at bench/env."""

    root: Path
    count: int
    subnet: str
    checks: list[str] = field(default_factory=list)
    extra: str = ""
    provider: str = "lxc"

    def write(self) -> Path:
        lines = [
            'destroy = "always"',
            "",
            "[environment]",
            f'name = "bench{self.count}"',
            f"directory = {json.dumps(str(ENV_DIR))}",
            f'provider = "{self.provider}"',
            f"machines = {json.dumps(machines(self.count))}",
            f'env = {{ CDD_BENCH_MACHINES = "{self.count}", CDD_SUBNET = "{self.subnet}" }}',
            "",
        ]
        for i, command in enumerate(self.checks):
            lines += [
                "[[checks]]",
                f'name = "check {i + 1:02d}"',
                'type = "command"',
                f"command = {json.dumps(command)}",
                "deadline = 0",
                "",
            ]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "cdd.toml"
        path.write_text("\n".join(lines) + self.extra, encoding="utf-8")
        return path

    def cdd(self, *args: str, log: Path | None = None, timeout: float = 1800) -> Timed:
        return timed([*cdd_executable(), *args], cwd=self.root, log=log, timeout=timeout)

    def run_ids(self) -> list[str]:
        return sorted(p.parent.name for p in (self.root / ".cdd" / "runs").glob("*/ledger.json"))

    def ledger(self, run_id: str) -> dict[str, object]:
        data = json.loads((self.root / ".cdd" / "runs" / run_id / "ledger.json").read_text())
        assert isinstance(data, dict)
        return data

    def run_env(self, run_id: str) -> BenchEnv:
        """The same machines as cdd's run, for Vagrant commands of our own."""
        return BenchEnv(run_id, self.count, self.subnet, self.root / ".cdd" / "runs" / run_id,
                        self.provider)

    def junit_durations(self) -> dict[str, float]:
        """`machine: testcase` -> seconds, from the run's report."""
        import xml.etree.ElementTree as ET

        path = self.root / "reports" / "junit.xml"
        if not path.is_file():
            return {}
        out: dict[str, float] = {}
        for suite in ET.parse(path).getroot().iter("testsuite"):
            for case in suite.iter("testcase"):
                out[f"{suite.get('name')}: {case.get('name')}"] = float(case.get("time") or 0)
        return out


@contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cdd-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# -- Molecule ----------------------------------------------------------------------------


def molecule_bin() -> Path:
    return MOLECULE_VENV / "bin" / "molecule"


def ensure_molecule(log: Path | None = None) -> Path:
    """Molecule in its own virtualenv (bench/.venv), installed from PyPI as a user would."""
    if not molecule_bin().is_file():
        if not (MOLECULE_VENV / "bin" / "python").is_file():
            must(timed([sys.executable, "-m", "venv", str(MOLECULE_VENV)], log=log), "venv")
        must(timed([str(MOLECULE_VENV / "bin" / "pip"), "install", "-q",
                    "--disable-pip-version-check", *MOLECULE_PACKAGES], log=log, timeout=1800),
             "pip install molecule")
    return molecule_bin()


MOLECULE_YML = """\
dependency:
  name: galaxy
  enabled: false
driver:
  name: vagrant
  provider:
    name: lxc
  parallel: true
platforms:
{platforms}
provisioner:
  name: ansible
verifier:
  name: testinfra
"""

PLATFORM = """\
  - name: {name}
    box: {box}
    # vagrant-lxc has no memory or cpus settings, which Molecule's Vagrantfile always sets:
    # accept and ignore them (configuration, not a change to Molecule)
    instance_raw_config_args:
      - "vm.box_check_update = false; require 'vagrant-lxc/config';
         Vagrant::LXC::Config.class_eval {{ attr_accessor :memory, :cpus }}"
    provider_raw_config_args:
      - "container_name = 'cdd-{run_id}-{name}'"
"""

CONVERGE = """\
- name: Converge
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: What the shell provisioner of bench/env does
      ansible.builtin.copy:
        content: "provisioned {{ inventory_hostname }}\\n"
        dest: /etc/cdd-bench
        mode: "0644"
"""

TESTINFRA = '''\
"""The same command checks as the cdd benchmark's, one test per command and host."""

import pytest

COMMANDS = {commands!r}


@pytest.mark.parametrize("command", COMMANDS)
def test_command(host, command):
    assert host.run(command).rc == 0
'''


def molecule_scenario(root: Path, run_id: str, count: int, commands: list[str]) -> Path:
    """A Molecule project: the same machines (the same box), the same checks in testinfra."""
    scenario = root / "molecule" / "default"
    scenario.mkdir(parents=True, exist_ok=True)
    platforms = "".join(PLATFORM.format(name=m, box=BOX, run_id=run_id) for m in machines(count))
    (scenario / "molecule.yml").write_text(MOLECULE_YML.format(platforms=platforms.rstrip()))
    (scenario / "converge.yml").write_text(CONVERGE)
    tests = scenario / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "test_default.py").write_text(TESTINFRA.format(commands=commands))
    return root


def molecule_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{MOLECULE_VENV / 'bin'}:{env.get('PATH', '')}",
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "MOLECULE_EPHEMERAL_DIRECTORY": str(root / ".molecule"),
        "ANSIBLE_LOCAL_TEMP": str(root / ".ansible-tmp"),
        "ANSIBLE_LIBRARY": str(_vagrant_modules()),
        "PY_COLORS": "0",
        "ANSIBLE_FORCE_COLOR": "0",
    })
    return env


def _vagrant_modules() -> Path:
    found = sorted(MOLECULE_VENV.glob(
        "lib/python3*/site-packages/molecule_plugins/vagrant/modules"))
    return found[0] if found else MOLECULE_VENV / "missing-molecule-plugins"


def molecule(root: Path, *args: str, log: Path | None = None, timeout: float = 1800) -> Timed:
    return timed([str(molecule_bin()), *args], cwd=root, env=molecule_env(root), log=log,
                 timeout=timeout)


# -- the naive script ---------------------------------------------------------------------

NAIVE = BENCH / "naive.sh"


def write_checks_file(path: Path, env: BenchEnv, commands: list[str]) -> Path:
    """`machine<TAB>command` lines for bench/naive.sh: every command on every machine."""
    path.write_text("".join(f"{m}\t{c}\n" for c in commands for m in env.machines))
    return path


# -- reporting ---------------------------------------------------------------------------


def emit(name: str, result: dict[str, object], out: Path | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        print(f"{name}: wrote {out}", file=sys.stderr)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

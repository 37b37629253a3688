"""Building blocks for lifecycle tests: a project on disk and a fake backend around it."""

from __future__ import annotations

import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from cdd_ci.backend import Backend
from cdd_ci.config import Config, load_config
from cdd_ci.host.ledger import Ledger
from cdd_ci.infra import procs
from tests.fakes.infra import FakeEnvironment, FakeHost, FakeShell, FakeShells

CONFIG = """
[environment]
name = "demo"
directory = "env"
provider = "lxc"
machines = ["broker", "database"]

[timeouts]
up = 5
provision = 5
check = 5
destroy = 5

[[checks]]
name = "broker answers"
type = "command"
on = "broker"
command = "echo pong"
stdout = "^pong$"
deadline = 0

[[checks]]
name = "db port from broker"
type = "port"
on = "broker"
host = "database"
port = 3306
deadline = 0

[[harvest]]
files = ["/var/log/*.log"]
commands = { journal = "journalctl -b" }
"""


def make_project(tmp: Path, extra: str = "") -> Config:
    (tmp / "env").mkdir(exist_ok=True)
    (tmp / "env" / "Vagrantfile").write_text("# fake\n")
    (tmp / "cdd.toml").write_text(textwrap.dedent(CONFIG) + extra)
    return load_config(tmp / "cdd.toml")


@dataclass
class World:
    """Everything the fakes know: what exists on the 'host' and what was asked of it."""

    host: FakeHost = field(default_factory=FakeHost)
    environments: list[FakeEnvironment] = field(default_factory=list)
    shells: dict[str, FakeShell] = field(default_factory=dict)
    fail_up: set[str] = field(default_factory=set)
    fail_provision: set[str] = field(default_factory=set)
    fail_destroy: set[str] = field(default_factory=set)
    raise_in_up: BaseException | None = None
    provision_waits_for_ssh_config: bool = False
    writes_at_up: bool = False
    fail_write: set[str] = field(default_factory=set)
    together: bool = False
    no_vagrant: bool = False
    host_problem: str | None = None
    """What hostcheck would say of the provider on this 'host' (None: nothing wrong)."""

    def __post_init__(self) -> None:
        self.shells = {
            "broker": FakeShell("broker").answer(r"^echo pong", stdout="pong\n")
            .answer(r"/dev/tcp/database/3306", 0),
            "database": FakeShell("database"),
        }

    def backend(self) -> Backend:
        def environment(ledger: Ledger, registry: procs.Running | None) -> FakeEnvironment:
            env = FakeEnvironment(self.host, ledger.run_id, ledger.machines,
                                  fail_up=self.fail_up, fail_provision=self.fail_provision,
                                  fail_destroy=self.fail_destroy, raise_in_up=self.raise_in_up,
                                  provision_waits_for_ssh_config=(
                                      self.provision_waits_for_ssh_config),
                                  writes_at_up=self.writes_at_up, fail_write=self.fail_write,
                                  together=self.together, no_vagrant=self.no_vagrant)
            self.environments.append(env)
            return env

        def shells(_ssh_config: str, _registry: procs.Running | None) -> FakeShells:
            return FakeShells(self.shells, {m: f"10.0.0.{i}" for i, m in enumerate(self.shells)})

        return Backend(environment=environment, shells=shells, provider=self.host,
                       host=lambda _provider: self.host_problem)

    @property
    def calls(self) -> list[str]:
        return [c for env in self.environments for c in env.calls]


def survives(pid: int) -> str:
    """The state of a process a timeout should have killed ("" or "Z" if it is gone: a
    zombie waiting for init to reap it is dead)."""
    time.sleep(0.2)
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                           text=True, check=False).stdout.strip()
    return "" if state == "Z" else state


def stand_in(tmp_path: Path, name: str, script: str) -> Path:
    """An executable `name` running `script`, in a directory of its own to put first on PATH
    (returned, with the files that drive the script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(textwrap.dedent(script))
    exe.chmod(0o755)
    return bin_dir

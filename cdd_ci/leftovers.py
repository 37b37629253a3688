"""What a run left at the provider level, found by name, whatever Vagrant remembers.

Vagrant forgets a machine whose `up` was killed before it wrote `.vagrant/machines/...`,
which is exactly when a machine is most likely to leak. The project's Vagrantfiles name
every machine `cdd-<run_id>-<machine>` (docker also labels it `cdd.run=<run_id>`), so the
provider's own listing finds it, and the provider's own tools remove it:

    lxc         container name        lxc-ls -1            lxc-stop -k, lxc-destroy -f
    docker      label cdd.run=<id>    docker ps -a         docker rm -f -v
    libvirt     domain name           virsh list --all     virsh destroy, virsh undefine
                (default_prefix)                           --remove-all-storage
    virtualbox  VM name (vb.name)     VBoxManage list vms  VBoxManage controlvm poweroff,
                                                           VBoxManage unregistervm --delete

(provider, what carries the run id, how it is listed, how it is removed.)
A provider whose tool is not installed has nothing on this host (`available()`). The run id
embeds its start time (UTC), so a machine found here with no ledger anywhere still has an
age (`started_at`), which is what the reaper judges it by.
"""

from __future__ import annotations

import calendar
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cdd_ci import procs

TIMEOUT = 60.0
NAME_RE = re.compile(r"^cdd-(\d{14}-[0-9a-f]{6})-(.+)$")
PROVIDERS = ("lxc", "docker", "libvirt", "virtualbox")
TOOLS = {"lxc": "lxc-ls", "docker": "docker", "libvirt": "virsh", "virtualbox": "VBoxManage"}
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 0.0)


@dataclass(frozen=True)
class Resource:
    provider: str
    name: str
    run_id: str
    machine: str

    def __str__(self) -> str:
        return f"{self.provider} {self.name}"


def machine_name(run_id: str, machine: str) -> str:
    return f"cdd-{run_id}-{machine}"


def started_at(run_id: str) -> float | None:
    """When a run started, from its id (`YYYYmmddHHMMSS-xxxxxx`, UTC); None if not one."""
    try:
        return float(calendar.timegm(time.strptime(run_id[:14], "%Y%m%d%H%M%S")))
    except ValueError:
        return None


def available() -> list[str]:
    """The providers whose tools are installed here: the only ones that can have machines."""
    return [p for p in PROVIDERS
            if shutil.which(_docker() if p == "docker" else TOOLS[p])]


def find(provider: str, run_ids: Sequence[str] | None = None) -> list[Resource]:
    """This host's cdd machines for `provider` (all runs, or only `run_ids`)."""
    found = [r for r in _list(provider) if run_ids is None or r.run_id in run_ids]
    return sorted(found, key=lambda r: r.name)


def stop(resource: Resource) -> None:
    """Power a machine off at once, without a graceful shutdown.

    The machine is about to be destroyed, so nothing in it needs to be saved, and a graceful
    shutdown of RabbitMQ or MariaDB can take longer than a cancelled job has left.
    """
    argv = {
        "lxc": ["lxc-stop", "-k", "-n", resource.name],
        "docker": [_docker(), "kill", resource.name],
        "libvirt": ["virsh", "-c", "qemu:///system", "destroy", resource.name],
        "virtualbox": ["VBoxManage", "controlvm", resource.name, "poweroff"],
    }.get(resource.provider)
    if argv is None:
        return
    try:
        procs.run(argv, timeout=TIMEOUT)  # fails harmlessly when already stopped
    except (OSError, procs.CommandTimeout):
        pass


def remove(resource: Resource) -> None:
    """Remove one machine with the provider's own tools; gone already counts as removed."""
    argvs: list[list[str]]
    if resource.provider == "lxc":
        argvs = [["lxc-stop", "-k", "-n", resource.name],
                 ["lxc-destroy", "-f", "-n", resource.name]]
    elif resource.provider == "docker":
        argvs = [[_docker(), "rm", "-f", "-v", resource.name]]
    elif resource.provider == "libvirt":
        argvs = [
            ["virsh", "-c", "qemu:///system", "destroy", resource.name],
            ["virsh", "-c", "qemu:///system", "undefine", resource.name,
             "--remove-all-storage"],
        ]
    else:
        argvs = [
            ["VBoxManage", "controlvm", resource.name, "poweroff"],
            ["VBoxManage", "unregistervm", resource.name, "--delete"],
        ]
    # a machine still being created (its run was killed a moment ago) may refuse removal
    # for a few seconds: try again rather than report a leak that is about to be fixable
    for delay in RETRY_DELAYS:
        for argv in argvs:
            try:
                procs.run(argv, timeout=TIMEOUT)  # an early one may fail: already stopped
            except (OSError, procs.CommandTimeout):
                pass
        if not any(r.name == resource.name for r in _list(resource.provider)):
            return
        time.sleep(delay)
    raise RuntimeError(f"{resource} is still there after removal")


def _list(provider: str) -> list[Resource]:
    names: list[str] = []
    if provider == "lxc" and shutil.which("lxc-ls"):
        names = _lines(["lxc-ls", "-1"])
    elif provider == "docker" and shutil.which(_docker()):
        # by label: the run id is a tag Vagrant's docker provider passes through untouched
        labelled = [ln.split("\t") for ln in _lines(
            [_docker(), "ps", "-a", "--filter", "label=cdd.run",
             "--format", '{{.Names}}\t{{.Label "cdd.run"}}'])]
        return [_docker_resource(*row) for row in labelled if len(row) == 2]
    elif provider == "libvirt" and shutil.which("virsh"):
        names = _lines(["virsh", "-c", "qemu:///system", "list", "--all", "--name"])
    elif provider == "virtualbox" and shutil.which("VBoxManage"):
        names = [ln.split('"')[1] for ln in _lines(["VBoxManage", "list", "vms"]) if '"' in ln]
    out = []
    for name in names:
        match = NAME_RE.match(name)
        if match:
            out.append(Resource(provider, name, match.group(1), match.group(2)))
    return out


def _docker_resource(name: str, run_id: str) -> Resource:
    name = name.lstrip("/")
    match = NAME_RE.match(name)
    if match:
        return Resource("docker", name, match.group(1), match.group(2))
    return Resource("docker", name, run_id, name)


def _lines(argv: list[str]) -> list[str]:
    try:
        result = procs.run(argv, timeout=TIMEOUT)
    except (OSError, procs.CommandTimeout):
        return []
    if result.exit_code != 0:
        return []
    return [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]


def _docker() -> str:
    # the distribution's client matches its daemon; a newer static one may sit earlier on PATH
    return "/usr/bin/docker" if shutil.which("/usr/bin/docker") else "docker"

"""What a run was built from: each machine's box and installed packages, and the host's Vagrant.

Taken once the machines are provisioned and checked, so that when a later run fails its issue
can name what changed since the last green one (history/changes.py). One command per machine,
over the connection the checks used, under one time limit; whatever goes wrong (no shell, a
timeout, neither dpkg nor rpm) is written down as the machine's `problem` and never fails the
run: the inventory informs, it does not judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from cdd_ci.infra.ssh import Shell, SshError
from cdd_ci.models import Inventory, MachineInventory, Package

PACKAGES_COMMAND = (
    "if command -v dpkg-query >/dev/null 2>&1; then echo dpkg;"
    " dpkg-query -W -f '${db:Status-Abbrev}\\t${binary:Package}\\t${Version}\\n';"
    " elif command -v rpm >/dev/null 2>&1; then echo rpm;"
    " rpm -qa --qf 'ii \\t%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n';"
    " else echo none; fi"
)
"""One command for either family. dpkg also lists removed packages whose configuration is
left (status `rc`): only the installed ones (second letter `i`) are kept. rpm's lines get the
same status column so that one parser reads both."""
MANAGERS = ("dpkg", "rpm")


def take(
    shells: Mapping[str, Shell],
    machines: Sequence[str],
    box_of: Callable[[str], str],
    *,
    vagrant_version: str,
    plugins: Sequence[Package],
    timeout: float,
) -> Inventory:
    """Every machine's packages at once; never raises. Vagrant's version and plugins are
    asked while the machines come up (each a Ruby start-up: not on the critical path)."""
    with ThreadPoolExecutor(max_workers=len(machines)) as pool:
        found = list(pool.map(lambda m: _machine(m, shells.get(m), box_of, timeout),
                              machines))
    return Inventory(tuple(found), vagrant=vagrant_version, plugins=tuple(plugins))


def parse_packages(output: str) -> tuple[str, tuple[Package, ...]]:
    """The manager's name and the installed packages, sorted by name, from PACKAGES_COMMAND.

    A name listed twice (rpm's multilib: one per architecture) keeps both versions."""
    lines = output.splitlines()
    manager = lines[0].strip() if lines else ""
    versions: dict[str, list[str]] = {}
    for line in lines[1:]:
        status, _, rest = line.partition("\t")
        name, _, version = rest.partition("\t")
        if len(status) >= 2 and status[1] == "i" and name:
            versions.setdefault(name, []).append(version.strip())
    packages = tuple(Package(name, ", ".join(sorted(set(v))))
                     for name, v in sorted(versions.items()))
    return manager, packages


def split_box(box: str) -> tuple[str, str]:
    """Vagrant's `name version` of a box (infra/vagrant.box) as its two parts."""
    name, _, version = box.strip().partition(" ")
    return name, version.strip()


def _machine(machine: str, shell: Shell | None, box_of: Callable[[str], str],
             timeout: float) -> MachineInventory:
    box, version = split_box(box_of(machine))
    if shell is None:
        return MachineInventory(machine, box, version,
                                problem="no connection to it (it did not come up or provision)")
    try:
        result = shell.run(PACKAGES_COMMAND, timeout=timeout)
    except SshError as exc:
        return MachineInventory(machine, box, version, problem=str(exc))
    manager, packages = parse_packages(result.stdout)
    if result.exit_code != 0 or manager not in MANAGERS:
        why = ("neither dpkg-query nor rpm on it" if manager == "none" else
               f"listing packages failed (exit {result.exit_code}): "
               f"{(result.stderr.strip().splitlines() or [''])[-1][:200]}")
        return MachineInventory(machine, box, version, problem=why)
    return MachineInventory(machine, box, version, manager, packages)


"""libvirt (vagrant-libvirt), on the system connection: what a run leaves is named after it.

A machine is a domain `cdd-<run_id>-<machine>` (`default_prefix`) with its disk
`cdd-<run_id>-<machine>.img` in the pool `default`, and the run's private network is
`cdd-<run_id>-private` (vagrant/lib/cdd_env.rb). A run killed mid-`up` can leave a disk
without its domain, or the network without any domain: each is listed, and removed, on its
own. The box's copy in the pool and the management network are the host's, not a run's.
"""

from __future__ import annotations

from cdd_ci.infra.providers.base import NAME_RE, Driver, Resource, lines

VIRSH = ["virsh", "-c", "qemu:///system"]
POOL = "default"
NETWORK_SUFFIX = "-private"
VOLUME_SUFFIXES = (".img", ".qcow2", ".raw")
SOCKETS = ["/var/run/libvirt/libvirt-sock", "/var/run/libvirt/virtqemud-sock"]
"""The monolithic daemon's socket and the modular QEMU daemon's: either serves qemu:///system."""


def _domains() -> list[str]:
    return lines("libvirt", [*VIRSH, "list", "--all", "--name"])


def _volumes() -> list[str]:
    # `vol-list --name` is not in every libvirt: the first column after a two-line header
    rows = lines("libvirt", [*VIRSH, "vol-list", POOL])
    return [row.split()[0] for row in rows[2:] if row.split()]


def _networks() -> list[str]:
    return lines("libvirt", [*VIRSH, "net-list", "--all", "--name"])


def _is_volume(name: str) -> bool:
    return name.endswith(VOLUME_SUFFIXES)


def _is_network(name: str) -> bool:
    return name.endswith(NETWORK_SUFFIX) and not _is_volume(name)


def _resource(name: str, machine_of: str) -> Resource | None:
    match = NAME_RE.match(machine_of)
    return Resource("libvirt", name, match.group(1), match.group(2)) if match else None


def _list() -> list[Resource]:
    found: list[Resource | None] = [_resource(name, name) for name in _domains()]
    for volume in _volumes():
        # a machine's extra disks are <domain>-<name>.img; the first one is <domain>.img
        found.append(_resource(volume, volume.rsplit(".", 1)[0]))
    for network in _networks():
        if network.endswith(NETWORK_SUFFIX):
            found.append(_resource(network, network))
    return [r for r in found if r is not None]


def _stop_argv(name: str) -> list[str]:
    if _is_volume(name):
        return [*VIRSH, "vol-info", "--pool", POOL, name]  # a disk has nothing to power off
    return [*VIRSH, "net-destroy" if _is_network(name) else "destroy", name]


def _remove_argvs(name: str) -> list[list[str]]:
    if _is_volume(name):
        return [[*VIRSH, "vol-delete", "--pool", POOL, name]]
    if _is_network(name):
        return [[*VIRSH, "net-destroy", name], [*VIRSH, "net-undefine", name]]
    # --nvram: a UEFI domain refuses undefine without it; harmless for the others
    return [[*VIRSH, "destroy", name],
            [*VIRSH, "undefine", name, "--remove-all-storage", "--nvram"]]


DRIVER = Driver(
    name="libvirt",
    tool=lambda: "virsh",
    listing=_list,
    stop_argv=_stop_argv,
    remove_argvs=_remove_argvs,
    sockets=lambda: SOCKETS,
    # vagrant-libvirt's destroy is fog's `poweroff unless stopped?` (virDomainDestroy), then
    # undefine: a `virsh destroy` before it costs the teardown 1.2-1.7 s under TCG, in series
    vagrant_pulls_the_plug=True,
)

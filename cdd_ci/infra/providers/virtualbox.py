"""virtualbox: VMs named by `vb.name`, listed by `VBoxManage list vms` as `"name" {uuid}`."""

from __future__ import annotations

from cdd_ci.infra.providers.base import Driver, Resource, lines, named


def _list() -> list[Resource]:
    listed = lines("virtualbox", ["VBoxManage", "list", "vms"])
    return named("virtualbox", [ln.split('"')[1] for ln in listed if '"' in ln])


DRIVER = Driver(
    name="virtualbox",
    tool=lambda: "VBoxManage",
    listing=_list,
    stop_argv=lambda name: ["VBoxManage", "controlvm", name, "poweroff"],
    remove_argvs=lambda name: [["VBoxManage", "controlvm", name, "poweroff"],
                               ["VBoxManage", "unregistervm", name, "--delete"]],
)

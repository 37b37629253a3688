"""lxc (vagrant-lxc): containers named after the machine, listed by `lxc-ls`."""

from __future__ import annotations

from cdd_ci.infra.providers.base import Driver, Resource, lines, named


def _list() -> list[Resource]:
    return named("lxc", lines("lxc", ["lxc-ls", "-1"]))


DRIVER = Driver(
    name="lxc",
    tool=lambda: "lxc-ls",
    listing=_list,
    stop_argv=lambda name: ["lxc-stop", "-k", "-n", name],
    remove_argvs=lambda name: [["lxc-stop", "-k", "-n", name], ["lxc-destroy", "-f", "-n", name]],
)

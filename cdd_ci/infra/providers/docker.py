"""docker: containers labelled `cdd.run=<run_id>`, a tag Vagrant's docker provider passes
through untouched, so they are found by label even where the name is not cdd's."""

from __future__ import annotations

import os
import shutil

from cdd_ci.infra.providers.base import NAME_RE, Driver, Resource, lines


def executable() -> str:
    # the distribution's client matches its daemon; a newer static one may sit earlier on PATH
    return "/usr/bin/docker" if shutil.which("/usr/bin/docker") else "docker"


def _sockets() -> list[str]:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    # a remote daemon (tcp://, ssh://) is judged by its listing, not by a local socket
    return [host.removeprefix("unix://")] if host.startswith("unix://") else []


def _list() -> list[Resource]:
    rows = [ln.split("\t") for ln in lines("docker", [
        executable(), "ps", "-a", "--filter", "label=cdd.run",
        "--format", '{{.Names}}\t{{.Label "cdd.run"}}'])]
    return [_resource(*row) for row in rows if len(row) == 2]


def _resource(name: str, run_id: str) -> Resource:
    name = name.lstrip("/")
    match = NAME_RE.match(name)
    if match:
        return Resource("docker", name, match.group(1), match.group(2))
    return Resource("docker", name, run_id, name)


DRIVER = Driver(
    name="docker",
    tool=executable,
    listing=_list,
    stop_argv=lambda name: [executable(), "kill", name],
    remove_argvs=lambda name: [[executable(), "rm", "-f", "-v", name]],
    sockets=_sockets,
)

"""The external systems a run talks to, in one place: Vagrant, SSH, the provider's own tools,
the network and the host's readiness. The lifecycle and the commands that act on a recorded
run take a Backend; tests hand them one made of the stateful fakes in tests/fakes/.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdd_ci.host.ledger import Ledger
from cdd_ci.infra import network, procs
from cdd_ci.infra import preflight as hostcheck
from cdd_ci.infra.providers import Provider, RealProvider
from cdd_ci.infra.ssh import Shells, SshPool
from cdd_ci.infra.vagrant import Environment, VagrantCli
from cdd_ci.text import without_tokens


@dataclass(frozen=True)
class Backend:
    """The external systems a run talks to: real ones, or the fakes in tests."""

    environment: Callable[[Ledger, procs.Running | None], Environment]
    shells: Callable[[str, procs.Running | None], Shells]
    provider: Provider
    network: Callable[[str, float], str | None] = network.probe
    """Target, timeout -> None when the runner reaches it, else why not."""
    host: Callable[[str], str | None] = hostcheck.problem
    """Provider -> None, or what on this host would make its machines fail (infra/preflight.py)."""


def real_backend() -> Backend:
    def environment(ledger: Ledger, registry: procs.Running | None) -> Environment:
        env = without_tokens(os.environ)
        env.update(ledger.vagrant_env)
        return VagrantCli(Path(ledger.directory), ledger.provider, env, registry)

    return Backend(environment=environment, shells=SshPool, provider=RealProvider())

"""`cdd check` reuses the ssh-config that `cdd up` kept, and asks Vagrant again when stale."""

from __future__ import annotations

from pathlib import Path

from cdd_ci.backend import Backend
from cdd_ci.host.ledger import SSH_CONFIG, LedgerStore
from cdd_ci.infra import procs
from cdd_ci.infra.signals import Cancellation
from cdd_ci.lifecycle import Lifecycle
from cdd_ci.models import ExitCode
from cdd_ci.recorded import check_recorded
from cdd_ci.report.progress import QuietDisplay
from tests.fakes.infra import FakeShells

from ..helpers import World, make_project


def _up(tmp_path: Path, world: World) -> tuple[Path, str]:
    config = make_project(tmp_path)
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation(),
                       command="up").build()
    assert result.kept and result.exit_code() is ExitCode.OK
    return LedgerStore(config.state_dir).run_dir(result.run_id) / SSH_CONFIG, result.run_id


def _backend_refusing(world: World, word: str) -> Backend:
    """Connections made from an ssh-config that mentions `word` fail, as to a stale address."""
    real = world.backend()

    def shells(text: str, registry: procs.Running | None) -> FakeShells:
        if word in text:
            return FakeShells({}, {})
        return real.shells(text, registry)  # type: ignore[return-value]

    return Backend(environment=real.environment, shells=shells, provider=real.provider)


def test_cdd_up_keeps_the_ssh_config_and_cdd_check_does_not_ask_vagrant(
        tmp_path: Path) -> None:
    world = World()
    cache, _ = _up(tmp_path, world)
    assert "Host broker" in cache.read_text()
    assert cache.stat().st_mode & 0o077 == 0
    before = world.calls.count("ssh-config")
    result = check_recorded(make_project(tmp_path), world.backend(), QuietDisplay())
    assert result.exit_code() is ExitCode.OK
    assert world.calls.count("ssh-config") == before


def test_a_stale_ssh_config_is_dropped_and_asked_for_again(tmp_path: Path) -> None:
    world = World()
    cache, _ = _up(tmp_path, world)
    cache.write_text("Host broker\n  HostName stale\nHost database\n  HostName stale\n")
    before = world.calls.count("ssh-config")
    result = check_recorded(make_project(tmp_path), _backend_refusing(world, "stale"),
                            QuietDisplay())
    assert result.exit_code() is ExitCode.OK, [s.message for s in result.failures()]
    assert world.calls.count("ssh-config") == before + 1
    assert "stale" not in cache.read_text()  # the fresh answer replaced it


def test_no_cache_after_the_environment_is_destroyed(tmp_path: Path) -> None:
    world = World()
    config = make_project(tmp_path)
    result = Lifecycle(config, world.backend(), QuietDisplay(), Cancellation()).run()
    assert result.exit_code() is ExitCode.OK
    assert not (LedgerStore(config.state_dir).run_dir(result.run_id) / SSH_CONFIG).exists()

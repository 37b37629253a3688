"""Which providers the sweep asks: a client without its daemon is not a provider in service.

A docker CLI in the runner's image, or libvirt's clients brought in by another package, must
not turn every `cdd reap` and `cdd status` into a failed listing (exit 3)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdd_ci.infra import providers
from cdd_ci.infra.providers import docker
from cdd_ci.infra.providers.base import Driver


def driver(sockets: list[str], tool: str = sys.executable) -> Driver:
    return Driver(name="test", tool=lambda: tool, listing=list, stop_argv=lambda n: [],
                  remove_argvs=lambda n: [], sockets=lambda: sockets)


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "daemon.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen(1)
        yield path


@pytest.fixture
def refused(tmp_path: Path) -> str:
    """A socket file left by a daemon that has stopped."""
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
    return path


def test_a_running_daemon_puts_its_provider_in_service(listening: str, tmp_path: Path) -> None:
    assert driver([str(tmp_path / "absent.sock"), listening]).in_service()


def test_an_absent_or_stale_socket_means_no_daemon(refused: str, tmp_path: Path) -> None:
    assert not driver([str(tmp_path / "absent.sock")]).in_service()
    assert not driver([refused]).in_service()


def test_a_provider_without_a_daemon_is_in_service_when_installed() -> None:
    assert driver([]).in_service()
    assert not driver([], tool="no-such-tool-here").in_service()


def test_a_client_without_its_daemon_is_not_swept(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(providers.DRIVERS, "libvirt", driver([str(tmp_path / "libvirt-sock")]))
    assert "libvirt" not in providers.available()


@pytest.mark.parametrize(("docker_host", "sockets"), [
    (None, ["/var/run/docker.sock"]),
    ("unix:///run/user/1000/docker.sock", ["/run/user/1000/docker.sock"]),
    ("tcp://127.0.0.1:2375", []),
])
def test_dockers_socket_follows_docker_host(
        monkeypatch: pytest.MonkeyPatch, docker_host: str | None, sockets: list[str]) -> None:
    if docker_host is None:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    else:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    assert docker.DRIVER.sockets() == sockets

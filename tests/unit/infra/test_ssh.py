"""Parsing `vagrant ssh-config`, and what counts as a connection failure."""

from __future__ import annotations

import pytest

from cdd_ci.infra.ssh import parse_ssh_config

VAGRANT_OUTPUT = """Host broker
  HostName 10.0.3.17
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/root/my dir/.vagrant/machines/broker/lxc/private_key"
  IdentitiesOnly yes
  LogLevel FATAL

Host database
  HostName 127.0.0.1
  User vagrant
  Port 2200
"""


@pytest.mark.parametrize(("host", "key", "value"), [
    ("broker", "hostname", "10.0.3.17"),
    ("broker", "identityfile", "/root/my dir/.vagrant/machines/broker/lxc/private_key"),
    ("broker", "loglevel", "FATAL"),
    ("database", "port", "2200"),
    ("database", "user", "vagrant"),
])
def test_values(host: str, key: str, value: str) -> None:
    assert parse_ssh_config(VAGRANT_OUTPUT)[host].options[key] == value


@pytest.mark.parametrize(("text", "hosts"), [
    ("", {}),
    ("# only a comment\n", {}),
    ("Host a\n  HostName=1.2.3.4\n", {"a": "1.2.3.4"}),
    ("Host a\n  HostName 1.1.1.1\n  HostName 2.2.2.2\n", {"a": "1.1.1.1"}),
    ("Host a\n\n\nHost b\n  hostname b.example\n", {"a": "a", "b": "b.example"}),
])
def test_table(text: str, hosts: dict[str, str]) -> None:
    parsed = parse_ssh_config(text)
    assert {name: h.hostname for name, h in parsed.items()} == hosts

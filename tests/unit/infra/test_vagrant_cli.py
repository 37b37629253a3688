"""The real VagrantCli against a stand-in `vagrant` executable: timeouts, retries, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdd_ci.infra import procs
from cdd_ci.infra.vagrant import (
    GlobalEntry,
    Installation,
    Provisioning,
    VagrantCli,
    VagrantError,
    destroy_global,
    global_status,
    last_error_line,
)
from cdd_ci.models import Package
from tests.unit.helpers import stand_in, survives

SCRIPT = """#!/bin/sh
# a stand-in for vagrant, driven by files in its directory
here=$(dirname "$0")
echo "$@" >> "$here/calls"
case "$1" in
  up)
    nice > "$here/up-niceness"
    n=$(cat "$here/locked" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
      echo $((n - 1)) > "$here/locked"
      echo "Vagrant can't use the requested machine because it is locked! This"; exit 1
    fi
    # vagrant-lxc: the up of a container that is running does nothing, provisioning included
    [ -f "$here/running-$2" ] && exit 0
    if [ -f "$here/locked-once-booting" ]; then
      rm "$here/locked-once-booting"; touch "$here/running-$2"
      mkdir -p ".vagrant/machines/$2/lxc"; echo 0f3a > ".vagrant/machines/$2/lxc/id"
      echo "==> $2: Waiting for machine to boot. This may take a few minutes..."
      echo "Vagrant can't use the requested machine because it is locked! This"; exit 1
    fi
    if [ -f "$here/hang" ]; then sleep 300 & echo $! > "$here/child"; wait; fi
    echo "==> $2: Machine booted and ready!"
    case "$*" in *--provision*)
      [ -f "$here/up-noise" ] && echo "E: a line of up's own that explains nothing"
      echo "==> $2: Running provisioner: shell..."
      if [ -f "$here/provision-hangs" ]; then sleep 300 & echo $! > "$here/child"; wait; fi
      if [ -f "$here/provision-fails" ]; then
        echo "\033[31mE: Unable to locate package nosuch\033[0m"
        echo "The SSH command responded with a non-zero exit status." >&2; exit 1
      fi
      echo "==> $2: provisioned" ;;
    esac
    # a Vagrantfile that loads vagrant/lib/cdd_env.rb: its directory, then the machine's file
    if [ -f "$here/writes-ssh-config" ]; then
      mkdir -p "$CDD_SSH_CONFIG_DIR"
      printf 'Host %s\n  HostName 10.0.3.9\n' "$2" > "$CDD_SSH_CONFIG_DIR/$2"
    fi ;;
  status)
    echo "1,broker,provider-name,lxc"
    echo "1,broker,state,running"
    echo "1,database,provider-name,lxc"
    echo "1,database,state,not_created" ;;
  global-status)
    n=$(cat "$here/index-locked" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
      echo $((n - 1)) > "$here/index-locked"
      echo "Vagrant can't use the requested machine because it is locked! This"; exit 1
    fi
    printf 'id       name   provider state   directory\n---------------------------\n'
    printf '29bfa71  broker lxc      running /srv/shop\n \n' ;;
  destroy)
    [ -f "$here/destroy-fails" ] && { echo "The box is gone"; exit 1; }
    if [ -f "$here/destroy-locked" ]; then
      rm "$here/destroy-locked"
      echo "Vagrant can't use the requested machine because it is locked! This"; exit 1
    fi
    rm -rf "$here/running-$3" ".vagrant/machines/$3" ;;
  --version) echo "Vagrant 2.3.4" ;;
  plugin)
    nice > "$here/niceness"
    echo "vagrant-lxc (1.4.3, system)" ;;
esac
"""


@pytest.fixture
def fake_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = stand_in(tmp_path, "vagrant", SCRIPT)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def cli(tmp_path: Path) -> VagrantCli:
    return VagrantCli(tmp_path, "lxc", dict(os.environ), procs.new_registry())


def test_up_streams_to_the_log_and_the_display(tmp_path: Path, fake_vagrant: Path) -> None:
    lines: list[str] = []
    cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log", on_line=lines.append)
    assert lines == ["==> broker: Machine booted and ready!"]
    assert "up broker --provider=lxc --no-provision" in (fake_vagrant / "calls").read_text()
    assert "Machine booted" in (tmp_path / "up.log").read_text()


def provisioning(tmp_path: Path, timeout: float = 30) -> tuple[Provisioning, list[str]]:
    began: list[str] = []
    return Provisioning(timeout, tmp_path / "provision.log", lambda: began.append("now")), began


def test_up_that_provisions_is_one_vagrant_with_two_logs(tmp_path: Path,
                                                         fake_vagrant: Path) -> None:
    provision, began = provisioning(tmp_path)
    cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log", on_line=lambda _: None,
                     provision=provision)
    assert (fake_vagrant / "calls").read_text() == "up broker --provider=lxc --provision\n"
    assert began == ["now"]
    assert "Machine booted" in (tmp_path / "up.log").read_text()
    assert "Running provisioner" not in (tmp_path / "up.log").read_text()
    assert (tmp_path / "provision.log").read_text() == (
        "==> broker: Running provisioner: shell...\n==> broker: provisioned\n")


def test_a_provisioner_failing_inside_up_is_told_as_provision(tmp_path: Path,
                                                              fake_vagrant: Path) -> None:
    (fake_vagrant / "provision-fails").write_text("")
    (fake_vagrant / "up-noise").write_text("")
    provision, began = provisioning(tmp_path)
    with pytest.raises(VagrantError) as err:
        cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log",
                         on_line=lambda _: None, provision=provision)
    assert began == ["now"]
    assert str(err.value) == ("E: Unable to locate package nosuch "
                              "(vagrant provision broker exited 1)")


def test_provisioning_inside_up_keeps_its_own_timeout(tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "provision-hangs").write_text("")
    provision, _ = provisioning(tmp_path, timeout=1)
    with pytest.raises(VagrantError, match=r"^vagrant provision broker timed out after 1 s"):
        cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log",
                         on_line=lambda _: None, provision=provision)


def test_a_locked_machine_is_retried(tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "locked").write_text("2")
    cli(tmp_path).up("broker", timeout=60, log=tmp_path / "up.log", on_line=lambda _: None)
    assert (fake_vagrant / "calls").read_text().count("up broker") == 3


def test_a_machine_locked_once_made_is_made_anew(tmp_path: Path, fake_vagrant: Path) -> None:
    # the lock of Vagrant's machine index taken by a `global-status --prune` elsewhere, as
    # the container boots: an up run again on the running container would do nothing at all
    (fake_vagrant / "locked-once-booting").write_text("")
    provision, began = provisioning(tmp_path)
    lines: list[str] = []
    cli(tmp_path).up("broker", timeout=60, log=tmp_path / "up.log", on_line=lines.append,
                     provision=provision)
    assert (fake_vagrant / "calls").read_text().splitlines() == [
        "up broker --provider=lxc --provision", "destroy -f broker",
        "up broker --provider=lxc --provision"]
    assert began == ["now"]
    assert "retrying in 1 s" in (tmp_path / "up.log").read_text()
    assert "==> broker: provisioned" in (tmp_path / "provision.log").read_text()


def test_the_destroy_that_starts_a_machine_anew_waits_the_lock_out(tmp_path: Path,
                                                                    fake_vagrant: Path) -> None:
    (fake_vagrant / "locked-once-booting").write_text("")
    (fake_vagrant / "destroy-locked").write_text("")
    provision, _ = provisioning(tmp_path)
    cli(tmp_path).up("broker", timeout=60, log=tmp_path / "up.log", on_line=lambda _: None,
                     provision=provision)
    assert (fake_vagrant / "calls").read_text().splitlines()[1:] == [
        "destroy -f broker", "destroy -f broker", "up broker --provider=lxc --provision"]


def test_a_machine_locked_before_it_was_made_is_just_brought_up_again(
        tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "locked").write_text("1")
    provision, began = provisioning(tmp_path)
    cli(tmp_path).up("broker", timeout=60, log=tmp_path / "up.log", on_line=lambda _: None,
                     provision=provision)
    assert (fake_vagrant / "calls").read_text().splitlines() == [
        "up broker --provider=lxc --provision"] * 2
    assert began == ["now"]


def test_the_host_wide_index_is_read_once_no_machine_is_locked(tmp_path: Path,
                                                               fake_vagrant: Path) -> None:
    # pruning asks every machine's state: a run's `vagrant up` beside it holds one a moment
    (fake_vagrant / "index-locked").write_text("1")
    assert global_status(dict(os.environ), prune=True, timeout=30) == [
        GlobalEntry("29bfa71", "broker", "lxc", "running", "/srv/shop")]
    assert (fake_vagrant / "calls").read_text().splitlines() == ["global-status --prune"] * 2


def test_a_host_wide_destroy_that_fails_says_so_in_a_line(tmp_path: Path,
                                                          fake_vagrant: Path) -> None:
    (fake_vagrant / "destroy-fails").write_text("")
    with pytest.raises(VagrantError) as err:
        destroy_global("29bfa71", dict(os.environ), timeout=30)
    assert str(err.value) == "vagrant destroy 29bfa71 failed (exit 1): The box is gone"


def test_a_failure_raises_with_the_telling_line(tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "provision-fails").write_text("")
    provision, _ = provisioning(tmp_path)
    with pytest.raises(VagrantError) as err:
        cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log",
                         on_line=lambda _: None, provision=provision)
    # the cause first, Vagrant's boilerplate left to the output
    assert str(err.value) == ("E: Unable to locate package nosuch "
                              "(vagrant provision broker exited 1)")
    assert "non-zero exit status" in err.value.output


def test_timeout_kills_the_whole_process_tree(tmp_path: Path, fake_vagrant: Path) -> None:
    (fake_vagrant / "hang").write_text("")
    with pytest.raises(VagrantError, match="timed out after 1 s"):
        cli(tmp_path).up("broker", timeout=1, log=tmp_path / "up.log", on_line=lambda _: None)
    child = int((fake_vagrant / "child").read_text())
    assert not survives(child), f"grandchild {child} survived the timeout"


def test_status_is_parsed(tmp_path: Path, fake_vagrant: Path) -> None:
    states = {s.name: s.exists for s in cli(tmp_path).status(timeout=30)}
    assert states == {"broker": True, "database": False}


def test_box_as_vagrant_recorded_it(tmp_path: Path, fake_vagrant: Path) -> None:
    meta = tmp_path / ".vagrant" / "machines" / "broker" / "lxc" / "box_meta"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"name":"cdd/debian-bookworm","version":"0","provider":"lxc"}')
    assert cli(tmp_path).box("broker") == "cdd/debian-bookworm 0"
    assert cli(tmp_path).box("database") == ""


def test_a_machine_is_known_while_vagrant_holds_its_id(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the run's own state directory, given relative as a user may: Vagrant reads it from the
    # Vagrantfile's directory
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", "state")
    ident = tmp_path / "state" / "machines" / "broker" / "docker" / "id"
    ident.parent.mkdir(parents=True)
    ident.write_text("4f1c")
    vagrant = VagrantCli(tmp_path, "lxc", dict(os.environ), procs.new_registry())
    assert vagrant.known("broker")  # made by another provider: still Vagrant's to destroy
    ident.unlink()  # what `vagrant destroy` does once the machine is gone
    assert not vagrant.known("broker") and not vagrant.known("database")


def test_the_installation_is_vagrants_version_and_plugins(tmp_path: Path,
                                                         fake_vagrant: Path) -> None:
    assert cli(tmp_path).installation(timeout=30) == Installation(
        "2.3.4", (Package("vagrant-lxc", "1.4.3"),))


def test_what_only_the_inventory_waits_for_yields_the_cpu_to_the_builds(
        tmp_path: Path, fake_vagrant: Path) -> None:
    own = os.nice(0)
    cli(tmp_path).installation(timeout=30)
    assert int((fake_vagrant / "niceness").read_text()) == own + procs.BACKGROUND
    cli(tmp_path).up("broker", timeout=30, log=tmp_path / "up.log", on_line=lambda _: None)
    assert int((fake_vagrant / "up-niceness").read_text()) == own  # builds at full speed


@pytest.mark.parametrize(("output", "line"), [
    ("==> a: ok\nThe SSH command responded with a non-zero exit status.\n", "The SSH command"),
    ("\x1b[31mERROR: box not found\x1b[0m\n/usr/lib/ruby/x.rb:1\n", "ERROR: box not found"),
    ("", "no output"),
    ("just this\n", "just this"),
])
def test_last_error_line(output: str, line: str) -> None:
    assert last_error_line(output).startswith(line)


def test_an_lxc_container_without_an_address_is_explained() -> None:
    # vagrant-lxc's whole report when the bridge's DHCP server is gone
    output = ("==> alpha: Waiting for machine to boot. This may take a few minutes...\n"
              "There was an error executing lxc-info\n\n"
              "For more information on the failure, enable detailed logging by setting\n"
              "the environment variable VAGRANT_LOG to DEBUG.\n")
    line = last_error_line(output)
    assert line.startswith("There was an error executing lxc-info (the container got no IP")
    assert "dnsmasq" in line and "\n" not in line


def test_what_each_vagrant_up_wrote_of_reaching_its_machine_is_read_from_the_run_s_state(
        tmp_path: Path, fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", str(tmp_path / "run" / "vagrant"))
    vagrant = cli(tmp_path)
    assert not vagrant.writes_ssh_config()
    vagrant.up("broker", timeout=30, log=tmp_path / "up.log", on_line=lambda _: None)
    assert not vagrant.writes_ssh_config()
    assert vagrant.ssh_config_written(["broker"]) is None  # a Vagrantfile that does not

    (fake_vagrant / "writes-ssh-config").touch()
    vagrant.up("broker", timeout=30, log=tmp_path / "up.log", on_line=lambda _: None)
    assert vagrant.writes_ssh_config()
    assert (tmp_path / "run" / "vagrant" / "cdd-ssh-config" / "broker").is_file()
    assert vagrant.ssh_config_written(["broker"]) == "Host broker\n  HostName 10.0.3.9\n"
    assert vagrant.ssh_config_written(["broker", "database"]) is None  # not for every one
    vagrant.up("database", timeout=30, log=tmp_path / "up.log", on_line=lambda _: None)
    assert vagrant.ssh_config_written(["broker", "database"]) == (
        "Host broker\n  HostName 10.0.3.9\nHost database\n  HostName 10.0.3.9\n")
    assert "ssh-config" not in (fake_vagrant / "calls").read_text()

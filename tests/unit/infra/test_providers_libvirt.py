"""What a run leaves on libvirt, as `cdd destroy` and the reaper see it: its domains, the disks
of machines whose domain never got defined, and its private network; never the host's box copy
or management network. A fake `virsh` on PATH answers like libvirt 9 does."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdd_ci.infra import providers

RUN = "20261203082400-abc123"
OTHER = "20261203070000-def456"

VIRSH = f"""#!/bin/sh
log="$(dirname "$0")/calls"
echo "$*" >> "$log"
case "$*" in
  *" list --all --name") printf '%s\\n' cdd-{RUN}-alpha somebody-elses-vm "" ;;
  *" vol-list default")
    printf ' Name   Path\\n------------\\n'
    printf ' %s   /var/lib/libvirt/images/x\\n' cdd-{RUN}-alpha.img cdd-{RUN}-beta.img \\
      debian-VAGRANTSLASH-bookworm64_vagrant_box_image_0_1796286422_box.img cdd-{OTHER}-db.img ;;
  *" net-list --all --name") printf '%s\\n' default vagrant-libvirt cdd-{RUN}-private ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def virsh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake virsh; returns the file its calls are written to."""
    exe = tmp_path / "virsh"
    exe.write_text(VIRSH)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls"


def test_a_runs_domains_disks_and_network_are_found_and_nothing_of_the_hosts(
        virsh: Path) -> None:
    found = providers.find("libvirt", [RUN])

    assert [r.name for r in found] == [
        f"cdd-{RUN}-alpha", f"cdd-{RUN}-alpha.img", f"cdd-{RUN}-beta.img", f"cdd-{RUN}-private"]
    # beta's disk without a domain is beta's: a killed `up` left it
    assert {r.machine for r in found} == {"alpha", "beta", "private"}
    assert {r.run_id for r in providers.find("libvirt")} == {RUN, OTHER}


def test_each_kind_is_removed_with_its_own_command(
        virsh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "RETRY_DELAYS", (0.0,))
    found = {r.name: r for r in providers.find("libvirt", [RUN])}
    for name in (f"cdd-{RUN}-beta.img", f"cdd-{RUN}-private", f"cdd-{RUN}-alpha"):
        providers.stop(found[name])
        # the fake lists it still: a removal that did not remove says so
        with pytest.raises(RuntimeError, match="still there"):
            providers.remove(found[name])
    calls = virsh.read_text()
    assert f"vol-delete --pool default cdd-{RUN}-beta.img" in calls
    assert f"net-destroy cdd-{RUN}-private" in calls and f"net-undefine cdd-{RUN}-private" in calls
    assert f"undefine cdd-{RUN}-alpha --remove-all-storage --nvram" in calls
    assert f"-c qemu:///system destroy cdd-{RUN}-alpha" in calls


def test_only_libvirt_machines_are_left_for_vagrant_s_destroy_to_power_off() -> None:
    # vagrant-libvirt's destroy is a hard power-off; docker's waits for a polite stop
    assert providers.pulled_by_vagrant(providers.Resource("libvirt", "d", RUN, "alpha"))
    assert not providers.pulled_by_vagrant(providers.Resource("docker", "c", RUN, "alpha"))
    assert not providers.pulled_by_vagrant(providers.Resource("lxc", "c", RUN, "alpha"))

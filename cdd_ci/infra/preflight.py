"""Is this host's side of the provider ready? Only faults that Vagrant reports late, and in
words that hide them, are looked for here; Vagrant explains everything else well itself.

lxc: lxc-net's DHCP server (dnsmasq on lxcbr0). When it dies (with the session or boot that
started it), lxcbr0 and lxc-net's marker stay behind, and every container then waits half a
minute for an address before vagrant-lxc gives up with "There was an error executing lxc-info".
Looked at only when lxc-net was started here: a host whose containers use a bridge of the
admin's own is not second-guessed.
"""

from __future__ import annotations

from pathlib import Path

LXC_RUN = Path("/run/lxc")
PROC = Path("/proc")


def problem(provider: str, *, lxc_run: Path = LXC_RUN, proc: Path = PROC) -> str | None:
    """None when nothing is known to be wrong for `provider`, else one line saying what is."""
    if provider != "lxc" or not (lxc_run / "network_up").exists():
        return None
    if lxc_dhcp_pid(lxc_run=lxc_run, proc=proc) is not None:
        return None
    return ("lxc-net is started but its DHCP server (dnsmasq on lxcbr0) is not running, so no "
            "container would get an IP address: run scripts/setup-host.sh (or restart lxc-net)")


def lxc_dhcp_pid(*, lxc_run: Path = LXC_RUN, proc: Path = PROC) -> int | None:
    """The pid of lxc-net's dnsmasq if it is alive, else None."""
    try:
        pid = int((lxc_run / "dnsmasq.pid").read_text().strip())
        comm = (proc / str(pid) / "comm").read_text().strip()
        status = (proc / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return None
    # a killed dnsmasq lingers as a zombie where PID 1 reaps orphans lazily
    zombie = any(line.split()[1:2] == ["Z"] for line in status.splitlines()
                 if line.startswith("State:"))
    return pid if comm == "dnsmasq" and not zombie else None

#!/usr/bin/env bash
# setup-host.sh: prepare a Debian 12 host (run as root) to build cdd-ci's Vagrant environments.
#
#   sudo scripts/setup-host.sh [--provider lxc|docker|libvirt] [--rebuild] [--check]
#   eval "$(sudo scripts/setup-host.sh)"      # same, and take over the exported variables
#
# Every phase is idempotent and timed; when everything is in place the script takes seconds.
#   packages  apt-get install what is missing (vagrant, the provider, mmdebstrap, ...)
#   services  start what the provider needs, with or without systemd as PID 1:
#               lxc:    lxc-net (lxcbr0: DHCP + NAT to the outside) and the host bridge
#                       $CDD_LXC_BRIDGE (default cddbr0) that carries the machines' private
#                       network; it has no host address, every environment on it picks its own
#                       /24 (CDD_SUBNET), and iptables FORWARD accepts its traffic
#               docker: dockerd
#               libvirt: virtlogd, libvirtd, the storage pool `default` and the management
#                       network vagrant-libvirt (192.168.121.0/24, DHCP + NAT), kept between
#                       runs like lxcbr0; /dev/kvm made usable by libvirt's QEMU (group kvm)
#   box       build the Debian bookworm base from Debian's archive with mmdebstrap and register it:
#               lxc:    Vagrant box  cdd/debian-bookworm (provider lxc), systemd as PID 1
#               docker: image        cdd/debian-bookworm-ssh:12, sshd as PID 1
#               libvirt: Vagrant box $VM_BOX (provider libvirt), a real VM with systemd:
#                       an ext4 qcow2 disk and the Debian kernel booted directly, so no
#                       bootloader; then the acceleration: KVM when a probe boot of that kernel
#                       under KVM prints anything, else QEMU's software emulation (TCG)
#             skipped when the registered one carries the current recipe revision (stamp)
#   reaper    install cdd host-wide ($CDD_STATE_DIR/venv, from this checkout) and run `cdd reap`
#             where no job has to: every 15 minutes (a systemd timer where systemd runs, else
#             /etc/cron.d), and around every job of a self-hosted GitHub runner (its job-started
#             and job-completed hooks, set in the runner's .env), so the machines of a runner
#             that died, or of a workspace that was cleaned, are destroyed without waiting for
#             the next job in that workspace. It reaps the runs of root and of the user who ran
#             this through sudo. Skipped with --no-reaper.
#   check     (--check only) bring up a throwaway 2-machine environment, prove ssh, the private
#             network and access to Debian's archive, destroy it and make sure nothing is left
#
# Options:
#   --provider P   lxc (default; systemd guests: services behave as on a VM), docker (faster,
#                  no systemd in the guest) or libvirt (real VMs, each with its own kernel;
#                  slowest without KVM). Also read from CDD_PROVIDER.
#   --rebuild      rebuild and re-register the box/image even when it is current (not while
#                  environments are being created from it: the box is replaced in place)
#   --check        run the check phase (30-45 s on 2 vCPUs; about 2 min with libvirt on TCG)
#   --no-reaper    leave the reaper phase out
#   --runner-dir D the self-hosted runner's directory (where its .env is); by default the runner
#                  this runs under, if any (found from the process tree). Also CDD_RUNNER_DIR.
#   -h, --help     this text
#
# Logs go to stderr (and $CDD_STATE_DIR/log/). stdout carries only `export NAME=value` lines for
# the caller to eval. One run at a time per host (flock on $CDD_STATE_DIR/setup-host.lock).
#
# Environment (all optional):
#   CDD_STATE_DIR         state, logs, lock and revision stamps   (/var/lib/cdd-ci)
#   CDD_MIRROR            Debian mirror                             (http://deb.debian.org/debian)
#   CDD_SECURITY_MIRROR   Debian security mirror        (http://deb.debian.org/debian-security)
#   CDD_LXC_BRIDGE        host bridge for the private network (lxc) (cddbr0)
#   CDD_CHECK_SUBNET      private /24 used by --check                (192.168.62)
#   CDD_BOX               the libvirt box's name: the Vagrantfiles' default (debian/bookworm64)
#
# Exit status: 0 ready; 1 a phase failed (the FAIL line says which); 2 usage.
set -Eeuo pipefail

# Bump when the box recipe changes in a way the recipe hash below cannot see.
BOX_RECIPE_REV=1
BOX_NAME=cdd/debian-bookworm
DOCKER_IMAGE=cdd/debian-bookworm-ssh:12
# the name vagrant/lib/cdd_env.rb gives libvirt (and virtualbox) machines
VM_BOX="${CDD_BOX:-debian/bookworm64}"
SUITE=bookworm

PROVIDER="${CDD_PROVIDER:-lxc}"
STATE_DIR="${CDD_STATE_DIR:-/var/lib/cdd-ci}"
MIRROR="${CDD_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${CDD_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
LXC_BRIDGE="${CDD_LXC_BRIDGE:-cddbr0}"
CHECK_SUBNET="${CDD_CHECK_SUBNET:-192.168.62}"
REBUILD=0
CHECK=0
REAPER=1
RUNNER_DIR="${CDD_RUNNER_DIR:-}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --provider) [ $# -ge 2 ] || { echo "--provider needs a value" >&2; exit 2; }; PROVIDER="$2"; shift 2 ;;
    --provider=*) PROVIDER="${1#*=}"; shift ;;
    --rebuild) REBUILD=1; shift ;;
    --check|--smoke) CHECK=1; shift ;;
    --no-reaper) REAPER=0; shift ;;
    --runner-dir) [ $# -ge 2 ] || { echo "--runner-dir needs a value" >&2; exit 2; }; RUNNER_DIR="$2"; shift 2 ;;
    --runner-dir=*) RUNNER_DIR="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-host: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$PROVIDER" in
  lxc|docker|libvirt) ;;
  virtualbox)
    echo "setup-host: 'virtualbox' is not prepared by this script: install it on your runner and use" \
         "the public box debian/bookworm64 (see vagrant/openstack-base/README.md)" >&2
    exit 2 ;;
  *) echo "setup-host: --provider must be lxc, docker or libvirt (got '$PROVIDER')" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "setup-host: run as root (sudo $0 ...)" >&2; exit 2; }

export DEBIAN_FRONTEND=noninteractive
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export PATH="$PATH:/usr/sbin:/sbin"
# Debian's docker CLI matches Debian's dockerd; a static CLI in /usr/local/bin would shadow it.
# A one-entry directory in front of PATH prefers it without reordering the rest of PATH.
SHIM_DIR="$STATE_DIR/bin"
DOCKER=/usr/bin/docker

mkdir -p "$STATE_DIR"
LOG_DIR="$STATE_DIR/log"
mkdir -p "$LOG_DIR"

say()  { printf '[setup-host %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die()  { printf '[setup-host %s] FAIL: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; exit 1; }
trap 'rc=$?; say "FAIL: line $LINENO: $BASH_COMMAND (exit $rc)"' ERR

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
# phase NAME FUNCTION: run one phase, report and remember its wall time
phase() {
  local name="$1" t0; shift
  t0=$(now)
  "$@"
  local secs; secs=$(elapsed "$t0")
  TIMINGS+=("$name=${secs}s")
  say "phase $name done in ${secs}s"
}

# Cleanup actions registered by the phases, run once on exit (success or not).
CLEANUPS=()
on_exit() {
  local i
  for (( i=${#CLEANUPS[@]}-1; i>=0; i-- )); do eval "${CLEANUPS[$i]}" || true; done
}
trap on_exit EXIT

# One run at a time on this host: two CI jobs must not race on apt, the daemons or the box.
exec 9>"$STATE_DIR/setup-host.lock"
if ! flock -n 9; then
  say "another setup-host run holds $STATE_DIR/setup-host.lock; waiting (up to 30 min)"
  flock -w 1800 9 || die "timed out waiting for $STATE_DIR/setup-host.lock"
fi

# --------------------------------------------------------------------------------------------
# packages
# --------------------------------------------------------------------------------------------
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

ensure_packages() {
  local want=() missing=() p
  # python3-venv: the README's commands install cdd into .venv, which a fresh Debian cannot without it
  # postgresql: the tests start their own server (initdb + pg_ctl on a socket) for the shared
  # history; nothing here enables Debian's own cluster service
  want=(vagrant mmdebstrap debian-archive-keyring ca-certificates iptables iproute2 openssh-client rsync
        python3-venv postgresql)
  case "$PROVIDER" in
    lxc)    want+=(lxc vagrant-lxc dnsmasq-base redir) ;;
    docker) want+=(docker.io) ;;
    libvirt) want+=(libvirt-daemon-system libvirt-clients vagrant-libvirt qemu-system-x86 qemu-utils
                    dnsmasq-base e2fsprogs) ;;
  esac
  for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    say "packages: all present (${want[*]})"
  else
    say "packages: installing ${missing[*]}"
    # Nothing may start a daemon while dpkg runs: this script starts what it needs itself, and a
    # daemon started here would inherit the lock (fd 9) and hold it forever.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\n# cdd-ci setup-host: no service starts during package installation\nexit 101\n' \
        > /usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      CLEANUPS+=("grep -q 'cdd-ci setup-host' /usr/sbin/policy-rc.d && rm -f /usr/sbin/policy-rc.d")
    fi
    local attempt ok=0 log="$LOG_DIR/apt.log"
    for attempt in 1 2 3; do
      if timeout 300 apt-get update -q >"$log" 2>&1 9>&- \
         && timeout 900 apt-get install -y -q --no-install-recommends \
              -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
              "${missing[@]}" >>"$log" 2>&1 9>&-; then
        ok=1; break
      fi
      say "packages: attempt $attempt failed (log: $log); retrying in $((attempt * 5))s"
      sleep $((attempt * 5))
    done
    [ "$ok" = 1 ] || { tail -n 25 "$log" >&2; die "packages: apt-get install ${missing[*]} failed 3 times"; }
  fi
  local v
  v="vagrant $(dpkg-query -W -f='${Version}' vagrant)"
  case "$PROVIDER" in
    lxc)    v+=", lxc $(lxc-start --version), vagrant-lxc $(dpkg-query -W -f='${Version}' vagrant-lxc)" ;;
    docker) v+=", docker.io $(dpkg-query -W -f='${Version}' docker.io)" ;;
    libvirt) v+=", libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon), qemu $(dpkg-query -W -f='${Version}' qemu-system-x86), vagrant-libvirt $(dpkg-query -W -f='${Version}' vagrant-libvirt)" ;;
  esac
  say "packages: $v"
}

# --------------------------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------------------------
init_is_systemd() { [ -d /run/systemd/system ] && [ "$(ps -o comm= -p 1 2>/dev/null)" = systemd ]; }

# iptables -I CHAIN RULE..., unless the rule is already there
ensure_rule() {
  local chain="$1"; shift
  iptables -w 10 -C "$chain" "$@" 2>/dev/null || iptables -w 10 -I "$chain" 1 "$@"
}

# lxc-net's dnsmasq, alive: the bridge and lxc-net's marker outlive it when the process is
# killed (a runner's session ending takes it along), and a container that gets no DHCP lease
# fails vagrant-lxc's wait for an address with a bare "error executing lxc-info".
lxc_dhcp_alive() {
  local pid
  pid=$(cat /run/lxc/dnsmasq.pid 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ] || return 1
  # a killed dnsmasq can linger as a zombie: PID 1 here reaps orphans only lazily
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

start_lxc_net() {
  # lxcbr0 (10.0.3.1/24): every container's eth0 gets DHCP and NAT to the outside from lxc-net
  if ip link show lxcbr0 >/dev/null 2>&1 && [ -e /run/lxc/network_up ] && lxc_dhcp_alive; then
    say "services: lxc-net already up"
  elif init_is_systemd; then
    say "services: systemctl restart lxc-net"
    timeout 60 systemctl restart lxc-net 9>&-
  else
    if [ -e /run/lxc/network_up ]; then
      # half up: lxc-net refuses to start again until it has been stopped
      say "services: lxc-net's DHCP server is gone: stopping lxc-net to start it again"
      timeout 60 /usr/libexec/lxc/lxc-net stop 9>&- >"$LOG_DIR/lxc-net.log" 2>&1 || true
    fi
    say "services: starting lxc-net by hand (PID 1 is not systemd)"
    timeout 60 /usr/libexec/lxc/lxc-net start 9>&- >"$LOG_DIR/lxc-net.log" 2>&1 \
      || { cat "$LOG_DIR/lxc-net.log" >&2; die "services: lxc-net start failed"; }
  fi
  ip link show lxcbr0 >/dev/null 2>&1 || die "services: lxcbr0 is missing after starting lxc-net"
  lxc_dhcp_alive || die "services: lxc-net started but its DHCP server (dnsmasq) is not running"

  # The private network: each machine gets a second NIC (eth1) on this bridge through the
  # Vagrantfile's lxc.net.1.* keys (vagrant-lxc's own private_network relies on pipework, which
  # cannot find LXC 5 containers). The guests address eth1 themselves, so the bridge needs no
  # address and any number of environments can share it, each on its own /24 (CDD_SUBNET).
  if ! ip link show "$LXC_BRIDGE" >/dev/null 2>&1; then
    say "services: creating bridge $LXC_BRIDGE"
    ip link add name "$LXC_BRIDGE" type bridge 2>/dev/null \
      || ip link show "$LXC_BRIDGE" >/dev/null 2>&1   # lost a race with another creator: fine
  fi
  ip link set "$LXC_BRIDGE" up

  # dockerd (if it ever runs here) sets the FORWARD policy to DROP, and with br_netfilter the
  # frames crossing a bridge go through FORWARD too: let the machines talk to each other on the
  # private bridge and reach the outside through lxcbr0 whatever the policy is.
  ensure_rule FORWARD -i "$LXC_BRIDGE" -o "$LXC_BRIDGE" -j ACCEPT
  ensure_rule FORWARD -i lxcbr0 -j ACCEPT
  ensure_rule FORWARD -o lxcbr0 -j ACCEPT
  say "services: lxcbr0 $(ip -4 -o addr show dev lxcbr0 | awk '{print $4}'), bridge $LXC_BRIDGE up"
}

start_dockerd() {
  if [ -x /usr/local/bin/docker ] && [ "$(readlink -f /usr/local/bin/docker)" != "$DOCKER" ]; then
    mkdir -p "$SHIM_DIR"
    ln -sfn "$DOCKER" "$SHIM_DIR/docker"
  fi
  if timeout 20 "$DOCKER" info >/dev/null 2>&1; then say "services: dockerd already running"; return 0; fi
  if init_is_systemd; then
    say "services: systemctl start docker"
    timeout 120 systemctl start docker 9>&-
  else
    local pidfile=/var/run/docker.pid
    if [ -s "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
    say "services: starting dockerd by hand (PID 1 is not systemd; log: $LOG_DIR/dockerd.log)"
    # own session, no terminal, and without fd 9: it must outlive this script and not keep the lock
    setsid dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
  fi
  local i
  for i in $(seq 60); do
    if timeout 10 "$DOCKER" info >/dev/null 2>&1; then say "services: dockerd ready after ${i}s"; return 0; fi
    sleep 1
  done
  tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
  die "services: dockerd did not answer within 60 s"
}

VIRSH=(virsh -c qemu:///system)
LIBVIRT_DIR="$STATE_DIR/libvirt"
MGMT_NET=vagrant-libvirt   # vagrant-libvirt's default management network, name and address
MGMT_PREFIX=192.168.121

virsh_() { timeout 60 "${VIRSH[@]}" "$@" 9>&-; }

start_libvirtd() {
  # Without udev /dev/kvm stays root-only: libvirt then finds KVM "enabled when probing but not
  # available now" and probes QEMU again on every call, which makes each define or start take
  # about 50 s. udev's own rule: group kvm, mode 0660. Whether guests use KVM is decided by the
  # box phase; this only stops the probing.
  if [ -c /dev/kvm ] && getent group kvm >/dev/null \
     && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    say "services: /dev/kvm set to group kvm, mode 0660 (what udev does)"
  fi
  if init_is_systemd; then
    if ! virsh_ version >/dev/null 2>&1; then
      say "services: systemctl start virtlogd libvirtd"
      timeout 120 systemctl start virtlogd libvirtd 9>&-
    fi
  else
    # Ask the daemons' sockets, not the process list: a dead daemon can linger as a zombie
    # here, where PID 1 reaps orphans only lazily.
    mkdir -p /run/libvirt
    if ! timeout 20 virt-admin -c virtlogd:///system server-list >/dev/null 2>&1; then
      say "services: starting virtlogd by hand (PID 1 is not systemd)"
      setsid virtlogd -d </dev/null >/dev/null 2>&1 9>&-
    fi
    if ! virsh_ version >/dev/null 2>&1; then
      say "services: starting libvirtd by hand (PID 1 is not systemd)"
      setsid libvirtd -d </dev/null >/dev/null 2>&1 9>&-
    fi
  fi
  local i
  for i in $(seq 30); do virsh_ version >/dev/null 2>&1 && break; sleep 1; done
  virsh_ version >/dev/null 2>&1 || die "services: libvirtd did not answer within 30 s"

  # vagrant-libvirt keeps the machines' disks and its copy of the box in the pool `default`
  if ! virsh_ pool-info default >/dev/null 2>&1; then
    say "services: defining storage pool default (/var/lib/libvirt/images)"
    mkdir -p /var/lib/libvirt/images
    virsh_ pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
    virsh_ pool-autostart default >/dev/null
  fi
  # here-strings, not `virsh ... | grep -q`: grep quitting early makes virsh fail with SIGPIPE
  grep -q 'State: *running' <<<"$(virsh_ pool-info default)" || virsh_ pool-start default >/dev/null

  # The management network every machine's eth0 is on (DHCP, NAT to the outside). It is the
  # host's, like lxcbr0: the Vagrantfiles keep it (management_network_keep), so no run's
  # destroy takes it away from a run still using it, and no two parallel `vagrant up` race to
  # create it. Its definition is vagrant-libvirt's own.
  if ! virsh_ net-info "$MGMT_NET" >/dev/null 2>&1; then
    say "services: defining network $MGMT_NET ($MGMT_PREFIX.0/24, DHCP + NAT)"
    local xml="$LIBVIRT_DIR/$MGMT_NET.xml"
    mkdir -p "$LIBVIRT_DIR"
    cat >"$xml" <<NET
<network ipv6='yes'>
  <name>$MGMT_NET</name>
  <forward mode='nat'/>
  <ip address='$MGMT_PREFIX.1' netmask='255.255.255.0'>
    <dhcp><range start='$MGMT_PREFIX.1' end='$MGMT_PREFIX.254'/></dhcp>
  </ip>
</network>
NET
    virsh_ net-define "$xml" >/dev/null
    virsh_ net-autostart "$MGMT_NET" >/dev/null
  fi
  grep -q 'Active: *yes' <<<"$(virsh_ net-info "$MGMT_NET")" || virsh_ net-start "$MGMT_NET" >/dev/null
  # dockerd (if it ever runs here) sets the FORWARD policy to DROP
  local bridge; bridge=$(virsh_ net-info "$MGMT_NET" | awk '/^Bridge:/ {print $2}')
  ensure_rule FORWARD -i "$bridge" -j ACCEPT
  ensure_rule FORWARD -o "$bridge" -j ACCEPT
  say "services: libvirt $(virsh_ version --daemon | awk '/daemon/ {print $NF}'), pool default," \
      "network $MGMT_NET on $bridge"
}

ensure_services() {
  case "$PROVIDER" in
    lxc) start_lxc_net ;;
    docker) start_dockerd ;;
    libvirt) start_libvirtd ;;
  esac
}

# --------------------------------------------------------------------------------------------
# box: Debian bookworm from Debian's archive (mmdebstrap), never downloaded from a box catalog
# --------------------------------------------------------------------------------------------
BASE_PACKAGES=openssh-server,sudo,python3,iproute2,iputils-ping,procps,netbase,ca-certificates,less,curl
LXC_PACKAGES=systemd-sysv,systemd-resolved,dbus

vagrant_public_key() {
  local key
  key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1)
  [ -n "$key" ] || die "box: Vagrant's insecure public key (keys/vagrant.pub) not found in the vagrant package"
  printf '%s\n' "$key"
}

# mmdebstrap arguments shared by both flavours: a minimal Debian with a `vagrant` user that logs in
# with Vagrant's well-known key (Vagrant swaps it for a per-machine key on first boot).
base_hooks() {
  local key="$1"
  BOX_ARGS=(
    --variant=minbase --mode=root --quiet --components=main
    --include="$BASE_PACKAGES"
    # apt in the guest: a few retries against a flaky mirror, no recommends unless asked for
    --customize-hook='printf "%s\n" "Acquire::Retries \"5\";" "APT::Install-Recommends \"false\";" > "$1/etc/apt/apt.conf.d/80cdd"'
    --customize-hook='chroot "$1" useradd --create-home --shell /bin/bash --user-group vagrant'
    --customize-hook='echo vagrant:vagrant | chroot "$1" chpasswd'
    --customize-hook="install -d -m 0700 \"\$1/home/vagrant/.ssh\" && install -m 0600 '$key' \"\$1/home/vagrant/.ssh/authorized_keys\""
    --customize-hook='chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh'
    --customize-hook='printf "vagrant ALL=(ALL) NOPASSWD: ALL\n" > "$1/etc/sudoers.d/vagrant" && chmod 0440 "$1/etc/sudoers.d/vagrant"'
    --customize-hook='printf "UseDNS no\n" > "$1/etc/ssh/sshd_config.d/cdd.conf"'
    # every machine makes its own host keys on its first boot
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*'
    # mmdebstrap copies the build host's /etc/hostname; Vagrant sets the real name at boot
    --customize-hook='echo debian > "$1/etc/hostname" && printf "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"'
    # an empty machine-id: each machine gets its own (DHCP client ids and journald depend on it)
    --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"'
    --customize-hook="echo 'cdd-ci box $SUITE revision $BOX_REV' > \"\$1/etc/cdd-box\""
  )
}

# What makes a systemd guest behave inside an LXC container, applied to the unpacked rootfs.
lxc_tune_rootfs() {
  local root="$1"
  # systemd-networkd + resolved, not ifupdown: Vagrant's Debian hostname step restarts the
  # network service, and ifup@eth0 cannot be restarted in a container without udev.
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    >"$root/etc/systemd/network/10-cdd-eth0.network"
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

  # ssh host keys are made at first boot, before sshd starts
  cat >"$root/etc/systemd/system/cdd-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys (cdd-ci box)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service multi-user.target
EOF

  # The private address. The Vagrantfile hands it to the container as CDD_PRIVATE_ADDRESS
  # (lxc.environment, seen by PID 1). It goes on eth1 only once eth0 has its DHCP lease: the
  # first address vagrant-lxc finds (lxc-info -i) is then always eth0's, which the host reaches
  # through lxcbr0, whatever subnet the private network uses and without a host address on it.
  cat >"$root/usr/local/sbin/cdd-private-net" <<'EOF'
#!/bin/sh
# cdd-ci box: put CDD_PRIVATE_ADDRESS (e.g. 192.168.57.11/24) on CDD_PRIVATE_IFACE (eth1) once
# eth0 has its DHCP address. Runs at every boot; does nothing when the variable is not set.
set -eu
addr="${CDD_PRIVATE_ADDRESS:-}"
iface="${CDD_PRIVATE_IFACE:-eth1}"
[ -n "$addr" ] || exit 0
i=0
while [ "$i" -lt 60 ] && [ -z "$(ip -4 -o addr show dev eth0 scope global 2>/dev/null)" ]; do
  sleep 0.5; i=$((i + 1))
done
mkdir -p /run/systemd/network
printf '[Match]\nName=%s\n\n[Network]\nAddress=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n[Link]\nRequiredForOnline=no\n' \
  "$iface" "$addr" >/run/systemd/network/20-cdd-private.network
networkctl reload
i=0
while [ "$i" -lt 40 ]; do
  ip -4 -o addr show dev "$iface" | grep -q " ${addr%/*}/" && exit 0
  sleep 0.25; i=$((i + 1))
done
echo "cdd-private-net: $addr did not appear on $iface" >&2
exit 1
EOF
  chmod 0755 "$root/usr/local/sbin/cdd-private-net"
  cat >"$root/etc/systemd/system/cdd-private-net.service" <<'EOF'
[Unit]
Description=Private network address from the container configuration (cdd-ci box)
After=systemd-networkd.service
Wants=systemd-networkd.service

[Service]
Type=oneshot
RemainAfterExit=yes
PassEnvironment=CDD_PRIVATE_ADDRESS CDD_PRIVATE_IFACE
ExecStart=/usr/local/sbin/cdd-private-net

[Install]
WantedBy=multi-user.target
EOF
  chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service \
    cdd-ssh-hostkeys.service cdd-private-net.service >/dev/null 2>&1
}

# The revision of this provider's recipe: a manual number plus a hash of the functions that
# build it, so that any change to the recipe rebuilds the box on the next run.
recipe_rev() {
  local h fns=(base_hooks run_mmdebstrap)
  case "$PROVIDER" in
    lxc)    fns+=(lxc_tune_rootfs build_lxc_box) ;;
    docker) fns+=(build_docker_image) ;;
    libvirt) fns+=(libvirt_tune_rootfs build_libvirt_box) ;;
  esac
  local extra=""
  [ "$PROVIDER" = libvirt ] && extra=" $LIBVIRT_PACKAGES $KERNEL_CMDLINE $VM_BOX"
  h=$( { echo "$BOX_RECIPE_REV $PROVIDER $SUITE $MIRROR $SECURITY_MIRROR $BASE_PACKAGES $LXC_PACKAGES$extra"
         declare -f "${fns[@]}"; } | sha256sum | cut -c1-12)
  printf '%s-%s\n' "$BOX_RECIPE_REV" "$h"
}

run_mmdebstrap() {  # run_mmdebstrap TARGET [FORMAT]
  local target="$1"
  timeout 1200 mmdebstrap "${BOX_ARGS[@]}" "$SUITE" "$target" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" 9>&-
}

build_lxc_box() {
  local stamp="$STATE_DIR/box-lxc.rev"
  # The registered box carries its revision in metadata.json; reading it is much faster than
  # asking `vagrant box list` (about a second of Ruby start-up).
  local boxes="${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${BOX_NAME//\//-VAGRANTSLASH-}"
  if [ "$REBUILD" = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$BOX_REV" ] \
     && grep -qs "\"cdd-revision\": \"$BOX_REV\"" "$boxes"/*/lxc/metadata.json; then
    say "box: $BOX_NAME (lxc) is current (revision $BOX_REV)"
    return 0
  fi
  local work key
  work=$(mktemp -d "$STATE_DIR/build-lxc.XXXXXX")
  CLEANUPS+=("rm -rf '$work'")
  key=$(vagrant_public_key)
  say "box: building $BOX_NAME (lxc) revision $BOX_REV from $MIRROR (log: $LOG_DIR/mmdebstrap-lxc.log)"
  base_hooks "$key"
  BOX_ARGS+=(--include="$LXC_PACKAGES")
  mkdir -p "$work/box"
  run_mmdebstrap "$work/box/rootfs" >"$LOG_DIR/mmdebstrap-lxc.log" 2>&1 \
    || { tail -n 25 "$LOG_DIR/mmdebstrap-lxc.log" >&2; die "box: mmdebstrap failed"; }
  lxc_tune_rootfs "$work/box/rootfs"
  # vagrant-lxc's template unpacks with --strip-components=2: entries must read ./rootfs/...
  # Keep extended attributes: without them ping loses cap_net_raw.
  tar -C "$work/box" --numeric-owner --xattrs --xattrs-include='*' -czf "$work/rootfs.tar.gz" ./rootfs
  rm -rf "$work/box"
  # No "template-opts" here: the plugin's template rejects the --arch/--release it would add.
  printf '{"provider": "lxc", "version": "1.0.0", "built-on": "%s", "cdd-revision": "%s"}\n' \
    "$(date -u +%FT%TZ)" "$BOX_REV" >"$work/metadata.json"
  cat >"$work/lxc-config" <<'EOF'
# cdd-ci box: privileged system container, systemd as PID 1
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = x86_64
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed
EOF
  tar -C "$work" -cf "$work/cdd-debian-bookworm-lxc.box" metadata.json rootfs.tar.gz lxc-config
  timeout 600 vagrant box add --force --name "$BOX_NAME" --provider lxc \
    "$work/cdd-debian-bookworm-lxc.box" >"$LOG_DIR/box-add.log" 2>&1 9>&- \
    || { tail -n 20 "$LOG_DIR/box-add.log" >&2; die "box: vagrant box add failed"; }
  echo "$BOX_REV" >"$stamp"
  say "box: registered $(grep "^$BOX_NAME (lxc," <<<"$(timeout 60 vagrant box list)") $(du -h "$work/cdd-debian-bookworm-lxc.box" | cut -f1)"
}

build_docker_image() {
  local current
  current=$(timeout 30 "$DOCKER" image inspect -f '{{ index .Config.Labels "cdd.box.rev" }}' "$DOCKER_IMAGE" 2>/dev/null || true)
  if [ "$REBUILD" = 0 ] && [ "$current" = "$BOX_REV" ]; then
    say "box: image $DOCKER_IMAGE is current (revision $BOX_REV)"
    echo "$BOX_REV" >"$STATE_DIR/box-docker.rev"
    return 0
  fi
  local key
  key=$(vagrant_public_key)
  say "box: building image $DOCKER_IMAGE revision $BOX_REV from $MIRROR (log: $LOG_DIR/mmdebstrap-docker.log)"
  base_hooks "$key"
  # sshd is PID 1: no systemd. Host keys are made when the container starts; Docker manages
  # /etc/hosts, /etc/hostname and /etc/resolv.conf.
  run_mmdebstrap - 2>"$LOG_DIR/mmdebstrap-docker.log" --format=tar \
    | timeout 600 "$DOCKER" import \
        --change 'CMD ["/bin/sh", "-c", "ssh-keygen -A >/dev/null && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"]' \
        --change 'EXPOSE 22' \
        --change "LABEL cdd.box.rev=$BOX_REV" \
        --change "LABEL cdd.box.suite=$SUITE" \
        - "$DOCKER_IMAGE" >/dev/null 9>&- \
    || { tail -n 25 "$LOG_DIR/mmdebstrap-docker.log" >&2; die "box: building $DOCKER_IMAGE failed"; }
  # the image this one replaced is now untagged: drop it
  timeout 120 "$DOCKER" image prune -f --filter "label=cdd.box.suite=$SUITE" >/dev/null 9>&- || true
  echo "$BOX_REV" >"$STATE_DIR/box-docker.rev"
  say "box: $(timeout 30 "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$DOCKER_IMAGE")"
}

# What makes the rootfs boot as a VM: the kernel is booted directly from the host (no bootloader,
# no partition table), / is the whole virtio disk, and eth0 gets DHCP from the management network.
LIBVIRT_PACKAGES=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,systemd-resolved,dbus,rsync
KERNEL_CMDLINE="root=/dev/vda rw console=ttyS0 net.ifnames=0"

libvirt_tune_rootfs() {
  local root="$1"
  echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
  # systemd-networkd, so that Vagrant's Debian guest writes the private network as networkd files
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-cdd-eth0.network"
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
  # each machine makes its own ssh host keys at its first boot, before sshd starts
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$root/etc/systemd/system/ssh.service.d/cdd-hostkeys.conf"
  chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
}

box_volume_prefix() { printf '%s_vagrant_box_image_' "${VM_BOX//\//-VAGRANTSLASH-}"; }

# The pool volume vagrant-libvirt would upload the box to on a machine's first `up`. Uploaded
# here instead: two machines brought up at once by separate `vagrant up` processes would both
# upload it (its lock is per process), and the second would boot from a half-written image.
upload_box_volume() {
  local img="$1" name size old
  # vagrant-libvirt's name for it: a box without a version is named after its image's mtime
  name="$(box_volume_prefix)0_$(stat -c %Y "$img")_box.img"
  if ! virsh_ vol-info --pool default "$name" >/dev/null 2>&1; then
    size=$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    virsh_ vol-create-as default "$name" "${size}b" --format qcow2 >/dev/null
    timeout 600 "${VIRSH[@]}" vol-upload --pool default "$name" "$img" 9>&- \
      || { virsh_ vol-delete --pool default "$name" >/dev/null 2>&1 || true; die "box: uploading $name to pool default failed"; }
  fi
  # the copies of boxes this one replaced, unless a machine still boots from one
  for old in $(awk -v p="$(box_volume_prefix)" 'NR > 2 && index($1, p) == 1 {print $1}' <<<"$(virsh_ vol-list default)"); do
    [ "$old" = "$name" ] && continue
    virsh_ vol-delete --pool default "$old" >/dev/null 2>&1 || say "box: $old is still in use: left in the pool"
  done
  BOX_VOLUME="$name"
}

# KVM when this host's KVM boots the box's kernel (a nested KVM such as PVM may run only kernels
# built for it, and then prints nothing); else QEMU's software emulation. The answer is cached
# per host kernel and box kernel, in the file the box's Vagrantfile reads.
choose_acceleration() {
  local kernel="$LIBVIRT_DIR/vmlinuz" key out accel=qemu why
  key="$(uname -r) $(sha256sum "$kernel" | cut -c1-16) $([ -c /dev/kvm ] && stat -c %G:%a /dev/kvm || echo no-kvm)"
  if [ "$REBUILD" = 0 ] && [ "$(cut -d' ' -f2- "$LIBVIRT_DIR/accel" 2>/dev/null)" = "$key" ]; then
    accel=$(cut -d' ' -f1 "$LIBVIRT_DIR/accel")
    if [ "$accel" = kvm ]; then accel=KVM; else accel="TCG, QEMU's software emulation"; fi
    say "box: acceleration $accel (probed before on this host kernel, for this box kernel)"
    return 0
  fi
  if [ ! -c /dev/kvm ]; then
    why="no /dev/kvm"
  elif ! virsh_ domcapabilities --virttype kvm >/dev/null 2>&1; then
    why="libvirt offers no kvm domains"
  else
    # no root file system: a kernel that runs ends in a panic within seconds, and -no-reboot
    # turns the panic's reboot into QEMU's exit
    out=$(timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
            -display none -serial stdio -no-reboot -kernel "$kernel" \
            -append "console=ttyS0 panic=-1 root=/dev/cdd-probe-none" </dev/null 2>&1 9>&- || true)
    if grep -q 'Kernel panic' <<<"$out"; then
      accel=kvm why="a probe boot under KVM ran the kernel"
    else
      why="KVM is there but a probe boot of the box's kernel under it printed nothing in 30 s"
    fi
  fi
  echo "$accel $key" >"$LIBVIRT_DIR/accel"
  if [ "$accel" = kvm ]; then
    say "box: acceleration KVM ($why)"
  else
    say "box: acceleration TCG, QEMU's software emulation ($why): machines boot in about 20 s, and run several times slower than on KVM"
  fi
}

build_libvirt_box() {
  local stamp="$STATE_DIR/box-libvirt.rev"
  local boxes="${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${VM_BOX//\//-VAGRANTSLASH-}"
  mkdir -p "$LIBVIRT_DIR"
  if [ "$REBUILD" = 0 ] && [ -d "$boxes" ] && ls "$boxes"/*/libvirt/metadata.json >/dev/null 2>&1 \
     && ! grep -qs '"cdd-revision"' "$boxes"/*/libvirt/metadata.json; then
    say "box: $VM_BOX (libvirt) is registered and was not built here: left as it is (--rebuild replaces it)"
    return 0
  fi
  if [ "$REBUILD" = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$BOX_REV" ] \
     && grep -qs "\"cdd-revision\": \"$BOX_REV\"" "$boxes"/*/libvirt/metadata.json \
     && [ -s "$LIBVIRT_DIR/vmlinuz" ] && [ -s "$LIBVIRT_DIR/initrd.img" ]; then
    upload_box_volume "$(ls "$boxes"/*/libvirt/box.img | head -n 1)"
    say "box: $VM_BOX (libvirt) is current (revision $BOX_REV), in pool default as $BOX_VOLUME"
    choose_acceleration
    return 0
  fi
  local work key
  work=$(mktemp -d "$STATE_DIR/build-libvirt.XXXXXX")
  CLEANUPS+=("rm -rf '$work'")
  key=$(vagrant_public_key)
  say "box: building $VM_BOX (libvirt) revision $BOX_REV from $MIRROR (log: $LOG_DIR/mmdebstrap-libvirt.log)"
  base_hooks "$key"
  BOX_ARGS+=(--include="$LIBVIRT_PACKAGES")
  run_mmdebstrap "$work/rootfs" >"$LOG_DIR/mmdebstrap-libvirt.log" 2>&1 \
    || { tail -n 25 "$LOG_DIR/mmdebstrap-libvirt.log" >&2; die "box: mmdebstrap failed"; }
  libvirt_tune_rootfs "$work/rootfs"
  # the kernel and initrd stay on the host, where the box's Vagrantfile points libvirt to them
  install -m 644 "$(ls "$work"/rootfs/boot/vmlinuz-* | head -n 1)" "$LIBVIRT_DIR/vmlinuz"
  install -m 644 "$(ls "$work"/rootfs/boot/initrd.img-* | head -n 1)" "$LIBVIRT_DIR/initrd.img"
  # an ext4 file system filling the whole disk, made from the directory: no loop device needed
  truncate -s 4G "$work/disk.raw"
  mkfs.ext4 -q -F -L cddroot -d "$work/rootfs" "$work/disk.raw"
  rm -rf "$work/rootfs"
  timeout 600 qemu-img convert -c -O qcow2 "$work/disk.raw" "$work/box.img"
  rm -f "$work/disk.raw"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": 4, "built-on": "%s", "cdd-revision": "%s"}\n' \
    "$(date -u +%FT%TZ)" "$BOX_REV" >"$work/metadata.json"
  # Merged under the project's Vagrantfiles. The acceleration is read when Vagrant loads it, so
  # the same box follows what choose_acceleration found on this host.
  cat >"$work/Vagrantfile" <<EOF
# cdd-ci box (scripts/setup-host.sh --provider libvirt): Debian $SUITE, direct kernel boot
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    accel = File.read("$LIBVIRT_DIR/accel").split.first rescue "qemu"
    lv.driver = accel == "kvm" ? "kvm" : "qemu"
    if accel == "kvm"
      lv.cpu_mode = "host-passthrough"
    else
      lv.cpu_mode = "custom"
      lv.cpu_model = "qemu64"
    end
    lv.kernel = "$LIBVIRT_DIR/vmlinuz"
    lv.initrd = "$LIBVIRT_DIR/initrd.img"
    lv.cmd_line = "$KERNEL_CMDLINE"
    lv.graphics_type = "none"
    lv.video_type = "none"
  end
end
EOF
  tar -C "$work" -cf "$work/cdd-debian-bookworm-libvirt.box" metadata.json Vagrantfile box.img
  rm -f "$work/box.img"
  timeout 600 vagrant box add --force --name "$VM_BOX" --provider libvirt \
    "$work/cdd-debian-bookworm-libvirt.box" >"$LOG_DIR/box-add.log" 2>&1 9>&- \
    || { tail -n 20 "$LOG_DIR/box-add.log" >&2; die "box: vagrant box add failed"; }
  upload_box_volume "$(ls "$boxes"/*/libvirt/box.img | head -n 1)"
  echo "$BOX_REV" >"$stamp"
  say "box: registered $(grep -E "^$VM_BOX +\(libvirt," <<<"$(timeout 60 vagrant box list)")" \
      "$(du -h "$work/cdd-debian-bookworm-libvirt.box" | cut -f1), in pool default as $BOX_VOLUME"
  choose_acceleration
}

ensure_box() {
  case "$PROVIDER" in
    lxc) build_lxc_box ;;
    docker) build_docker_image ;;
    libvirt) build_libvirt_box ;;
  esac
}

# --------------------------------------------------------------------------------------------
# check: a throwaway 2-machine environment, up in parallel like cdd does it, then destroyed
# --------------------------------------------------------------------------------------------
CHECK_DIR="" CHECK_RUN=""
check_leftovers() {
  case "$PROVIDER" in
    lxc)    lxc-ls -1 2>/dev/null | grep "^cdd-$CHECK_RUN-" || true ;;
    docker)
      timeout 30 "$DOCKER" ps -aq --filter "label=cdd.run=$CHECK_RUN" 2>/dev/null || true
      timeout 30 "$DOCKER" network ls -q --filter "name=vagrant_network_$CHECK_SUBNET.0/24" 2>/dev/null || true ;;
    libvirt)
      # domains, their disks and the run's private network are all named cdd-<run>-...
      virsh_ list --all --name 2>/dev/null | grep "^cdd-$CHECK_RUN-" || true
      virsh_ vol-list default 2>/dev/null | awk -v p="cdd-$CHECK_RUN-" 'NR > 2 && index($1, p) == 1 {print $1}' || true
      virsh_ net-list --all --name 2>/dev/null | grep "^cdd-$CHECK_RUN-" || true ;;
  esac
}

check_teardown() {
  [ -n "$CHECK_DIR" ] && [ -d "$CHECK_DIR" ] || return 0
  if [ -d "$CHECK_DIR/.vagrant" ]; then
    (cd "$CHECK_DIR" && timeout 300 vagrant destroy -f >>"$CHECK_DIR/destroy.log" 2>&1 9>&-) || true
  fi
  rm -rf "$CHECK_DIR"
}

write_check_vagrantfile() {
  # the environments' own provider blocks, so the check proves what cdd's runs will use
  local lib
  lib="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/vagrant/lib/cdd_env"
  cat >"$1/Vagrantfile" <<EOF
# setup-host.sh --check: two bare machines, named like cdd names them
require "$lib"
SUBNET = ENV.fetch("CDD_SUBNET")
Vagrant.configure("2") do |config|
  CddEnv.configure(config)
  { "one" => 11, "two" => 12 }.each do |name, octet|
    config.vm.define name do |m|
      CddEnv.machine(m, name, "#{SUBNET}.#{octet}", { memory: 512 }, docker: true)
    end
  end
end
EOF
}

run_check() {
  CHECK_RUN="hostcheck-$$"
  CHECK_DIR=$(mktemp -d "/tmp/cdd-hostcheck.XXXXXX")
  CLEANUPS+=("check_teardown")
  write_check_vagrantfile "$CHECK_DIR"
  export CDD_RUN_ID="$CHECK_RUN" CDD_SUBNET="$CHECK_SUBNET" CDD_LXC_BRIDGE="$LXC_BRIDGE"
  [ -z "$(check_leftovers)" ] || die "check: machines of run $CHECK_RUN exist already"
  local t0 m pids=() rc=0
  t0=$(now)
  for m in one two; do
    (cd "$CHECK_DIR" && exec timeout 600 vagrant up --provider="$PROVIDER" --no-provision "$m" \
       >"$CHECK_DIR/up-$m.log" 2>&1 9>&-) &
    pids+=($!)
  done
  for m in "${pids[@]}"; do wait "$m" || rc=1; done
  if [ "$rc" != 0 ]; then
    for m in one two; do say "check: vagrant up $m:"; grep -vE '^\s+from |/gems/' "$CHECK_DIR/up-$m.log" | tail -n 15 >&2; done
    die "check: vagrant up failed"
  fi
  say "check: 2 machines up in parallel in $(elapsed "$t0")s"
  local out probe
  probe=$(cat <<EOF
set -e
hostname
. /etc/os-release; echo "\$PRETTY_NAME"
if [ -d /run/systemd/system ]; then echo "systemd: \$(systemctl is-system-running || true)"; fi
curl -fsS -o /dev/null --max-time 20 $MIRROR/dists/$SUITE/InRelease && echo "archive: reachable"
EOF
)
  for m in one two; do
    out=$(cd "$CHECK_DIR" && timeout 120 vagrant ssh "$m" --no-tty -c "$probe" 2>&1 9>&-) \
      || { printf '%s\n' "$out" >&2; die "check: ssh into $m failed"; }
    printf '%s\n' "$out" | sed "s/^/    [$m] /" >&2
    [ "$(head -n 1 <<<"$out")" = "$m" ] || die "check: $m has the wrong hostname"
    grep -q "archive: reachable" <<<"$out" || die "check: $m cannot reach $MIRROR"
  done
  out=$(cd "$CHECK_DIR" && timeout 120 vagrant ssh two --no-tty -c \
        "for i in \$(seq 20); do ping -c 1 -W 1 $CHECK_SUBNET.11 >/dev/null && exit 0; sleep 0.5; done; exit 1" 2>&1 9>&-) \
    || { printf '%s\n' "$out" >&2; die "check: two cannot reach one at $CHECK_SUBNET.11 over the private network"; }
  say "check: two reaches one over the private network ($CHECK_SUBNET.11)"
  t0=$(now)
  (cd "$CHECK_DIR" && timeout 300 vagrant destroy -f >"$CHECK_DIR/destroy.log" 2>&1 9>&-) \
    || { tail -n 20 "$CHECK_DIR/destroy.log" >&2; die "check: vagrant destroy failed"; }
  say "check: destroyed in $(elapsed "$t0")s"
  local left; left=$(check_leftovers)
  [ -z "$left" ] || die "check: left behind after destroy: $left"
  say "check: nothing left behind"
  rm -rf "$CHECK_DIR"; CHECK_DIR=""
}

# --------------------------------------------------------------------------------------------
# reaper
# --------------------------------------------------------------------------------------------
REAP_EVERY_MINUTES=15
REAP_TIMEOUT=900

# The state home whose index holds a user's runs (host/index.py: $XDG_STATE_HOME/cdd).
state_home_of() {
  local home; home=$(getent passwd "$1" | cut -d: -f6)
  [ -n "$home" ] && printf '%s/.local/state/cdd\n' "$home"
}

# The self-hosted runner this script runs under: an ancestor process is its Runner.Worker.
runner_dir_from_ancestry() {
  local pid=$$ exe
  while [ "$pid" -gt 1 ]; do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case "$exe" in */bin/Runner.Worker|*/bin/Runner.Listener) dirname "$(dirname "$exe")"; return ;; esac
    pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
  done
}

install_reaper() {
  local venv="$STATE_DIR/venv" stamp="$STATE_DIR/venv.rev" rev
  # what is installed is this checkout's cdd: reinstall only when its source changed
  rev=$(cd "$REPO_DIR" && find pyproject.toml cdd_ci -type f ! -name '*.pyc' -print0 | sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if [ -x "$venv/bin/cdd" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$rev" ]; then
    say "reaper: cdd in $venv is current ($rev)"
  else
    say "reaper: installing cdd from $REPO_DIR into $venv (log: $LOG_DIR/reaper-install.log)"
    { python3 -m venv --clear "$venv" \
      && timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check "$REPO_DIR"
    } >"$LOG_DIR/reaper-install.log" 2>&1 || { tail -n 20 "$LOG_DIR/reaper-install.log" >&2; die "reaper: pip install failed"; }
    echo "$rev" > "$stamp"
  fi

  # the indexes to reap: root's, and that of the user who ran this through sudo
  local indexes="$STATE_DIR/reap-indexes" user_home
  touch "$indexes"
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && user_home=$(state_home_of "$SUDO_USER"); then
    grep -qxF "$user_home" "$indexes" || echo "$user_home" >> "$indexes"
  fi

  mkdir -p "$SHIM_DIR" "$STATE_DIR/hooks"
  cat > "$SHIM_DIR/cdd-reap" <<REAP
#!/bin/sh
# cdd-ci's host-wide reaper (written by scripts/setup-host.sh): \`cdd reap\`, bounded in time,
# one at a time per user, over root's runs and those of the users in $indexes.
# With CDD_STATE_HOME set, only the runs of that index.
set -u
lock="\${XDG_RUNTIME_DIR:-/tmp}/cdd-reap.\$(id -u).lock"
reap() { flock -w $REAP_TIMEOUT "\$lock" timeout $REAP_TIMEOUT "$venv/bin/cdd" reap "\$@"; }
if [ -n "\${CDD_STATE_HOME:-}" ] || [ "\$(id -u)" != 0 ]; then reap "\$@"; exit; fi
status=0
reap "\$@" || status=\$?
while read -r home; do
  [ -n "\$home" ] && [ -d "\$home/runs" ] || continue
  CDD_STATE_HOME="\$home" reap "\$@" || status=\$?
done < "$indexes"
exit \$status
REAP
  chmod 755 "$SHIM_DIR/cdd-reap"

  local hook
  for hook in job-started job-completed; do
    cat > "$STATE_DIR/hooks/$hook.sh" <<HOOK
#!/bin/sh
# cdd-ci: a self-hosted runner's $hook hook (written by scripts/setup-host.sh). Destroys what
# finished runs left on this host; never a live run. A failure is said, never fails the job.
if [ "\$(id -u)" = 0 ]; then
  "$SHIM_DIR/cdd-reap"
elif sudo -n true 2>/dev/null; then
  # the machines are root's; the runs are this user's
  sudo -n env CDD_STATE_HOME="\${CDD_STATE_HOME:-\${XDG_STATE_HOME:-\$HOME/.local/state}/cdd}" "$SHIM_DIR/cdd-reap"
else
  "$SHIM_DIR/cdd-reap"
fi || echo "cdd-ci $hook hook: cdd reap failed (exit \$?); see its output above" >&2
exit 0
HOOK
    chmod 755 "$STATE_DIR/hooks/$hook.sh"
  done

  # periodically
  if init_is_systemd; then
    cat > /etc/systemd/system/cdd-reap.service <<UNIT
[Unit]
Description=cdd-ci: destroy what finished cdd runs left on this host

[Service]
Type=oneshot
ExecStart=$SHIM_DIR/cdd-reap
UNIT
    cat > /etc/systemd/system/cdd-reap.timer <<UNIT
[Unit]
Description=cdd-ci: reap every $REAP_EVERY_MINUTES minutes

[Timer]
OnBootSec=2min
OnUnitActiveSec=${REAP_EVERY_MINUTES}min

[Install]
WantedBy=timers.target
UNIT
    systemctl daemon-reload && systemctl enable --now cdd-reap.timer >/dev/null 2>&1 \
      || die "reaper: systemctl enable --now cdd-reap.timer failed"
    say "reaper: systemd timer cdd-reap.timer, every $REAP_EVERY_MINUTES min"
  else
    mkdir -p /etc/cron.d
    printf '# cdd-ci (scripts/setup-host.sh): destroy what finished cdd runs left on this host\n*/%s * * * * root %s >> %s 2>&1\n' \
      "$REAP_EVERY_MINUTES" "$SHIM_DIR/cdd-reap" "$LOG_DIR/reap.log" > /etc/cron.d/cdd-reap
    if pgrep -x cron >/dev/null 2>&1; then
      say "reaper: /etc/cron.d/cdd-reap, every $REAP_EVERY_MINUTES min"
    else
      say "reaper: /etc/cron.d/cdd-reap written, but no cron daemon runs here (PID 1 is not systemd):" \
          "only the runner's job hooks reap until one does"
    fi
  fi

  # around every job of the runner
  [ -n "$RUNNER_DIR" ] || RUNNER_DIR=$(runner_dir_from_ancestry || true)
  if [ -z "$RUNNER_DIR" ]; then
    say "reaper: no self-hosted runner found (--runner-dir): job hooks not set"
    return
  fi
  [ -f "$RUNNER_DIR/.runner" ] || [ -f "$RUNNER_DIR/config.sh" ] || die "reaper: $RUNNER_DIR is not a runner's directory"
  local env_file="$RUNNER_DIR/.env" var value changed=0
  touch "$env_file"
  for var in ACTIONS_RUNNER_HOOK_JOB_STARTED ACTIONS_RUNNER_HOOK_JOB_COMPLETED; do
    case "$var" in *STARTED) value="$STATE_DIR/hooks/job-started.sh" ;; *) value="$STATE_DIR/hooks/job-completed.sh" ;; esac
    if grep -q "^$var=" "$env_file"; then
      if ! grep -qxF "$var=$value" "$env_file"; then
        say "reaper: $env_file already sets $var to another hook: left as it is (call $value from it)"
      fi
      continue
    fi
    echo "$var=$value" >> "$env_file"; changed=1
  done
  if [ "$changed" = 1 ]; then
    chown --reference="$RUNNER_DIR" "$env_file" 2>/dev/null || true
    say "reaper: job hooks set in $env_file; they take effect when the runner next starts"
  else
    say "reaper: job hooks in place ($env_file)"
  fi
}

# --------------------------------------------------------------------------------------------
BOX_REV=$(recipe_rev)
say "provider=$PROVIDER box revision=$BOX_REV state=$STATE_DIR"
T_ALL=$(now)
phase packages ensure_packages
phase services ensure_services
phase box ensure_box
if [ "$REAPER" = 1 ]; then phase reaper install_reaper; fi
if [ "$CHECK" = 1 ]; then phase check run_check; fi
say "OK: host ready for provider $PROVIDER in $(elapsed "$T_ALL")s (${TIMINGS[*]})"

# What callers need in their environment (eval "$(scripts/setup-host.sh ...)").
echo "export VAGRANT_CHECKPOINT_DISABLE=1"
echo "export VAGRANT_BOX_UPDATE_CHECK_DISABLE=1"
echo "export VAGRANT_DEFAULT_PROVIDER=$PROVIDER"
echo "export CDD_PROVIDER=$PROVIDER"
if [ "$PROVIDER" = lxc ]; then echo "export CDD_LXC_BRIDGE=$LXC_BRIDGE"; fi
if [ "$PROVIDER" = docker ] && [ -e "$SHIM_DIR/docker" ]; then
  echo "export PATH=\"$SHIM_DIR:\$PATH\""
fi

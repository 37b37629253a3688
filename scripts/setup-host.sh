#!/usr/bin/env bash
# setup-host.sh: prepare a Debian 12 host (run as root) to build cdd-ci's Vagrant environments.
#
#   sudo scripts/setup-host.sh [--provider lxc|docker] [--rebuild] [--check]
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
#   box       build the Debian bookworm base from Debian's archive with mmdebstrap and register it:
#               lxc:    Vagrant box  cdd/debian-bookworm (provider lxc), systemd as PID 1
#               docker: image        cdd/debian-bookworm-ssh:12, sshd as PID 1
#             skipped when the registered one carries the current recipe revision (stamp)
#   check     (--check only) bring up a throwaway 2-machine environment, prove ssh, the private
#             network and access to Debian's archive, destroy it and make sure nothing is left
#
# Options:
#   --provider P   lxc (default; systemd guests: services behave as on a VM) or docker (faster,
#                  no systemd in the guest). Also read from CDD_PROVIDER.
#   --rebuild      rebuild and re-register the box/image even when it is current (not while
#                  environments are being created from it: the box is replaced in place)
#   --check        run the check phase (30-45 s on 2 vCPUs)
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
#
# Exit status: 0 ready; 1 a phase failed (the FAIL line says which); 2 usage.
set -Eeuo pipefail

# Bump when the box recipe changes in a way the recipe hash below cannot see.
BOX_RECIPE_REV=1
BOX_NAME=cdd/debian-bookworm
DOCKER_IMAGE=cdd/debian-bookworm-ssh:12
SUITE=bookworm

PROVIDER="${CDD_PROVIDER:-lxc}"
STATE_DIR="${CDD_STATE_DIR:-/var/lib/cdd-ci}"
MIRROR="${CDD_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${CDD_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
LXC_BRIDGE="${CDD_LXC_BRIDGE:-cddbr0}"
CHECK_SUBNET="${CDD_CHECK_SUBNET:-192.168.62}"
REBUILD=0
CHECK=0

usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --provider) [ $# -ge 2 ] || { echo "--provider needs a value" >&2; exit 2; }; PROVIDER="$2"; shift 2 ;;
    --provider=*) PROVIDER="${1#*=}"; shift ;;
    --rebuild) REBUILD=1; shift ;;
    --check|--smoke) CHECK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-host: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$PROVIDER" in
  lxc|docker) ;;
  libvirt|virtualbox)
    echo "setup-host: '$PROVIDER' is not prepared by this script: install it on your runner and use" \
         "the public box debian/bookworm64 (see vagrant/openstack-base/README.md)" >&2
    exit 2 ;;
  *) echo "setup-host: --provider must be lxc or docker (got '$PROVIDER')" >&2; exit 2 ;;
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
  want=(vagrant mmdebstrap debian-archive-keyring ca-certificates iptables iproute2 openssh-client rsync)
  case "$PROVIDER" in
    lxc)    want+=(lxc vagrant-lxc dnsmasq-base redir) ;;
    docker) want+=(docker.io) ;;
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

ensure_services() {
  case "$PROVIDER" in
    lxc) start_lxc_net ;;
    docker) start_dockerd ;;
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
  esac
  h=$( { echo "$BOX_RECIPE_REV $PROVIDER $SUITE $MIRROR $SECURITY_MIRROR $BASE_PACKAGES $LXC_PACKAGES"
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

ensure_box() {
  case "$PROVIDER" in
    lxc) build_lxc_box ;;
    docker) build_docker_image ;;
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
BOX_REV=$(recipe_rev)
say "provider=$PROVIDER box revision=$BOX_REV state=$STATE_DIR"
T_ALL=$(now)
phase packages ensure_packages
phase services ensure_services
phase box ensure_box
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

#!/usr/bin/env bash
# common.sh NAME PRIVATE_IP PEER...   (PEER = address=name), run first on every machine.
# Waits for the private address, lists the peers in /etc/hosts, and installs two helpers the
# role scripts use: cdd-apt-install (missing packages only, no recommends, retries) and
# cdd-service-up (enable + start with systemd, or start the init script without it).
# Idempotent: running it again changes nothing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

name="$1" private_ip="$2"
shift 2

# With lxc the box sets the private address at boot, just after eth0 is up: give it a moment.
has_private_ip() {
  local addrs
  addrs=$(ip -4 -o addr show | awk '{ split($4, a, "/"); print a[1] }')
  grep -qx "$private_ip" <<<"$addrs"
}
for _ in $(seq 120); do has_private_ip && break; sleep 0.5; done
has_private_ip || { echo "common: $name does not have its private address $private_ip" >&2; exit 1; }

# Peers in /etc/hosts, in a block of our own that is replaced on every run. The file is rewritten
# in place (not renamed over) because Docker bind-mounts it.
{
  sed '/^# cdd-peers begin$/,/^# cdd-peers end$/d' /etc/hosts
  echo "# cdd-peers begin"
  for peer in "$@"; do echo "${peer%%=*} ${peer#*=}"; done
  echo "# cdd-peers end"
} >/tmp/cdd-hosts.new
if ! cmp -s /tmp/cdd-hosts.new /etc/hosts; then cat /tmp/cdd-hosts.new >/etc/hosts; fi
rm -f /tmp/cdd-hosts.new

cat >/usr/local/sbin/cdd-apt-install <<'EOF'
#!/usr/bin/env bash
# cdd-apt-install PKG...: install the missing ones from Debian's archive, without recommends.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "$@"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
for attempt in 1 2 3; do
  # refresh the package lists when they are missing or older than an hour (or after a failure)
  if [ "$attempt" -gt 1 ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 -print -quit)" ]; then
    timeout 300 apt-get update -q -o Acquire::Retries=3 -o Acquire::Languages=none || true
  fi
  if timeout 900 apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 -o Dpkg::Use-Pty=0 \
       -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"; then
    exit 0
  fi
  echo "cdd-apt-install: attempt $attempt failed" >&2
  sleep $((attempt * 5))
done
exit 1
EOF
chmod 0755 /usr/local/sbin/cdd-apt-install

cat >/usr/local/sbin/cdd-service-up <<'EOF'
#!/usr/bin/env bash
# cdd-service-up NAME: make sure a service runs now and after a reboot. Without systemd (the
# docker provider runs sshd as PID 1) its init script starts it.
set -euo pipefail
svc="$1"
if [ -d /run/systemd/system ]; then
  timeout 60 systemctl enable "$svc" >/dev/null 2>&1 || true
  systemctl is-active --quiet "$svc" || timeout 300 systemctl start "$svc"
  systemctl is-active --quiet "$svc"
else
  timeout 60 service "$svc" status >/dev/null 2>&1 || timeout 300 service "$svc" start
fi
EOF
chmod 0755 /usr/local/sbin/cdd-service-up

echo "common: $name ($private_ip) ready; peers: $*"

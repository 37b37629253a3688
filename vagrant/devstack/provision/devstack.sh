#!/usr/bin/env bash
# devstack.sh IP: DevStack as its documentation runs it: a user stack with password-less sudo,
# the devstack repository (branch $DEVSTACK_BRANCH, default master) in /opt/stack/devstack,
# local.conf with this machine's private address, and ./stack.sh as stack. Needs the internet.
# Idempotent: once stack.sh has succeeded, a second run only checks that its services run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ip="$1"
BRANCH="${DEVSTACK_BRANCH:-master}"
STACK=/opt/stack
DONE=$STACK/.cdd-stacked

cdd-apt-install git sudo ca-certificates curl
id stack >/dev/null 2>&1 || useradd --system --create-home --home-dir "$STACK" --shell /bin/bash stack
chmod 0755 "$STACK"
install -m 0440 /dev/stdin /etc/sudoers.d/stack <<<'stack ALL=(ALL) NOPASSWD: ALL'
as_stack() { runuser -u stack -- "$@"; }

if [ -e "$DONE" ]; then
  echo "devstack: stack.sh already ran ($(cat "$DONE")); services:"
  systemctl list-units --no-pager --no-legend 'devstack@*'
  exit 0
fi

if [ ! -d "$STACK/devstack/.git" ]; then
  as_stack timeout 900 git clone -q --branch "$BRANCH" https://opendev.org/openstack/devstack "$STACK/devstack"
fi
sed "s/@HOST_IP@/$ip/" /tmp/cdd-local.conf | as_stack tee "$STACK/devstack/local.conf" >/dev/null

# stack.sh takes 20-40 minutes; its own log is $STACK/logs/stack.sh.log (harvested)
cd "$STACK/devstack"
as_stack timeout 5400 ./stack.sh
echo "$BRANCH $(as_stack git -C "$STACK/devstack" log -1 --format='%h %cs') $(date -u +%FT%TZ)" >"$DONE"
echo "devstack: stack.sh done"

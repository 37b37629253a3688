#!/usr/bin/env bash
# broker.sh: RabbitMQ from Debian, listening on 5672 on all interfaces, with the user
# openstack / RABBIT_PASS allowed everything on vhost /. Also the MariaDB client, so the
# checks can log in to the database machine from here. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

RABBIT_USER=openstack
RABBIT_PASS=RABBIT_PASS   # throwaway test credential, as in the OpenStack install guide

installed_before=0
[ "$(dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null)" = "install ok installed" ] && installed_before=1

# The configuration goes in before the package, so its first start already uses it.
conf=/etc/rabbitmq/rabbitmq.conf
want='# cdd-ci openstack-base: AMQP on every interface
listeners.tcp.default = 5672
'
changed=0
if [ "$(cat "$conf" 2>/dev/null)" != "$(printf '%s' "$want")" ]; then
  mkdir -p /etc/rabbitmq
  printf '%s' "$want" >"$conf"
  changed=1
fi

cdd-apt-install rabbitmq-server mariadb-client
cdd-service-up rabbitmq-server
if [ "$changed" = 1 ] && [ "$installed_before" = 1 ]; then
  if [ -d /run/systemd/system ]; then timeout 300 systemctl restart rabbitmq-server
  else timeout 300 service rabbitmq-server restart; fi
fi
timeout 180 rabbitmqctl -q await_startup

users=$(timeout 60 rabbitmqctl -q list_users | awk '{print $1}')
if grep -qx "$RABBIT_USER" <<<"$users"; then
  timeout 60 rabbitmqctl -q change_password "$RABBIT_USER" "$RABBIT_PASS"
else
  timeout 60 rabbitmqctl -q add_user "$RABBIT_USER" "$RABBIT_PASS"
fi
timeout 60 rabbitmqctl -q set_permissions -p / "$RABBIT_USER" ".*" ".*" ".*"

# prove it here rather than leave it to the checks
timeout 60 rabbitmqctl -q authenticate_user "$RABBIT_USER" "$RABBIT_PASS" >/dev/null
timeout 5 bash -c '</dev/tcp/127.0.0.1/5672'
echo "broker: rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server) up on 5672, user $RABBIT_USER can use /"

#!/usr/bin/env bash
# identity.sh: Keystone from Debian (uwsgi on port 5000) on the keystone database, fernet
# tokens, bootstrapped with the admin user, project and role, its own identity endpoints and
# RegionOne, plus the `service` project the other services' users live in. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/cdd-openstack.env

conf=/etc/keystone/keystone.conf
uwsgi=/etc/keystone/keystone-uwsgi.ini
digest() { { cat "$conf" "$uwsgi" 2>/dev/null || true; } | md5sum; }
before=$(digest)

cdd-apt-install-stopped keystone
crudini --set "$conf" database connection "$KEYSTONE_DB"
crudini --set "$conf" token provider fernet
# two cores: two uwsgi workers rather than Debian's eight
sed -i 's/^processes = .*/processes = 2/' "$uwsgi"

cdd-wait 900 "the keystone database" \
  mariadb -h database -u keystone -pKEYSTONE_DBPASS keystone -e 'SELECT 1'
# everything as the keystone user: it owns the log files the service writes to
as_keystone() { runuser -u keystone -- "$@"; }
as_keystone keystone-manage db_sync
install -d -o keystone -g keystone -m 0700 /etc/keystone/fernet-keys /etc/keystone/credential-keys
as_keystone keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
as_keystone keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
as_keystone keystone-manage bootstrap --bootstrap-password "$ADMIN_PASS" \
  --bootstrap-admin-url "$KEYSTONE_URL/v3/" --bootstrap-internal-url "$KEYSTONE_URL/v3/" \
  --bootstrap-public-url "$KEYSTONE_URL/v3/" --bootstrap-region-id "$REGION"

if [ "$(digest)" != "$before" ] || ! systemctl is-active --quiet keystone; then
  timeout 120 systemctl restart keystone
fi
systemctl enable --quiet keystone
cdd-wait 180 "keystone answering on 5000" curl -fsS http://127.0.0.1:5000/v3

# shellcheck source=/dev/null
. /root/admin-openrc
openstack project show service >/dev/null 2>&1 \
  || openstack project create --domain default --description "Service Project" service >/dev/null
echo "identity: keystone $(dpkg-query -W -f='${Version}' keystone) on 5000, token for admin:" \
     "$(openstack token issue -f value -c expires) expiry"

#!/usr/bin/env bash
# image.sh: Glance from Debian (glance-api under uwsgi on port 9292) on the glance database,
# images on local disk, tokens checked against Keystone; registered in Keystone as the image
# service with its glance user. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/cdd-openstack.env

conf=/etc/glance/glance-api.conf
uwsgi=/etc/glance/glance-api-uwsgi.ini
digest() { { cat "$conf" "$uwsgi" 2>/dev/null || true; } | md5sum; }
before=$(digest)

cdd-apt-install-stopped glance-api
crudini --set "$conf" database connection "$GLANCE_DB"
cdd-ksat "$conf" keystone_authtoken glance "$GLANCE_PASS"
crudini --set "$conf" paste_deploy flavor keystone
crudini --set "$conf" glance_store stores file,http
crudini --set "$conf" glance_store default_store file
crudini --set "$conf" glance_store filesystem_store_datadir /var/lib/glance/images/
sed -i 's/^processes = .*/processes = 2/' "$uwsgi"

cdd-wait 900 "the glance database" mariadb -h database -u glance -pGLANCE_DBPASS glance -e 'SELECT 1'
runuser -u glance -- glance-manage db_sync

cdd-wait 900 "keystone with its service project" \
  bash -c '. /root/admin-openrc && openstack project show service'
cdd-os-register glance image "OpenStack Image" "$GLANCE_PASS" http://image:9292

if [ "$(digest)" != "$before" ] || ! systemctl is-active --quiet glance-api; then
  timeout 120 systemctl restart glance-api
fi
systemctl enable --quiet glance-api
cdd-wait 180 "glance-api answering on 9292" curl -sS -o /dev/null http://127.0.0.1:9292/
echo "image: glance-api $(dpkg-query -W -f='${Version}' glance-api) on 9292"

#!/usr/bin/env bash
# compute.sh IP: the compute controller from Debian: Placement (uwsgi on 8778) on the placement
# database, Nova API (uwsgi on 8774), scheduler and conductor on nova, nova_api and nova_cell0,
# talking to each other through the broker, checking tokens with Keystone and finding images in
# Glance. Both registered in Keystone; cell0 and cell1 mapped; one small flavor. No hypervisor:
# this machine is the controller only. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/cdd-openstack.env
ip="$1"

nova=/etc/nova/nova.conf
placement=/etc/placement/placement.conf
uwsgi=(/etc/nova/nova-api-uwsgi.ini /etc/placement/placement-api-uwsgi.ini)
SERVICES=(placement-api nova-api nova-scheduler nova-conductor)
digest() { { cat "$nova" "$placement" "${uwsgi[@]}" 2>/dev/null || true; } | md5sum; }
before=$(digest)

cdd-apt-install-stopped placement-api nova-api nova-scheduler nova-conductor

crudini --set "$placement" placement_database connection "$PLACEMENT_DB"
crudini --set "$placement" api auth_strategy keystone
cdd-ksat "$placement" keystone_authtoken placement "$PLACEMENT_PASS"

crudini --set "$nova" DEFAULT transport_url "$RABBIT_URL"
crudini --set "$nova" DEFAULT my_ip "$ip"
# the metadata API serves instances, and there are none without a hypervisor and Neutron
crudini --set "$nova" DEFAULT enabled_apis osapi_compute
crudini --set "$nova" api_database connection "$NOVA_API_DB"
crudini --set "$nova" database connection "$NOVA_DB"
crudini --set "$nova" api auth_strategy keystone
cdd-ksat "$nova" keystone_authtoken nova "$NOVA_PASS"
cdd-ksat "$nova" service_user nova "$NOVA_PASS"
crudini --set "$nova" service_user send_service_user_token true
cdd-ksat "$nova" placement placement "$PLACEMENT_PASS"
crudini --set "$nova" placement region_name "$REGION"
crudini --set "$nova" glance api_servers http://image:9292
crudini --set "$nova" oslo_concurrency lock_path /var/lib/nova/tmp
crudini --set "$nova" vnc enabled false
sed -i 's/^processes = .*/processes = 2/' "${uwsgi[@]}"
systemctl disable --now --quiet nova-api-metadata 2>/dev/null || true

cdd-wait 900 "the placement and nova_cell0 databases" bash -c \
  "mariadb -h database -u placement -pPLACEMENT_DBPASS placement -e 'SELECT 1' &&
   mariadb -h database -u nova -pNOVA_DBPASS nova_cell0 -e 'SELECT 1'"
runuser -u placement -- placement-manage db sync
as_nova() { runuser -u nova -- "$@"; }
as_nova nova-manage api_db sync
as_nova nova-manage cell_v2 map_cell0
as_nova nova-manage cell_v2 list_cells | grep -q ' cell1 ' \
  || as_nova nova-manage cell_v2 create_cell --name=cell1 --verbose
as_nova nova-manage db sync

cdd-wait 900 "keystone with its service project" \
  bash -c '. /root/admin-openrc && openstack project show service'
cdd-os-register placement placement "Placement API" "$PLACEMENT_PASS" http://compute:8778
cdd-os-register nova compute "OpenStack Compute" "$NOVA_PASS" http://compute:8774/v2.1
# the conductor and the scheduler log an error for every failed login: start them once the
# broker takes the openstack user
cdd-wait 900 "the broker accepting the openstack user" \
  python3 -c "import kombu, sys; kombu.Connection(sys.argv[1], connect_timeout=5).connect()" \
  "${RABBIT_URL/rabbit:/amqp:}"

if [ "$(digest)" != "$before" ]; then
  timeout 300 systemctl restart "${SERVICES[@]}"
fi
for svc in "${SERVICES[@]}"; do cdd-service-up "$svc"; done
cdd-wait 180 "placement answering on 8778" curl -fsS http://127.0.0.1:8778/
cdd-wait 180 "nova-api answering on 8774" curl -fsS http://127.0.0.1:8774/

# shellcheck source=/dev/null
. /root/admin-openrc
openstack flavor show cdd.tiny >/dev/null 2>&1 \
  || openstack flavor create --vcpus 1 --ram 64 --disk 1 cdd.tiny >/dev/null
cdd-wait 180 "nova-scheduler and nova-conductor up" bash -c \
  "[ \"\$(openstack compute service list -f value -c Binary -c State | grep -c ' up$')\" -ge 2 ]"
echo "compute: nova $(dpkg-query -W -f='${Version}' nova-api) on 8774, placement on 8778"

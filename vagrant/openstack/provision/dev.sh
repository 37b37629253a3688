#!/usr/bin/env bash
# dev.sh IP: the developer's angle on the same control plane. Keystone, Glance, Placement and Nova
# from their git repositories on opendev.org (branch $OPENSTACK_BRANCH, default master), installed
# editable into one virtualenv under openstack/requirements' upper constraints, each service a
# systemd unit running from its checkout as the user stack, configured as the operator's machines
# are but all on this one, on openstack-base's broker and database. Needs the internet
# (opendev.org, PyPI). Idempotent: a second run pulls the branch and restarts the services.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=/dev/null
. /etc/cdd-openstack.env
ip="$1"
BRANCH="${OPENSTACK_BRANCH:-master}"
STACK=/opt/stack
SRC=$STACK/src
VENV=$STACK/venv
LOGS=$STACK/logs
PROJECTS=(requirements keystone glance placement nova)
URL="http://$(hostname):"   # endpoints: http://dev:PORT

cdd-apt-install git python3-venv python3-dev build-essential libffi-dev libssl-dev pkg-config
id stack >/dev/null 2>&1 || useradd --system --home-dir "$STACK" --shell /bin/bash stack
install -d -o stack -g stack "$STACK" "$SRC" "$LOGS" /etc/keystone /etc/glance /etc/placement \
  /etc/nova /var/lib/glance/images /var/lib/glance/staging /var/lib/glance/tasks /var/lib/nova/tmp
as_stack() { runuser -u stack -- "$@"; }

# -- the source, and one virtualenv for all of it ----------------------------------------------
for p in "${PROJECTS[@]}"; do
  if [ -d "$SRC/$p/.git" ]; then
    as_stack timeout 900 git -C "$SRC/$p" fetch -q --depth 1 origin "$BRANCH"
    as_stack git -C "$SRC/$p" checkout -q --force FETCH_HEAD
  else
    as_stack timeout 900 git clone -q --depth 1 --branch "$BRANCH" \
      "https://opendev.org/openstack/$p" "$SRC/$p"
  fi
  echo "dev: $p $(as_stack git -C "$SRC/$p" log -1 --format='%h %cs %s' | cut -c1-80)"
done
[ -x "$VENV/bin/python" ] || as_stack python3 -m venv "$VENV"
# the projects under development are not held to the constraints' released versions
grep -v -E '^(keystone|glance|openstack-placement|nova)===' "$SRC/requirements/upper-constraints.txt" \
  | as_stack tee "$STACK/constraints.txt" >/dev/null
as_stack timeout 1800 "$VENV/bin/pip" install -q --upgrade pip
as_stack timeout 3600 "$VENV/bin/pip" install -q -c "$STACK/constraints.txt" \
  -e "$SRC/keystone" -e "$SRC/glance" -e "$SRC/placement" -e "$SRC/nova" PyMySQL uwsgi

# -- configuration, as on the operator's machines ----------------------------------------------
set_all() {  # set_all FILE SECTION KEY=VALUE...
  local file="$1" section="$2" kv
  shift 2
  for kv in "$@"; do crudini --set "$file" "$section" "${kv%%=*}" "${kv#*=}"; done
}
set_all /etc/keystone/keystone.conf DEFAULT "log_file=$LOGS/keystone.log"
set_all /etc/keystone/keystone.conf database "connection=$KEYSTONE_DB"
set_all /etc/keystone/keystone.conf token provider=fernet

g=/etc/glance/glance-api.conf
install -m 0644 "$SRC/glance/etc/glance-api-paste.ini" /etc/glance/glance-api-paste.ini
set_all "$g" DEFAULT "log_file=$LOGS/glance-api.log" enabled_backends=fs:file
set_all "$g" database "connection=$GLANCE_DB"
set_all "$g" paste_deploy flavor=keystone
set_all "$g" glance_store default_backend=fs
set_all "$g" fs filesystem_store_datadir=/var/lib/glance/images/
set_all "$g" os_glance_staging_store filesystem_store_datadir=/var/lib/glance/staging/
set_all "$g" os_glance_tasks_store filesystem_store_datadir=/var/lib/glance/tasks/
cdd-ksat "$g" keystone_authtoken glance "$GLANCE_PASS"

p=/etc/placement/placement.conf
set_all "$p" DEFAULT "log_file=$LOGS/placement-api.log"
set_all "$p" placement_database "connection=$PLACEMENT_DB"
set_all "$p" api auth_strategy=keystone
cdd-ksat "$p" keystone_authtoken placement "$PLACEMENT_PASS"

n=/etc/nova/nova.conf
install -m 0644 "$SRC/nova/etc/nova/api-paste.ini" /etc/nova/api-paste.ini
# nova-api logs here; the scheduler and the conductor get --log-file of their own
set_all "$n" DEFAULT "log_file=$LOGS/nova-api.log" "transport_url=$RABBIT_URL" "my_ip=$ip" \
  enabled_apis=osapi_compute
set_all "$n" api_database "connection=$NOVA_API_DB"
set_all "$n" database "connection=$NOVA_DB"
set_all "$n" api auth_strategy=keystone
cdd-ksat "$n" keystone_authtoken nova "$NOVA_PASS"
cdd-ksat "$n" service_user nova "$NOVA_PASS"
set_all "$n" service_user send_service_user_token=true
cdd-ksat "$n" placement placement "$PLACEMENT_PASS"
set_all "$n" glance "api_servers=${URL}9292"
set_all "$n" oslo_concurrency lock_path=/var/lib/nova/tmp
set_all "$n" vnc enabled=false
chown -R stack:stack /etc/keystone /etc/glance /etc/placement /etc/nova /var/lib/glance /var/lib/nova

# -- databases and Keystone's bootstrap --------------------------------------------------------
cdd-wait 900 "the databases" bash -c "
  mariadb -h database -u keystone -pKEYSTONE_DBPASS keystone -e 'SELECT 1' &&
  mariadb -h database -u placement -pPLACEMENT_DBPASS placement -e 'SELECT 1' &&
  mariadb -h database -u nova -pNOVA_DBPASS nova_cell0 -e 'SELECT 1'"
as_stack "$VENV/bin/keystone-manage" db_sync
install -d -o stack -g stack -m 0700 /etc/keystone/fernet-keys /etc/keystone/credential-keys
as_stack "$VENV/bin/keystone-manage" fernet_setup --keystone-user stack --keystone-group stack
as_stack "$VENV/bin/keystone-manage" credential_setup --keystone-user stack --keystone-group stack
as_stack "$VENV/bin/keystone-manage" bootstrap --bootstrap-password "$ADMIN_PASS" \
  --bootstrap-admin-url "${URL}5000/v3/" --bootstrap-internal-url "${URL}5000/v3/" \
  --bootstrap-public-url "${URL}5000/v3/" --bootstrap-region-id "$REGION"
as_stack "$VENV/bin/glance-manage" --config-file "$g" db_sync
as_stack "$VENV/bin/placement-manage" db sync
as_stack "$VENV/bin/nova-manage" api_db sync
as_stack "$VENV/bin/nova-manage" cell_v2 map_cell0
as_stack "$VENV/bin/nova-manage" cell_v2 list_cells | grep -q ' cell1 ' \
  || as_stack "$VENV/bin/nova-manage" cell_v2 create_cell --name=cell1 --verbose
as_stack "$VENV/bin/nova-manage" db sync

# -- one systemd unit per service, running from the checkout -----------------------------------
# uwsgi serves the APIs: the module newer releases ship, else the script older ones install
wsgi_app() {  # wsgi_app MODULE SCRIPT
  if "$VENV/bin/python" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' "$1" 2>/dev/null; then
    echo "module = $1:application"
  else
    echo "wsgi-file = $VENV/bin/$2"
  fi
}
api_unit() {  # api_unit NAME PORT MODULE SCRIPT [UWSGI-OPTION...]
  local name="$1" port="$2" module="$3" script="$4"
  shift 4
  {
    echo "[uwsgi]"
    printf '%s\n' "http-socket = :$port" "master = true" "die-on-term = true" \
      "enable-threads = true" "lazy-apps = true" "processes = 2" "threads = 1" \
      "buffer-size = 65535" "name = $name" "$(wsgi_app "$module" "$script")" "$@"
  } >"$STACK/$name-uwsgi.ini"
  unit "$name" "$VENV/bin/uwsgi --ini $STACK/$name-uwsgi.ini"
}
unit() {  # unit NAME COMMAND
  cat >"/etc/systemd/system/cdd-dev-$1.service" <<UNIT
[Unit]
Description=$1 from $SRC (cdd openstack, developer's angle)
After=network-online.target

[Service]
User=stack
Group=stack
ExecStart=$2
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
}
api_unit keystone 5000 keystone.wsgi.api keystone-wsgi-public
api_unit glance-api 9292 glance.wsgi.api glance-wsgi-api \
  "http-auto-chunked = true" "http-chunked-input = true" "http-raw-body = true" \
  "wsgi-manage-chunked-input = true"
api_unit placement-api 8778 placement.wsgi.api placement-api
api_unit nova-api 8774 nova.wsgi.osapi_compute nova-api-wsgi
for svc in scheduler conductor; do
  unit "nova-$svc" "$VENV/bin/nova-$svc --config-file $n --log-file $LOGS/nova-$svc.log"
done
SERVICES=(cdd-dev-keystone cdd-dev-glance-api cdd-dev-placement-api cdd-dev-nova-api
          cdd-dev-nova-scheduler cdd-dev-nova-conductor)
systemctl daemon-reload
systemctl enable --quiet "${SERVICES[@]}"

timeout 120 systemctl restart cdd-dev-keystone
cdd-wait 180 "keystone answering on 5000" curl -fsS http://127.0.0.1:5000/v3
# shellcheck source=/dev/null
. /root/admin-openrc
openstack project show service >/dev/null 2>&1 \
  || openstack project create --domain default --description "Service Project" service >/dev/null
cdd-os-register glance image "OpenStack Image" "$GLANCE_PASS" "${URL}9292"
cdd-os-register placement placement "Placement API" "$PLACEMENT_PASS" "${URL}8778"
cdd-os-register nova compute "OpenStack Compute" "$NOVA_PASS" "${URL}8774/v2.1"
cdd-wait 900 "the broker accepting the openstack user" \
  "$VENV/bin/python" -c "import kombu, sys; kombu.Connection(sys.argv[1], connect_timeout=5).connect()" \
  "${RABBIT_URL/rabbit:/amqp:}"
timeout 300 systemctl restart "${SERVICES[@]:1}"
cdd-wait 180 "glance-api answering on 9292" curl -sS -o /dev/null http://127.0.0.1:9292/
cdd-wait 180 "placement answering on 8778" curl -fsS http://127.0.0.1:8778/
cdd-wait 180 "nova-api answering on 8774" curl -fsS http://127.0.0.1:8774/
openstack flavor show cdd.tiny >/dev/null 2>&1 \
  || openstack flavor create --vcpus 1 --ram 64 --disk 1 cdd.tiny >/dev/null
echo "dev: keystone, glance, placement and nova from $BRANCH in $VENV"

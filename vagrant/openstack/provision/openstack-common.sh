#!/usr/bin/env bash
# openstack-common.sh [KEYSTONE_HOST]: run on identity, image and compute (and dev) after
# openstack-base's common.sh. KEYSTONE_HOST is the machine Keystone runs on (default identity).
# Installs the operator's tools (the openstack client, crudini, the MariaDB client, curl), tells
# debconf that we configure every OpenStack package by hand, and writes what the role scripts
# share: the throwaway credentials (/etc/cdd-openstack.env), the admin's openrc, and
# five helpers in /usr/local/sbin:
#   cdd-wait SECONDS WHAT COMMAND...    retry COMMAND until it succeeds (other machines' work)
#   cdd-apt-install-stopped PKG...      install without letting the packages start services
#   cdd-os-register NAME TYPE DESC PASS URL   service user, service and endpoints in Keystone
#   cdd-ksat FILE SECTION USER PASS     a service's own Keystone credentials in its config
#   cdd-tracebacks LOG...               the tracebacks in a service's logs (for the checks)
# Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
keystone_host="${1:-identity}"

# Throwaway test credentials, named as in the OpenStack install guide. The database ones must
# match ../openstack-base/provision/database.sh and databases.sh.
install -m 0600 /dev/stdin /etc/cdd-openstack.env <<EOF
REGION=RegionOne
ADMIN_PASS=ADMIN_PASS
RABBIT_URL=rabbit://openstack:RABBIT_PASS@broker:5672/
KEYSTONE_DB=mysql+pymysql://keystone:KEYSTONE_DBPASS@database/keystone
GLANCE_DB=mysql+pymysql://glance:GLANCE_DBPASS@database/glance
NOVA_DB=mysql+pymysql://nova:NOVA_DBPASS@database/nova
NOVA_API_DB=mysql+pymysql://nova:NOVA_DBPASS@database/nova_api
NOVA_CELL0_DB=mysql+pymysql://nova:NOVA_DBPASS@database/nova_cell0
PLACEMENT_DB=mysql+pymysql://placement:PLACEMENT_DBPASS@database/placement
GLANCE_PASS=GLANCE_PASS
NOVA_PASS=NOVA_PASS
PLACEMENT_PASS=PLACEMENT_PASS
KEYSTONE_URL=http://$keystone_host:5000
EOF

install -m 0600 /dev/stdin /root/admin-openrc <<EOF
# the admin of the cdd openstack environment (throwaway credentials)
export OS_USERNAME=admin
export OS_PASSWORD=ADMIN_PASS
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_AUTH_URL=http://$keystone_host:5000/v3
export OS_IDENTITY_API_VERSION=3
export OS_IMAGE_API_VERSION=2
export OS_REGION_NAME=RegionOne
EOF

# Debian's packages can write their configuration from debconf answers (dbconfig-common,
# RabbitMQ, keystone_authtoken, endpoint registration). The install guide's way is by hand:
# say no to all of it, so nothing is half-configured behind our back.
{
  for q in configure_db create-admin-tenant register-endpoint; do echo "keystone keystone/$q boolean false"; done
  for q in configure_db configure_rabbit configure_ksat configure_api-endpoint; do echo "glance-common glance/$q boolean false"; done
  for q in configure_db configure_rabbit configure_ksat configure_neutron configure_placement configure_api-endpoint; do
    echo "nova-common nova/$q boolean false"
  done
  echo "nova-api novaapi/configure_db boolean false"
  for q in configure_db configure_ksat configure_api-endpoint; do echo "placement-common placement/$q boolean false"; done
} | debconf-set-selections

cdd-apt-install python3-openstackclient crudini mariadb-client curl python3-pymysql

cat >/usr/local/sbin/cdd-wait <<'EOF'
#!/usr/bin/env bash
# cdd-wait SECONDS WHAT COMMAND...: run COMMAND every 3 s until it succeeds, for at most SECONDS.
# The machines are provisioned in parallel: this is how one waits for another's work.
set -uo pipefail
limit="$1" what="$2"
shift 2
start=$SECONDS
until "$@" >/dev/null 2>&1; do
  if [ $((SECONDS - start)) -ge "$limit" ]; then
    echo "cdd-wait: gave up waiting ${limit}s for $what; last attempt said:" >&2
    "$@" >&2
    exit 1
  fi
  sleep 3
done
echo "cdd-wait: $what (after $((SECONDS - start))s)"
EOF
chmod 0755 /usr/local/sbin/cdd-wait

cat >/usr/local/sbin/cdd-apt-install-stopped <<'EOF'
#!/usr/bin/env bash
# cdd-apt-install-stopped PKG...: cdd-apt-install, but the packages may not start their services.
# They start once configured, so their logs never hold the errors of an unconfigured first start.
set -euo pipefail
rc=/usr/sbin/policy-rc.d
if [ -e "$rc" ] && ! grep -q cdd-apt-install-stopped "$rc"; then
  echo "cdd-apt-install-stopped: $rc belongs to someone else: services may start" >&2
  exec cdd-apt-install "$@"
fi
printf '#!/bin/sh\n# cdd-apt-install-stopped: no service starts during installation\nexit 101\n' >"$rc"
chmod 0755 "$rc"
trap 'rm -f "$rc"' EXIT
cdd-apt-install "$@"
EOF
chmod 0755 /usr/local/sbin/cdd-apt-install-stopped

cat >/usr/local/sbin/cdd-os-register <<'EOF'
#!/usr/bin/env bash
# cdd-os-register NAME TYPE DESCRIPTION PASSWORD URL: what the install guide does for each
# service before installing it: user NAME with the admin role in the service project, the
# service of TYPE, and its public, internal and admin endpoints at URL. Idempotent.
set -euo pipefail
. /root/admin-openrc
name="$1" type="$2" description="$3" password="$4" url="$5"
os() { timeout 120 openstack "$@"; }

if os user show --domain default "$name" >/dev/null 2>&1; then
  os user set --password "$password" "$name"
else
  os user create --domain default --password "$password" "$name" >/dev/null
fi
os role add --project service --user "$name" admin
os service show "$type" >/dev/null 2>&1 \
  || os service create --name "$name" --description "$description" "$type" >/dev/null
for iface in public internal admin; do
  rows=$(os endpoint list --service "$type" --interface "$iface" --region "$OS_REGION_NAME" -f value -c ID -c URL)
  [ "$(awk '{ print $2 }' <<<"$rows")" = "$url" ] && continue
  for id in $(awk '{ print $1 }' <<<"$rows"); do os endpoint delete "$id"; done
  os endpoint create --region "$OS_REGION_NAME" "$type" "$iface" "$url" >/dev/null
done
echo "cdd-os-register: $name ($type) at $url"
EOF
chmod 0755 /usr/local/sbin/cdd-os-register

cat >/usr/local/sbin/cdd-ksat <<'EOF2'
#!/usr/bin/env bash
# cdd-ksat FILE SECTION USER PASSWORD: keystonemiddleware's (or a client's) credentials in
# FILE's SECTION: USER of the service project, against this environment's Keystone. Idempotent.
# The region matters: Debian's files say regionOne, and auth_token then finds no endpoint.
set -euo pipefail
. /etc/cdd-openstack.env
file="$1" section="$2" user="$3" password="$4"
while read -r key value; do
  crudini --set "$file" "$section" "$key" "$value"
done <<EOF3
auth_url $KEYSTONE_URL
region_name $REGION
auth_type password
project_domain_name Default
user_domain_name Default
project_name service
username $user
password $password
EOF3
if [ "$section" = keystone_authtoken ]; then
  crudini --set "$file" "$section" www_authenticate_uri "$KEYSTONE_URL"
fi
EOF2
chmod 0755 /usr/local/sbin/cdd-ksat

cat >/usr/local/sbin/cdd-tracebacks <<'EOF2'
#!/usr/bin/env bash
# cdd-tracebacks LOG...: print the first line of every log record that carries a Python
# traceback, and fail if there is one. A record is the lines sharing oslo.log's
# "date time pid" prefix, so a chained traceback counts once. Exempt: Keystone's 404s, which it
# logs as ERRORs with a traceback (the client's name lookups ask for the id "service" before
# searching by name): they are answers, not failures.
exec awk '
  { k = $1 " " $2 " " $3 }
  !(k in first) { first[k] = FILENAME ": " $0 }
  /Traceback \(most recent call last\)/ { tb[k] = 1 }
  /keystone\.exception\.[A-Za-z]*NotFound/ { nf[k] = 1 }
  END { for (k in tb) if (!(k in nf)) { print first[k]; bad = 1 }; exit bad }
' "$@"
EOF2
chmod 0755 /usr/local/sbin/cdd-tracebacks

echo "openstack-common: $(openstack --version 2>&1), crudini, credentials in /etc/cdd-openstack.env"

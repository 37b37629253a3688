#!/usr/bin/env bash
# databases.sh: after openstack-base's database.sh (keystone, glance, nova, neutron), the
# databases the rest of the control plane needs: nova_api and nova_cell0 for the nova user, and
# placement with its own user. Idempotent.
set -euo pipefail

# database => user:password (throwaway test credentials, as in the OpenStack install guide)
EXTRA=(nova_api:nova:NOVA_DBPASS nova_cell0:nova:NOVA_DBPASS placement:placement:PLACEMENT_DBPASS)

sql=""
for entry in "${EXTRA[@]}"; do
  IFS=: read -r db user pass <<<"$entry"
  sql+="CREATE DATABASE IF NOT EXISTS \`$db\`;"
  for host in localhost '%'; do
    sql+="CREATE USER IF NOT EXISTS '$user'@'$host' IDENTIFIED BY '$pass';"
    sql+="GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'$host';"
  done
done
timeout 60 mariadb -u root <<<"$sql"

# prove every login over TCP, as the services will make it
for entry in "${EXTRA[@]}"; do
  IFS=: read -r db user pass <<<"$entry"
  got=$(timeout 30 mariadb -h 127.0.0.1 -u "$user" -p"$pass" "$db" -N -e 'SELECT DATABASE()')
  [ "$got" = "$db" ] || { echo "databases: $user cannot use $db (got '$got')" >&2; exit 1; }
done
echo "databases: ${EXTRA[*]%%:*} ready"

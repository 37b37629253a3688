#!/usr/bin/env bash
# database.sh: MariaDB from Debian, listening on every interface (so on the private address),
# with one database and one user per OpenStack service; each user has every privilege on its
# databases only, from anywhere ('%') and from localhost. Idempotent.
#   CDD_EXTRA_DATABASES  more database:user:password words, after the four services' own (the
#                        full control plane in vagrant/openstack adds nova_api, nova_cell0 and
#                        placement)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# database:user:password, throwaway test credentials as in the OpenStack install guide
DATABASES=(keystone:keystone:KEYSTONE_DBPASS glance:glance:GLANCE_DBPASS nova:nova:NOVA_DBPASS
           neutron:neutron:NEUTRON_DBPASS)
read -r -a extra <<<"${CDD_EXTRA_DATABASES:-}"
DATABASES+=("${extra[@]}")

cdd-apt-install mariadb-server

# Written after the package (whose first start creates /var/log/mysql), then one restart.
conf=/etc/mysql/mariadb.conf.d/99-openstack.cnf
want='# cdd-ci openstack-base (after the OpenStack install guide)
[mysqld]
bind-address = 0.0.0.0
skip-name-resolve
default-storage-engine = innodb
innodb_file_per_table = on
max_connections = 4096
collation-server = utf8_general_ci
character-set-server = utf8
log_error = /var/log/mysql/error.log

# without systemd the init script starts mariadbd-safe, which would send the log to syslog
[mysqld_safe]
skip-syslog
log_error = /var/log/mysql/error.log
'
changed=0
if [ "$(cat "$conf" 2>/dev/null)" != "$(printf '%s' "$want")" ]; then
  printf '%s' "$want" >"$conf"
  changed=1
fi
install -d -o mysql -g adm -m 2750 /var/log/mysql
cdd-service-up mariadb
if [ "$changed" = 1 ]; then
  if [ -d /run/systemd/system ]; then timeout 300 systemctl restart mariadb
  else timeout 300 service mariadb restart; fi
fi
for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
mariadb-admin ping >/dev/null

sql=""
for entry in "${DATABASES[@]}"; do
  IFS=: read -r db user pass <<<"$entry"
  sql+="CREATE DATABASE IF NOT EXISTS \`$db\`;"
  for host in localhost '%'; do
    sql+="CREATE USER IF NOT EXISTS '$user'@'$host' IDENTIFIED BY '$pass';"
    sql+="ALTER USER '$user'@'$host' IDENTIFIED BY '$pass';"
    sql+="GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'$host';"
  done
done
timeout 60 mariadb -u root <<<"$sql"

# prove every login over TCP, as the services will make it, rather than leave it to the checks
for entry in "${DATABASES[@]}"; do
  IFS=: read -r db user pass <<<"$entry"
  got=$(timeout 30 mariadb -h 127.0.0.1 -u "$user" -p"$pass" "$db" -N -e 'SELECT DATABASE()')
  [ "$got" = "$db" ] || { echo "database: $user cannot use $db (got '$got')" >&2; exit 1; }
done
echo "database: mariadb $(dpkg-query -W -f='${Version}' mariadb-server) up on 3306, databases: ${DATABASES[*]%%:*}"

#!/usr/bin/env bash
# worker.sh IP MANAGER_IP: join the swarm as a worker, with the token the manager serves on its
# private address (port 8999) once it has initialised the swarm. Idempotent.
set -euo pipefail
ip="$1" manager="$2"

if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = active ]; then
  echo "worker: already in the swarm"
  exit 0
fi
token=""
for _ in $(seq 300); do
  token=$(curl -fsS --max-time 5 "http://$manager:8999/worker" 2>/dev/null || true)
  [ -n "$token" ] && break
  sleep 3
done
[ -n "$token" ] || { echo "worker: no join token from $manager:8999 in 15 minutes" >&2; exit 1; }
timeout 120 docker swarm join --token "$token" --advertise-addr "$ip" "$manager:2377"

#!/usr/bin/env bash
# manager.sh IP NODES: make this machine the swarm's manager, hand the workers their join token,
# wait for NODES nodes (itself included), then run the `web` service: three replicas of
# cdd/httpd:1, at most one per node, each published on its node's port 8080. Idempotent.
#
# Publishing is in host mode (each task on its own node's port), not through the ingress routing
# mesh: the mesh balances with the kernel's IPVS, which some kernels (like this project's CI
# host's) do not have; host mode works on every kernel and still answers on every node.
set -euo pipefail
ip="$1" nodes="$2"
TOKEN_DIR=/srv/cdd-swarm

state=$(docker info -f '{{.Swarm.LocalNodeState}}')
if [ "$state" != active ]; then
  timeout 120 docker swarm init --advertise-addr "$ip" --listen-addr "$ip:2377" >/dev/null
fi

# The workers fetch the join token over the private network: a throwaway environment's token,
# served by busybox's httpd on the private address only.
install -d -m 0755 "$TOKEN_DIR"
docker swarm join-token -q worker >"$TOKEN_DIR/worker.tmp"
mv "$TOKEN_DIR/worker.tmp" "$TOKEN_DIR/worker"
if ! systemctl is-active --quiet cdd-swarm-token; then
  systemctl reset-failed cdd-swarm-token 2>/dev/null || true
  systemd-run --unit cdd-swarm-token --quiet busybox httpd -f -p "$ip:8999" -h "$TOKEN_DIR"
fi

ready() { [ "$(docker node ls -q --filter role=worker | wc -l)" -ge $((nodes - 1)) ] &&
          [ "$(docker node ls --format '{{.Status}}' | grep -c '^Ready$')" -ge "$nodes" ]; }
for _ in $(seq 300); do ready && break; sleep 3; done
ready || { docker node ls >&2; echo "manager: fewer than $nodes nodes joined in 15 minutes" >&2; exit 1; }

if ! docker service inspect web >/dev/null 2>&1; then
  # --no-resolve-image: the image is on every node and in no registry
  timeout 300 docker service create --quiet --detach=false --name web --no-resolve-image \
    --replicas 3 --replicas-max-per-node 1 --hostname '{{.Node.Hostname}}' \
    --publish mode=host,published=8080,target=80 cdd/httpd:1 >/dev/null
fi
docker node ls
docker service ps web

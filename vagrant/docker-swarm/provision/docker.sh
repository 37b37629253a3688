#!/usr/bin/env bash
# docker.sh: Docker from Debian (docker.io) and the image the swarm's service runs, built here
# because no registry can be reached: cdd/httpd:1, FROM scratch with Debian's static busybox,
# serving "hello from <hostname>" on port 80. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

IMAGE=cdd/httpd:1
RECIPE_REV=1   # bump when the image below changes

cdd-apt-install docker.io busybox-static curl
cdd-service-up docker
timeout 60 docker info >/dev/null

current=$(docker image inspect -f '{{ index .Config.Labels "cdd.recipe" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" != "$RECIPE_REV" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  install -D -m 0755 /bin/busybox "$work/rootfs/bin/busybox"
  mkdir -p "$work/rootfs/www"
  # The page says which host the task runs on: the service gives each task its node's name.
  cat >"$work/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
LABEL cdd.recipe="$RECIPE_REV"
EXPOSE 80
ENTRYPOINT ["/bin/busybox", "sh", "-c", "echo \"hello from \$(/bin/busybox hostname)\" >/www/index.html && exec /bin/busybox httpd -f -p 80 -h /www"]
DOCKERFILE
  DOCKER_BUILDKIT=0 timeout 300 docker build -q -t "$IMAGE" "$work" >/dev/null
fi
echo "docker: $(docker version -f '{{.Server.Version}}'), image $IMAGE $(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19)"

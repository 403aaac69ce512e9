#!/usr/bin/env bash
# Builds the image and checks that a container of it becomes healthy and
# ready: the example job runs as a non-root user on a read-only root
# filesystem, writing only to its volume. Needs a Docker engine; where
# there is none (as on the development machines), it says so and exits 0,
# so the test suite does not depend on it (tests/deploy.rs runs the binary
# as the image would instead).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "docker-smoke: no Docker engine answers here (docker info failed); not building the image"
  exit 0
fi
image=sluice:smoke
docker build -f docker/Dockerfile -t "$image" .
name="sluice-smoke-$$"
volume="sluice-smoke-$$"
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; docker volume rm "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$name" --read-only -v "$volume:/var/lib/sluice" -p 127.0.0.1::9898 "$image" >/dev/null
port=$(docker port "$name" 9898/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 &&
     [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ]; then
    echo "docker-smoke: $image is healthy and ready on port $port"
    docker exec "$name" sh -c 'ls /var/lib/sluice'
    exit 0
  fi
  sleep 2
done
docker logs "$name" | tail -50
echo "docker-smoke: the container never became healthy and ready" >&2
exit 1

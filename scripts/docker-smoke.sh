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
    break
  fi
  sleep 2
done
if ! curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
  docker logs "$name" | tail -50
  echo "docker-smoke: the container never became healthy and ready" >&2
  exit 1
fi

# The compose stack: both replicas ready, Prometheus scraping both, and
# the example job's Parquet in MinIO.
compose=(docker compose -f docker/compose.yaml)
trap 'cleanup; "${compose[@]}" down -v >/dev/null 2>&1 || true' EXIT
"${compose[@]}" up -d --build
for _ in $(seq 1 90); do
  up=$(curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=sum(up%7Bjob%3D%22sluice%22%7D)' 2>/dev/null |
    sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)".*/\1/p')
  objects=$("${compose[@]}" run --rm --entrypoint sh buckets -c \
    'mc alias set local http://minio:9000 sluice sluice-secret >/dev/null && mc ls -r local/lake/web_traffic_daily/' 2>/dev/null |
    grep -c '\.parquet' || true)
  if curl -fsS http://127.0.0.1:9898/readyz >/dev/null 2>&1 &&
     curl -fsS http://127.0.0.1:9899/readyz >/dev/null 2>&1 &&
     [ "${up:-0}" = 2 ] && [ "${objects:-0}" -gt 0 ]; then
    echo "docker-smoke: compose stack up: 2 replicas ready and scraped, $objects Parquet file(s) in MinIO"
    exit 0
  fi
  sleep 2
done
"${compose[@]}" logs --tail 50
echo "docker-smoke: the compose stack did not come up (replicas scraped: ${up:-0}, Parquet files: ${objects:-0})" >&2
exit 1

#!/usr/bin/env bash
# Start Debian's docker-registry (CNCF distribution 2.8), a real OCI registry, on 127.0.0.1:PORT.
# dockerd treats 127.0.0.0/8 as an insecure registry by default, so no TLS is needed for local pushes.
# Idempotent: if something already answers /v2/ on that port, nothing happens. Runs as root.
# Usage: start-registry.sh [PORT]   (default $MLREPO_REGISTRY_PORT or 5000). Prints host:port last.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"

PORT=${1:-${MLREPO_REGISTRY_PORT:-5000}}
STORAGE=${MLREPO_REGISTRY_STORAGE:-/var/lib/mlrepo-registry/$PORT}
LOG=${MLREPO_REGISTRY_LOG:-/var/log/mlrepo-registry-$PORT.log}
ADDR="127.0.0.1:$PORT"

answers() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ADDR/v2/', timeout=1)" 2>/dev/null; }

if answers; then echo "$ADDR"; exit 0; fi

command -v docker-registry >/dev/null 2>&1 || \
    apt_install docker-registry >/dev/null

mkdir -p "$STORAGE"
config="$STORAGE/config.yml"
cat >"$config" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STORAGE/data
  delete:
    enabled: true
http:
  addr: $ADDR
YAML
nohup docker-registry serve "$config" >>"$LOG" 2>&1 </dev/null &
echo $! >"$STORAGE/pid"

for _ in $(seq 1 60); do
    if answers; then echo "$ADDR"; exit 0; fi
    sleep 0.5
done
echo "docker-registry did not answer on $ADDR; last log lines:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1

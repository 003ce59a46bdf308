#!/usr/bin/env bash
# Start the Docker engine the way architecture.md §5 says works on these machines (no bridge, no
# iptables, overlay2, its own socket and data root), so that mlrepo never touches a system dockerd.
# Idempotent: if the engine on our socket already answers, nothing happens. Runs as root.
# Prints the DOCKER_HOST to use on its last line.
set -euo pipefail

SOCK=${MLREPO_DOCKER_SOCK:-/run/mlrepo-docker.sock}
DATA_ROOT=${MLREPO_DOCKER_DATA_ROOT:-/var/lib/mlrepo-docker}
PIDFILE=${MLREPO_DOCKER_PIDFILE:-/run/mlrepo-docker.pid}
LOG=${MLREPO_DOCKER_LOG:-/var/log/mlrepo-dockerd.log}
export DOCKER_HOST="unix://$SOCK"

source "$(dirname "$0")/_apt.sh"

if docker info >/dev/null 2>&1; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    exit 0
fi

command -v dockerd >/dev/null 2>&1 || apt_install docker.io

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    : # started by someone else a moment ago; just wait for it below
else
    rm -f "$PIDFILE"
    mkdir -p "$DATA_ROOT"
    nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        --host "unix://$SOCK" --data-root "$DATA_ROOT" --pidfile "$PIDFILE" \
        --exec-root /run/mlrepo-docker-exec >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        exit 0
    fi
    sleep 0.5
done
echo "dockerd did not answer on $SOCK within 60 s; last log lines:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1

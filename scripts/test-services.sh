#!/usr/bin/env bash
# Make sure the system services the test suite needs can run on this machine.
#
# The tests start their own throwaway servers (PostgreSQL cluster, redis-server, dockerd, registry...)
# through fixtures; this script only installs the programs when they are missing, so it is quick when
# everything is present. Without root (and without sudo) it prints what is missing and carries on: the
# tests that need a missing service then skip locally and FAIL under CI=true.
#
# Areas add their own steps as scripts/test-services.d/NN-<area>.sh (run in name order, sourced with
# the helpers below available: need_packages PKG..., have CMD). Keep each idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=0
MISSING=()

have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif have sudo && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1
    fi
}

# need_packages PKG... : apt-get install the Debian packages that are not installed yet.
need_packages() {
    local wanted=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || wanted+=("$pkg")
    done
    [ "${#wanted[@]}" -eq 0 ] && return 0
    if ! have apt-get; then MISSING+=("${wanted[@]}"); return 0; fi
    echo "test-services: installing ${wanted[*]}"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || { MISSING+=("${wanted[@]}"); return 0; }
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" \
        || MISSING+=("${wanted[@]}")
}

# --- foundation: PostgreSQL server binaries (tests start a throwaway cluster), Redis, bubblewrap ---------
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_packages postgresql
fi
have psql || need_packages postgresql-client
have redis-server || need_packages redis-server
have bwrap || need_packages bubblewrap

# --- areas: executor (docker.io, base image), publishing (docker-registry), ... ----------------------------
for step in scripts/test-services.d/*.sh; do
    [ -e "$step" ] || continue
    echo "test-services: $step"
    # shellcheck source=/dev/null
    source "$step"
done

if [ "${#MISSING[@]}" -gt 0 ]; then
    echo "test-services: could not install: ${MISSING[*]} (tests needing them skip locally, fail with CI=true)" >&2
fi
exit 0

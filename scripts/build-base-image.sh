#!/usr/bin/env bash
# Build the base image every mlrepo sandbox image starts FROM. Nothing can be pulled on these machines,
# so the root filesystem is made with debootstrap from the Debian mirror apt already uses, then imported.
# Cached twice: the image itself (skip when present) and a rootfs tarball under /var/cache/mlrepo so a
# fresh engine re-imports in seconds instead of re-downloading (~35 s, ~320 MB). Runs as root.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"

IMAGE=${MLREPO_BASE_IMAGE:-mlrepo/python-base:bookworm}
SUITE=${MLREPO_BASE_SUITE:-bookworm}
PACKAGES=${MLREPO_BASE_PACKAGES:-python3-minimal,python3-numpy}
CACHE_DIR=${MLREPO_CACHE_DIR:-/var/cache/mlrepo}
TARBALL="$CACHE_DIR/python-base-$SUITE.tar"
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/mlrepo-docker.sock}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE present"
    exit 0
fi

debian_mirror() {
    # The first deb URI apt is configured with (deb822 .sources or one-line .list), minus -security.
    local uri
    uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
          | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk '{for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

mkdir -p "$CACHE_DIR"
if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null 2>&1 || \
        apt_install debootstrap >/dev/null
    rootfs=$(mktemp -d /var/tmp/mlrepo-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$(debian_mirror)" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # Write to a temporary name first: a half-written tarball must never look like a cached one.
    tar -C "$rootfs" -c . >"$TARBALL.partial"
    mv "$TARBALL.partial" "$TARBALL"
fi
docker import "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE imported from $TARBALL"

#!/usr/bin/env bash
# Install bubblewrap, the sandbox used where no Docker engine runs, and python3-numpy so the host's
# /usr/bin/python3 (the runtime bound read-only into bwrap sandboxes) matches the base image's
# python3-minimal + python3-numpy. Idempotent. Runs as root.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
/usr/bin/python3 -c "import numpy" 2>/dev/null || missing+=(python3-numpy)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}" >/dev/null
fi
bwrap --version

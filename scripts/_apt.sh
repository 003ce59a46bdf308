# Sourced by the setup scripts: install Debian packages without prompts, waiting for the dpkg lock
# (several setup scripts may run at once in CI) and refreshing the package lists once if they are stale.
apt_install() {
    local apt=(apt-get -o DPkg::Lock::Timeout=300)
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null 2>&1 \
        || { "${apt[@]}" update >/dev/null && \
             DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null; }
}

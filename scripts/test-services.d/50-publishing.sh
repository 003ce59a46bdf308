# Publishing: the local OCI registry (Debian's docker-registry) that images are pushed to and pulled from
# by digest. Sourced by scripts/test-services.sh; needs root, otherwise the registry tests skip locally and
# fail under CI=true. The port is the one tests/publishing uses (MLREPO_TEST_REGISTRY_PORT, default 5000).
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/start-registry.sh "${MLREPO_TEST_REGISTRY_PORT:-5000}" >/dev/null || MISSING+=(docker-registry)
else
    echo "test-services: not root, leaving the container registry as it is" >&2
fi

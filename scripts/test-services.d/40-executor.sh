# Executor sandboxes: bubblewrap (+ python3-numpy for the runtime it binds), the Docker engine on its own
# socket, and the locally built base image (cached, so quick after the first build). Sourced by
# scripts/test-services.sh; needs root, otherwise the sandbox tests skip locally and fail under CI=true.
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/install-bwrap.sh >/dev/null || MISSING+=(bubblewrap)
    bash scripts/start-dockerd.sh >/dev/null || MISSING+=(dockerd)
    bash scripts/build-base-image.sh >/dev/null || MISSING+=(mlrepo/python-base)
else
    echo "test-services: not root, leaving bubblewrap/dockerd/base image as they are" >&2
fi

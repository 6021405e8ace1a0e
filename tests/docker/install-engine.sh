#!/bin/sh
# Install what the Docker end-to-end tests need, if it is missing:
# docker.io (dockerd 20.10 + containerd + runc + tini) and debootstrap (builds the
# local base image: no container registry is reachable here).
# Needs root and apt; safe to run repeatedly (does nothing when both are present).
set -eu
if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-engine.sh: not root, cannot install docker.io/debootstrap" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
command -v dockerd >/dev/null && command -v debootstrap >/dev/null

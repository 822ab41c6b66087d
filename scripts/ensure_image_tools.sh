#!/usr/bin/env bash
# Make sure the tools that build and run deploy/'s images without a registry are present: podman
# (rootful), runc (crun refuses this kind of host's hybrid cgroup layout) and debootstrap (the local
# Debian base), all Debian packages.
set -euo pipefail
packages=()
command -v podman >/dev/null || packages+=(podman)
command -v runc >/dev/null || packages+=(runc)
command -v debootstrap >/dev/null || packages+=(debootstrap)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${packages[*]} (Debian packages) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    exit 0
fi
echo "The image tools are missing: ${packages[*]}." >&2
echo "Install them with: sudo apt-get install -y ${packages[*]}" >&2
exit 1

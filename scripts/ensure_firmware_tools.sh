#!/usr/bin/env bash
# Make sure the firmware toolchain is present: gcc (host builds), arm-none-eabi-gcc with newlib-nano
# (Cortex-M7 builds) and qemu-system-arm (the emulated board), all Debian packages.
set -euo pipefail
packages=()
command -v gcc >/dev/null || packages+=(gcc)
command -v arm-none-eabi-gcc >/dev/null || packages+=(gcc-arm-none-eabi)
[ -f /usr/lib/arm-none-eabi/newlib/thumb/v7e-m/nofp/libc_nano.a ] || packages+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || packages+=(qemu-system-arm)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${packages[*]} (Debian packages) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    exit 0
fi
echo "The firmware toolchain is missing: ${packages[*]}." >&2
echo "Install it with: sudo apt-get install -y ${packages[*]}" >&2
exit 1

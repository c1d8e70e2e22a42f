#!/usr/bin/env bash
# Install the system packages the test suite and the VM need, only when something is missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v canplayer >/dev/null 2>&1 || need+=(can-utils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# make lint checks the unit with systemd-analyze; make test-systemd builds its VM's root with these.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
# the fleet tests, benchmark and demo start a throwaway cluster (tests/integration/postgres.py)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    echo "sysdeps: installing ${need[*]}" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Build what the systemd test VM boots (see docs/vm-tests.md, "The systemd VM"):
#   - the kernel of the SocketCAN VM (.ci/vm/build.sh, reused as it is) and an initramfs made from that
#     VM's initramfs plus the ext4/virtio-blk modules and .ci/systemd-vm/init, which switch_roots to systemd;
#   - a minimal Debian root (debootstrap --variant=minbase from the host's apt mirror) with systemd as PID 1,
#     udev, systemd-networkd (vcan0/vcan1), mosquitto, and two venvs: /opt/firmware-agent (the package's
#     dependencies, installed the documented way) and /opt/vm-tests (pytest);
#   - per run (`build.sh --disk`): the current checkout's wheel installed into /opt/firmware-agent and an
#     ext4 disk image of the root (mkfs.ext4 -d), so the cached root itself is never booted or changed.
# Everything lives in .cache/systemd-vm/ and is rebuilt only when its inputs change.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$repo/.cache/systemd-vm"
vmcache="$repo/.cache/vm"
log() { echo "systemd-vm-build: $*" >&2; }
die() { echo "systemd-vm-build: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mkfs.ext4 -d keeps owners)"
mkdir -p "$cache"

packages=systemd,systemd-sysv,udev,iproute2,mosquitto,mosquitto-clients,python3,python3-venv,sqlite3,procps
# --- kernel and the SocketCAN VM's initramfs ---------------------------------------------------------------
bash "$repo/.ci/vm/build.sh"
release="$(readlink "$vmcache/vmlinuz")"
release="${release##*/vmlinuz-}"
moddir="$vmcache/kernel/root/lib/modules/$release"

initramfs="$cache/initramfs.cpio.gz"
inputs="$(cat "$here/init" "$here/build.sh" "$vmcache/initramfs.cpio.gz" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$cache/initramfs.inputs" 2>/dev/null)" != "$inputs" ] || [ ! -f "$initramfs" ]; then
    staging="$(mktemp -d "$cache/initramfs.XXXXXX")"
    (cd "$staging" && gzip -dc "$vmcache/initramfs.cpio.gz" | cpio -id --quiet)
    for applet in switch_root umount mkdir; do ln -sf busybox "$staging/bin/$applet"; done
    # ext4 after what it needs; insmod resolves nothing by itself.
    for name in crc16 crc32c_generic mbcache jbd2 ext4 virtio_blk; do
        found="$(find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) -print -quit)"
        [ -n "$found" ] || die "module $name not found under $moddir"
        case "$found" in
            *.ko.xz) xz -dc "$found" >"$staging/lib/modules/$name.ko" ;;
            *.ko.zst) zstd -qdc "$found" >"$staging/lib/modules/$name.ko" ;;
            *) cp "$found" "$staging/lib/modules/$name.ko" ;;
        esac
        echo "$name" >>"$staging/lib/modules/order"
    done
    install -m 0755 "$here/init" "$staging/init"
    (cd "$staging" && find . -print0 | cpio --null --create --format=newc --quiet) | gzip -1 >"$initramfs.tmp"
    mv "$initramfs.tmp" "$initramfs"
    rm -rf "$staging"
    echo "$inputs" >"$cache/initramfs.inputs"
    log "built $initramfs"
fi

# --- the Debian root ---------------------------------------------------------------------------------------
root="$cache/root"
deps="$(cd "$repo" && .venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))')"
root_inputs="$(printf '%s\n%s\n' "$packages" "$deps" | cat - "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$cache/root.inputs" 2>/dev/null)" != "$root_inputs" ] || [ ! -f "$root/.complete" ]; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    . /etc/os-release
    # The host's own Debian mirror (the first deb.debian.org-style URI apt is configured with).
    mirror="${DEBOOTSTRAP_MIRROR:-$({ grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } | awk '!/security/ {print $2; exit}')}"
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBOOTSTRAP_MIRROR"
    rm -rf "$root.partial" "$root"
    log "debootstrap $VERSION_CODENAME from $mirror (about a minute)"
    debootstrap --variant=minbase --include="$packages" "$VERSION_CODENAME" "$root.partial" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 || die "debootstrap failed; see $cache/debootstrap.log"
    r="$root.partial"
    echo "fa-systemd-vm" >"$r/etc/hostname"
    mkdir -p "$r/host"
    # The host's root, read-only: the tests and the checkout's wheel come from there.
    echo "hostroot /host 9p trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000,nofail 0 0" >"$r/etc/fstab"
    for i in 0 1; do
        printf '[NetDev]\nName=vcan%s\nKind=vcan\n' "$i" >"$r/etc/systemd/network/10-vcan$i.netdev"
        printf '[Match]\nName=vcan%s\n\n[Link]\nRequiredForOnline=no\n' "$i" >"$r/etc/systemd/network/10-vcan$i.network"
    done
    printf '[Match]\nName=lo\n' >"$r/etc/systemd/network/05-lo.network"
    chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
    # Nothing on the console but the job, and nothing that waits for a network that is not there.
    chroot "$r" systemctl mask serial-getty@ttyS0.service getty@tty1.service \
        systemd-networkd-wait-online.service e2scrub_reap.service >/dev/null 2>&1
    install -m 0755 "$here/vm-job" "$r/usr/local/sbin/vm-job"
    cat >"$r/etc/systemd/system/vm-job.service" <<'UNIT'
[Unit]
Description=run the test job named by vmjob= on the kernel command line, then power off
After=multi-user.target systemd-networkd.service mosquitto.service
Wants=mosquitto.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-job
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
UNIT
    chroot "$r" systemctl enable vm-job.service >/dev/null 2>&1
    # Wheels built here with the host's pip (its index and constraints), installed offline in the chroot.
    wheels="$r/tmp/wheels"
    mkdir -p "$wheels"
    printf '%s\n' "$deps" >"$wheels/requirements.txt"
    "$repo/.venv/bin/pip" wheel -q -w "$wheels" -r "$wheels/requirements.txt" pytest pytest-timeout
    chroot "$r" python3 -m venv /opt/firmware-agent
    chroot "$r" /opt/firmware-agent/bin/pip install -q --no-index --find-links /tmp/wheels -r /tmp/wheels/requirements.txt
    chroot "$r" python3 -m venv /opt/vm-tests
    chroot "$r" /opt/vm-tests/bin/pip install -q --no-index --find-links /tmp/wheels pytest pytest-timeout
    rm -rf "$wheels"
    touch "$r/.complete"
    mv "$r" "$root"
    echo "$root_inputs" >"$cache/root.inputs"
    log "root ready ($(du -sh "$root" | cut -f1))"
fi

# --- per run: this checkout's wheel in /opt/firmware-agent, then the disk image ------------------------
if [ "${1:-}" = "--disk" ]; then
    rm -rf "$cache/wheel" && mkdir -p "$cache/wheel"
    (cd "$repo" && .venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$cache/wheel" .) ||
        die "cannot build the wheel of $repo"
    wheel="$(ls "$cache/wheel"/firmware_agent-*.whl)"
    mkdir -p "$root/tmp/wheel" && cp "$wheel" "$root/tmp/wheel/"
    chroot "$root" /opt/firmware-agent/bin/pip install -q --no-deps --no-index --force-reinstall "/tmp/wheel/${wheel##*/}"
    rm -rf "$root/tmp/wheel"
    rm -f "$cache/disk.img"
    mkfs.ext4 -q -F -L root -d "$root" "$cache/disk.img" 3G || die "mkfs.ext4 -d failed"
    log "disk image ready"
fi

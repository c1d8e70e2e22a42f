#!/usr/bin/env bash
# Build what the SocketCAN test VM boots: Debian's stock kernel and a busybox initramfs that loads the
# virtio/9p/CAN modules, mounts the host's root read-only and runs a job inside it (see .ci/vm/init).
#
# Everything lands in .cache/vm/ (git-ignored) and is rebuilt only when missing or when this script,
# the init script or the kernel changed. Prints nothing but progress lines on stderr.
# Usage: .ci/vm/build.sh            (paths of the results: .cache/vm/vmlinuz, .cache/vm/initramfs.cpio.gz)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$repo/.cache/vm"

# The order matters: insmod resolves no dependencies, so each module follows the ones it needs.
modules=(
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    netfs fscache 9pnet 9pnet_virtio 9p
    can can-raw can-dev vcan
)

log() { echo "vm-build: $*" >&2; }
die() { echo "vm-build: error: $*" >&2; exit 1; }

mkdir -p "$cache"

# --- kernel: the package Debian's linux-image-amd64 metapackage points at, fetched once -----------------
kernel_dir="$cache/kernel"
if [ ! -f "$kernel_dir/.complete" ]; then
    command -v apt-get >/dev/null || die "apt-get not found: the VM kernel comes from Debian's archive"
    # The metapackage depends on exactly one versioned image package (linux-image-6.1.0-NN-amd64).
    image_pkg="$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)"
    if [ -z "$image_pkg" ]; then
        log "apt does not know linux-image-amd64 yet; running apt-get update"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        image_pkg="$(apt-cache depends linux-image-amd64 |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)"
    fi
    [ -n "$image_pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package with apt-cache depends"
    log "downloading $image_pkg"
    download="$(mktemp -d "$cache/download.XXXXXX")"
    trap 'rm -rf "$download"' EXIT
    # apt-get download writes to the current directory; _apt cannot write to a root-owned temp folder,
    # which only costs a warning, so it is silenced.
    (cd "$download" && apt-get download -q "$image_pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
        die "apt-get download $image_pkg failed"
    rm -rf "$kernel_dir"
    mkdir -p "$kernel_dir/root"
    dpkg -x "$download"/"$image_pkg"_*.deb "$kernel_dir/root"
    echo "$image_pkg" >"$kernel_dir/package"
    touch "$kernel_dir/.complete"
    rm -rf "$download"
    trap - EXIT
fi
image_pkg="$(cat "$kernel_dir/package")"
release="${image_pkg#linux-image-}"
vmlinuz="$kernel_dir/root/boot/vmlinuz-$release"
moddir="$kernel_dir/root/lib/modules/$release"
[ -f "$vmlinuz" ] || die "$vmlinuz missing: remove $kernel_dir and rerun"

# --- busybox: must be static, it runs before any library exists -----------------------------------------
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! LC_ALL=C ldd "$candidate" >/dev/null 2>&1; then
        busybox="$candidate"
        break
    fi
done
[ -n "$busybox" ] || die "no statically linked busybox found: install busybox-static (make sysdeps)"

# --- initramfs: rebuilt when an input changed --------------------------------------------------------------
initramfs="$cache/initramfs.cpio.gz"
inputs_hash="$(cat "$here/build.sh" "$here/init" "$busybox" "$kernel_dir/package" | sha256sum | cut -d' ' -f1)"
if [ -f "$initramfs" ] && [ "$(cat "$cache/initramfs.inputs" 2>/dev/null)" = "$inputs_hash" ]; then
    ln -sf "kernel/root/boot/vmlinuz-$release" "$cache/vmlinuz"
    log "up to date ($image_pkg)"
    exit 0
fi

log "building initramfs for $release"
staging="$(mktemp -d "$cache/initramfs.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{bin,dev,proc,sys,host,lib/modules}
cp "$busybox" "$staging/bin/busybox"
for applet in sh mount umount insmod mkdir cat echo sleep poweroff sync chroot; do
    ln -s busybox "$staging/bin/$applet"
done
install -m 0755 "$here/init" "$staging/init"

: >"$staging/lib/modules/order"
for name in "${modules[@]}"; do
    found="$(find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) -print -quit)"
    [ -n "$found" ] || die "module $name not found under $moddir"
    case "$found" in
        *.ko.xz) xz -dc "$found" >"$staging/lib/modules/$name.ko" ;;
        *.ko.zst) zstd -qdc "$found" >"$staging/lib/modules/$name.ko" ;;
        *) cp "$found" "$staging/lib/modules/$name.ko" ;;
    esac
    echo "$name" >>"$staging/lib/modules/order"
done

(cd "$staging" && find . -print0 | cpio --null --create --format=newc --quiet) | gzip -1 >"$initramfs.tmp"
mv "$initramfs.tmp" "$initramfs"
echo "$inputs_hash" >"$cache/initramfs.inputs"
ln -sf "kernel/root/boot/vmlinuz-$release" "$cache/vmlinuz"
log "built $initramfs ($(du -h "$initramfs" | cut -f1)) for $image_pkg"

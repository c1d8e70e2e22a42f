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

apt_update() {
    log "apt does not know $1 yet; running apt-get update"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
}

# unpack_deb PACKAGE DIR: apt-get download PACKAGE and unpack it into DIR (replaced), marking it complete.
unpack_deb() {
    local package="$1" dir="$2" download
    command -v apt-get >/dev/null || die "apt-get not found: $package comes from Debian's archive"
    apt-cache show "$package" >/dev/null 2>&1 || apt_update "$package"
    log "downloading $package"
    download="$(mktemp -d "$cache/download.XXXXXX")"
    # apt-get download writes to the current directory; _apt cannot write to a root-owned temp folder,
    # which only costs a warning, so it is filtered out.
    if ! (cd "$download" && apt-get download -q "$package" 2>&1 |
        { grep -v '^W: Download is performed unsandboxed' || true; } >&2); then
        rm -rf "$download"
        die "apt-get download $package failed"
    fi
    rm -rf "$dir"
    mkdir -p "$dir/root"
    dpkg -x "$download"/"$package"_*.deb "$dir/root"
    rm -rf "$download"
    echo "$package" >"$dir/package"
    touch "$dir/.complete"
}

# --- kernel: the package Debian's linux-image-amd64 metapackage points at, fetched once -----------------
kernel_dir="$cache/kernel"
if [ ! -f "$kernel_dir/.complete" ]; then
    # The metapackage depends on exactly one versioned image package (linux-image-6.1.0-NN-amd64).
    image_pkg_of_meta() {
        apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
    }
    image_pkg="$(image_pkg_of_meta)"
    if [ -z "$image_pkg" ]; then
        apt_update linux-image-amd64
        image_pkg="$(image_pkg_of_meta)"
    fi
    [ -n "$image_pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package with apt-cache depends"
    unpack_deb "$image_pkg" "$kernel_dir"
fi
image_pkg="$(cat "$kernel_dir/package")"
release="${image_pkg#linux-image-}"
vmlinuz="$kernel_dir/root/boot/vmlinuz-$release"
moddir="$kernel_dir/root/lib/modules/$release"
[ -f "$vmlinuz" ] || die "$vmlinuz missing: remove $kernel_dir and rerun"

# --- busybox: must be static, it runs before any library exists -----------------------------------------
# The host's busybox may be the dynamically linked `busybox` package (initramfs-tools pulls it in); then
# busybox-static is fetched into the cache instead of replacing the host's.
is_static() { [ -x "$1" ] && ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if is_static "$candidate"; then
        busybox="$candidate"
        break
    fi
done
if [ -z "$busybox" ]; then
    [ -f "$cache/busybox-static/.complete" ] || unpack_deb busybox-static "$cache/busybox-static"
    busybox="$cache/busybox-static/root/bin/busybox"
    is_static "$busybox" || die "$busybox from busybox-static is not a static executable"
fi

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
# The applets .ci/vm/init calls (echo, read, [ and case are shell builtins).
for applet in sh mount insmod cat sync poweroff chroot; do
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

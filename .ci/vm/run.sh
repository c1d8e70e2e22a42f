#!/usr/bin/env bash
# Run the SocketCAN tests (pytest -m vcan) inside a QEMU VM whose kernel has CAN and vcan, and exit with
# pytest's exit status. The VM sees the host's whole root read-only over 9p and chroots into it, so the
# checkout, its .venv and its tests/data keep their absolute paths inside.
#
# Usage: .ci/vm/run.sh [PYTEST_ARGS...]     (default: tests/vm; -m vcan is always added)
# Environment: VM_TIMEOUT seconds before the VM is killed (default 900), VM_MEMORY MiB (2048),
#              VM_CPUS (2), VM_CAN_INTERFACES number of vcanN interfaces to create (2).
# The whole console output is kept in .cache/vm/last-run.log (runs at the same time each write their own
# log and copy it there when done).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$repo/.cache/vm"
timeout_s="${VM_TIMEOUT:-900}"
name=vm-run
# shellcheck source=.ci/lib/vm.sh
. "$here/../lib/vm.sh"
check_host test-vcan

bash "$here/build.sh"

pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests/vm)

job="$(mktemp "$cache/job.XXXXXX")"
# The job runs in the chroot as root on a read-only root: no bytecode or pytest cache writes, and
# temporary files in the VM's tmpfs on /run (a tmpfs on /tmp would hide checkouts under /tmp).
cat >"$job" <<EOF
set -e
cd $(sh_quote "$repo")
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/run/vm-tmp HOME=/run/vm-home LANG=C.UTF-8
export PATH=$(sh_quote "$repo/.venv/bin"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "\$TMPDIR" "\$HOME"
exec .venv/bin/python -m pytest -p no:cacheprovider -p tests.vm.vm_plugin --color=no -m vcan$(quote_args "${pytest_args[@]}")
EOF

echo "$name: booting the VM (TCG, timeout ${timeout_s}s); console log in $cache/last-run.log" >&2
boot_vm "$cache/vmlinuz" "$cache/initramfs.cpio.gz" \
    "console=ttyS0 quiet loglevel=3 panic=-1 vmjob=$job vmcan=${VM_CAN_INTERFACES:-2}"

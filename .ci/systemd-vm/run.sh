#!/usr/bin/env bash
# Run the systemd tests (pytest -m systemd tests/systemd) inside a QEMU VM that boots a minimal Debian with
# systemd as PID 1 (built by .ci/systemd-vm/build.sh), and exit with pytest's exit status.
# Usage: .ci/systemd-vm/run.sh [PYTEST_ARGS...]      (default: tests/systemd)
# Environment: VM_TIMEOUT seconds (default 900), VM_MEMORY MiB (2048), VM_CPUS (2).
# The console output is kept in .cache/systemd-vm/last-run.log.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$repo/.cache/systemd-vm"
timeout_s="${VM_TIMEOUT:-900}"
name=systemd-vm-run
# shellcheck source=.ci/lib/vm.sh
. "$here/../lib/vm.sh"
check_host test-systemd

bash "$here/build.sh" --disk

pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests/systemd)

job="$(mktemp "$cache/job.XXXXXX")"
# The job runs as root under systemd in the VM; the checkout is the host's, read-only, under /host.
# --noconftest: the tests are self-contained; the checkout's conftests import what /opt/vm-tests lacks.
cat >"$job" <<JOB
cd /host$(sh_quote "$repo")
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/run/vm-tmp HOME=/root LANG=C.UTF-8
export FA_REPO=/host$(sh_quote "$repo")
mkdir -p "\$TMPDIR"
exec /opt/vm-tests/bin/python -m pytest -p no:cacheprovider --noconftest --color=no -m systemd$(quote_args "${pytest_args[@]}")
JOB

echo "$name: booting Debian with systemd (TCG, timeout ${timeout_s}s); console log in $cache/last-run.log" >&2
boot_vm "$repo/.cache/vm/vmlinuz" "$cache/initramfs.cpio.gz" \
    "console=ttyS0 quiet loglevel=3 panic=-1 systemd.show_status=false vmjob=$job" \
    -drive "file=$cache/disk.img,if=virtio,format=raw,cache=unsafe"

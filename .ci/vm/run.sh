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

die() { echo "vm-run: error: $*" >&2; exit 2; }

# The job path travels on the kernel command line, which splits on whitespace.
case "$repo" in *[[:space:]]*) die "the checkout path '$repo' contains whitespace; the VM cannot use it" ;; esac
[ -x "$repo/.venv/bin/python" ] || die "$repo/.venv/bin/python missing: run 'make test-vcan' (it builds the venv)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run 'make sysdeps'"

bash "$here/build.sh"

# Quote for /bin/sh (dash) inside the VM: wrap in single quotes, escape embedded ones.
sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests/vm)
quoted_args=""
for arg in "${pytest_args[@]}"; do quoted_args+=" $(sh_quote "$arg")"; done

job="$(mktemp "$cache/job.XXXXXX")"
log="$(mktemp "$cache/run.XXXXXX.log")"
last_log="$cache/last-run.log"
trap 'cp "$log" "$last_log"; rm -f "$job" "$log"' EXIT
# The job runs in the chroot as root on a read-only root: no bytecode or pytest cache writes, and
# temporary files in the VM's tmpfs on /run (a tmpfs on /tmp would hide checkouts under /tmp).
cat >"$job" <<EOF
set -e
cd $(sh_quote "$repo")
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/run/vm-tmp HOME=/run/vm-home LANG=C.UTF-8
export PATH=$(sh_quote "$repo/.venv/bin"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "\$TMPDIR" "\$HOME"
exec .venv/bin/python -m pytest -p no:cacheprovider -p tests.vm.vm_plugin --color=no -m vcan$quoted_args
EOF

echo "vm-run: booting the VM (TCG, timeout ${timeout_s}s); console log in $last_log" >&2
started=$(date +%s)
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp "${VM_CPUS:-2}" -m "${VM_MEMORY:-2048}" \
    -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 vmjob=$job vmcan=${VM_CAN_INTERFACES:-2}" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))

if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
    die "the VM did not finish within ${timeout_s}s (set VM_TIMEOUT to allow more); see $last_log"
fi
code="$(grep -a -o '^VM-EXIT-CODE=[0-9]*' "$log" | tail -n1 | cut -d= -f2)"
[ -n "$code" ] || die "QEMU exited ($qemu_status) without reporting the tests' exit code; see $last_log"
echo "vm-run: pytest in the VM exited with $code after ${elapsed}s (boot included)" >&2
exit "$code"

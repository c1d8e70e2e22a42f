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
die() { echo "systemd-vm-run: error: $*" >&2; exit 2; }

case "$repo" in *[[:space:]]*) die "the checkout path '$repo' contains whitespace; the VM cannot use it" ;; esac
[ -x "$repo/.venv/bin/python" ] || die "$repo/.venv/bin/python missing: run 'make test-systemd' (it builds the venv)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run 'make sysdeps'"

bash "$here/build.sh" --disk

sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests/systemd)
quoted_args=""
for arg in "${pytest_args[@]}"; do quoted_args+=" $(sh_quote "$arg")"; done

job="$(mktemp "$cache/job.XXXXXX")"
log="$(mktemp "$cache/run.XXXXXX.log")"
trap 'cp "$log" "$cache/last-run.log"; rm -f "$job" "$log"' EXIT
# The job runs as root under systemd in the VM; the checkout is the host's, read-only, under /host.
# --noconftest: the tests are self-contained; the checkout's conftests import what /opt/vm-tests lacks.
cat >"$job" <<JOB
cd /host$(sh_quote "$repo")
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/run/vm-tmp HOME=/root LANG=C.UTF-8
export FA_REPO=/host$(sh_quote "$repo")
mkdir -p "\$TMPDIR"
exec /opt/vm-tests/bin/python -m pytest -p no:cacheprovider --noconftest --color=no -m systemd$quoted_args
JOB

echo "systemd-vm-run: booting Debian with systemd (TCG, timeout ${timeout_s}s); console log in $cache/last-run.log" >&2
started=$(date +%s)
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp "${VM_CPUS:-2}" -m "${VM_MEMORY:-2048}" \
    -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot \
    -kernel "$repo/.cache/vm/vmlinuz" -initrd "$cache/initramfs.cpio.gz" \
    -drive "file=$cache/disk.img,if=virtio,format=raw,cache=unsafe" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 systemd.show_status=false vmjob=$job" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))
if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
    die "the VM did not finish within ${timeout_s}s (set VM_TIMEOUT to allow more); see $cache/last-run.log"
fi
code="$(grep -a -o '^VM-EXIT-CODE=[0-9]*' "$log" | tail -n1 | cut -d= -f2)"
[ -n "$code" ] || die "QEMU exited ($qemu_status) without reporting the tests' exit code; see $cache/last-run.log"
echo "systemd-vm-run: pytest in the VM exited with $code after ${elapsed}s (boot included)" >&2
exit "$code"

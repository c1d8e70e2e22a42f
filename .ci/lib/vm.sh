# Shared by .ci/vm/run.sh and .ci/systemd-vm/run.sh (sourced, not run): the checks before a VM run,
# quoting of pytest's arguments for the VM's /bin/sh, and the QEMU boot that reports pytest's exit code.
# The caller sets: name (for messages), repo, cache, timeout_s, and the make target that builds the venv.

die() { echo "$name: error: $*" >&2; exit 2; }

# Quote for /bin/sh (dash) inside the VM: wrap in single quotes, escape embedded ones.
sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# check_host MAKE_TARGET: the checkout path, its venv and qemu are usable.
check_host() {
    # The job path travels on the kernel command line, which splits on whitespace.
    case "$repo" in *[[:space:]]*) die "the checkout path '$repo' contains whitespace; the VM cannot use it" ;; esac
    [ -x "$repo/.venv/bin/python" ] || die "$repo/.venv/bin/python missing: run 'make $1' (it builds the venv)"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run 'make sysdeps'"
}

# quote_args ARGS...: the arguments quoted for the VM's shell, each after a space.
quote_args() {
    local quoted="" arg
    for arg in "$@"; do quoted+=" $(sh_quote "$arg")"; done
    printf '%s' "$quoted"
}

# boot_vm KERNEL INITRD APPEND [QEMU_ARGS...]: boot under TCG with the host's root read-only over 9p,
# keep the console in $cache/last-run.log, and exit with the exit code the VM's job reported.
boot_vm() {
    local kernel="$1" initrd="$2" append="$3" log started qemu_status elapsed code
    shift 3
    log="$(mktemp "$cache/run.XXXXXX.log")"
    # runs at the same time each write their own log and copy it to last-run.log when done
    trap 'cp "$log" "$cache/last-run.log"; rm -f "$log" ${job:+"$job"}' EXIT
    started=$(date +%s)
    set +e
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu max -smp "${VM_CPUS:-2}" -m "${VM_MEMORY:-2048}" \
        -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot \
        -kernel "$kernel" -initrd "$initrd" -append "$append" "$@" \
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
    echo "$name: pytest in the VM exited with $code after ${elapsed}s (boot included)" >&2
    exit "$code"
}

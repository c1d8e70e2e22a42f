#!/usr/bin/env bash
# Check the shipped unit the way the issue asks: `systemd-analyze security --offline=yes` exposure <= 1.5
# and `systemd-analyze verify` clean but for the agent's program not being installed on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/firmware-agent.service
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze missing (make sysdeps)" >&2; exit 2; }
security="$(systemd-analyze security --offline=yes --threshold=15 "$unit" 2>&1)" || {
    echo "$security" | grep -v '✓' >&2
    echo "check-unit: $unit: exposure above 1.5" >&2
    exit 1
}
echo "check-unit: $(echo "$security" | tail -n1 | sed 's/^→ //')"
verify="$(systemd-analyze verify "$unit" 2>&1 || true)"
problems="$(echo "$verify" | grep -v -e '^$' -e 'Command /opt/firmware-agent/bin/firmware-agent is not executable' || true)"
if [ -n "$problems" ]; then
    echo "$problems" >&2
    echo "check-unit: systemd-analyze verify $unit is not clean" >&2
    exit 1
fi
echo "check-unit: systemd-analyze verify $unit: clean (the program is not installed here)"

#!/usr/bin/env bash
# `make demo`: the agent's main job on an embedded default, end to end on this machine.
#   1. simulate a 60 s city drive of our reference vehicle (four buses) into a candump log;
#   2. decode it and print the per-message summary;
#   3. start a local mosquitto (127.0.0.1, random port) and a verifying subscriber;
#   4. run the agent on the drive with the demo campaigns: decode, collect, sign (COSE/Ed25519), outbox, MQTT;
#   5. verify every received batch (signature, topic binding, seq) with the vehicle's public key.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=out/demo
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
rm -rf "$OUT" && mkdir -p "$OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. simulate a 60 s city drive (persona ben, an emergency stop at 30 s)"
$BIN/firmware-agent sim --duration 60 --driver ben --scenario city --seed 1 --hard-brake 30 --out "$OUT/drive.log"

step "2. decode it with the vehicle's DBCs"
$BIN/firmware-agent decode "$OUT/drive.log" --summary

step "3. keys and a local broker"
$BIN/firmware-agent keys generate --out "$OUT/vehicle-key.pem"
$BIN/firmware-agent keys public --key "$OUT/vehicle-key.pem" -o "$OUT/vehicle-pub.pem"
port=$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$OUT/mosquitto.conf"
"$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
pids+=($!)
$BIN/python - "$port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("mosquitto did not start; see out/demo/mosquitto.log")
        time.sleep(0.05)
PY
echo "mosquitto listening on 127.0.0.1:$port"
$BIN/firmware-agent verify --broker "mqtt://127.0.0.1:$port" --public-key "$OUT/vehicle-pub.pem" \
    --save "$OUT/telemetry.dump" --format none --timeout 300 2>"$OUT/subscriber.log" &
subscriber=$!
pids+=($subscriber)
for _ in $(seq 200); do grep -q "subscribed" "$OUT/subscriber.log" 2>/dev/null && break; sleep 0.05; done

step "4. run the agent on the drive (campaigns: docs/examples/campaigns/demo.toml)"
$BIN/firmware-agent run --source "replay:$OUT/drive.log" --collect docs/examples/campaigns/demo.toml \
    --broker "mqtt://127.0.0.1:$port" --vehicle-id demo-0001 --signing-key "$OUT/vehicle-key.pem" \
    --state-dir "$OUT/state" --exit-at-end
sleep 0.5
kill -TERM "$subscriber" 2>/dev/null || true
wait "$subscriber" 2>/dev/null || true

step "5. verify what the broker delivered (COSE signature, kid, topic binding, seq gaps and replays)"
$BIN/firmware-agent verify "$OUT/telemetry.dump" --public-key "$OUT/vehicle-pub.pem" -o "$OUT/samples.jsonl"
$BIN/python - "$OUT/samples.jsonl" <<'PY'
import collections, json, sys
counts = collections.Counter(json.loads(line)["signal"] for line in open(sys.argv[1]))
print(f"{sum(counts.values())} verified samples of {len(counts)} signals, e.g.:")
for name, n in counts.most_common(8):
    print(f"  {n:6d}  {name}")
PY
echo
echo "Files: $OUT (drive.log, telemetry.dump, samples.jsonl, state/outbox)"

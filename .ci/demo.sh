#!/usr/bin/env bash
# `make demo`: the agent's main job on an embedded default, end to end on this machine.
#   1. simulate a 60 s city drive of our reference vehicle (four buses) into a candump log;
#   2. decode it and print the per-message summary;
#   3. start a local mosquitto (127.0.0.1, random port) and a verifying subscriber;
#   4. run the agent on the drive with the demo campaigns: decode, collect, sign (COSE/Ed25519), outbox, MQTT;
#   5. verify every received batch (signature, topic binding, seq) with the vehicle's public key;
#   6. driver identification: learn anna's and ben's fingerprints from simulated drives (`profile learn`),
#      then an owner's drive (identified, with the moment of decision) and ben driving with anna's key
#      (driver_mismatch), both through the agent to the broker, the events shown by `verify --events`.
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

step "6. driver identification: learn two drivers, then an owner's drive and a borrowed key"
# 10 minutes of driving activate a profile here (20 by default) so that the demo needs two drives each.
printf '[identity]\nactivation_minutes = 10\n' > "$OUT/identity.toml"
for who in anna ben; do
  for seed in 1 2; do
    scenario=$([ "$seed" = 1 ] && echo city || echo highway)
    $BIN/firmware-agent sim --driver "$who" --scenario "$scenario" --seed "$seed" --duration 420 \
        --out "$OUT/learn-$who-$seed.log" 2>/dev/null
  done
done
$BIN/firmware-agent profile learn --config "$OUT/identity.toml" --state-dir "$OUT/state-identity" \
    "$OUT"/learn-*.log
$BIN/firmware-agent profile list --config "$OUT/identity.toml" --state-dir "$OUT/state-identity"
$BIN/firmware-agent sim --driver anna --scenario city --seed 7 --duration 420 --out "$OUT/owner.log" 2>/dev/null
$BIN/firmware-agent sim --driver ben --scenario borrowed-key --key-of anna --seed 8 --duration 420 \
    --out "$OUT/borrowed.log" 2>/dev/null
$BIN/firmware-agent verify --broker "mqtt://127.0.0.1:$port" --public-key "$OUT/vehicle-pub.pem" \
    --save "$OUT/identity.dump" --format none --timeout 300 2>"$OUT/subscriber-identity.log" &
subscriber=$!
pids+=($subscriber)
for _ in $(seq 200); do grep -q "subscribed" "$OUT/subscriber-identity.log" 2>/dev/null && break; sleep 0.05; done
for drive in owner borrowed; do
  echo "-- $drive.log through the agent"
  $BIN/firmware-agent run --config "$OUT/identity.toml" --source "replay:$OUT/$drive.log" \
      --broker "mqtt://127.0.0.1:$port" --vehicle-id demo-0002 --signing-key "$OUT/vehicle-key.pem" \
      --state-dir "$OUT/state-identity" --exit-at-end 2>&1 | grep -v "^firmware-agent run: [0-9]" || true
done
sleep 0.5
kill -TERM "$subscriber" 2>/dev/null || true
wait "$subscriber" 2>/dev/null || true
$BIN/firmware-agent verify "$OUT/identity.dump" --public-key "$OUT/vehicle-pub.pem" --format none \
    --events "$OUT/identity-events.jsonl"
$BIN/python - "$OUT/identity-events.jsonl" <<'PY'
import json, sys, time
print("driver events in the verified telemetry:")
for line in open(sys.argv[1]):
    event = json.loads(line)
    if event["kind"].startswith("driver_"):
        when = time.strftime("%H:%M:%S", time.gmtime(event["time"]))
        print(f"  seq {event['seq']:3d}  {when}  {event['kind']:18s} {json.dumps(event['detail'])}")
PY
echo
echo "Files: $OUT (drive.log, telemetry.dump, samples.jsonl, state/outbox, state-identity/identity)"

step "7. the fleet side: the drive through \`ingest\` into PostgreSQL (a throwaway cluster), then one query"
# PostgreSQL from the distribution (`make sysdeps`), initdb'd into a temporary folder, Unix socket only.
read -r PGURI PGROOT PGBIN < <($BIN/python - <<'PY'
import sys
sys.path.insert(0, ".")
from tests.integration.mosquitto import free_port
from tests.integration.postgres import Postgres
pg = Postgres(free_port())
pg.start()
print(pg.uri, pg.root, pg.bindir)
PY
)
pg_cleanup() {
  runas=(); [ "$(id -u)" -eq 0 ] && runas=(runuser -u postgres --)
  (cd / && "${runas[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -m immediate stop >/dev/null 2>&1) || true
  rm -rf "$PGROOT"
}
trap 'cleanup; pg_cleanup' EXIT
$BIN/firmware-agent ingest keys add --db "$PGURI" demo-0003 "$OUT/vehicle-pub.pem"
$BIN/firmware-agent ingest --broker "mqtt://127.0.0.1:$port" --db "$PGURI" --client-id demo-ingest \
    --stats-every 0 2>"$OUT/ingest.log" &
ingest=$!
pids+=($ingest)
for _ in $(seq 200); do grep -q "subscribed" "$OUT/ingest.log" 2>/dev/null && break; sleep 0.05; done
$BIN/firmware-agent run --source "replay:$OUT/drive.log" --collect docs/examples/campaigns/demo.toml \
    --broker "mqtt://127.0.0.1:$port" --vehicle-id demo-0003 --signing-key "$OUT/vehicle-key.pem" \
    --state-dir "$OUT/state-fleet" --exit-at-end
sleep 1
kill -TERM "$ingest" 2>/dev/null || true
wait "$ingest" 2>/dev/null || true
tail -1 "$OUT/ingest.log"
psql "$PGURI" -c "SELECT vehicle, count(DISTINCT seq) AS batches, count(*) AS samples,
       min(time)::time(0) AS first, max(time)::time(0) AS last,
       round(avg(value_num) FILTER (WHERE signal = 'Vehicle.Speed')::numeric, 1) AS mean_speed_kmh
  FROM telemetry_samples GROUP BY vehicle"

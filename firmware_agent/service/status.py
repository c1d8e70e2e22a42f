"""The operator's view of an agent: what it writes to `health.json` and how `firmware-agent status` reads it.

The agent rewrites `health.json` on every heartbeat (1 s): under systemd in `$RUNTIME_DIRECTORY` (a tmpfs,
so the SD card's flash is not worn by it), else in the state directory. On a clean stop the last version
says `"status": "stopped"`. `status` combines it with the outbox (read-only) into one summary:

- exit status 0: running and `ok`;
- 1: running but `degraded` (the reasons are listed);
- 3: not running: no `health.json`, `stopped`, or stale (not rewritten for `STALE_AFTER` heartbeats,
  e.g. a hung or killed agent).

The same summary, without the outbox's on-disk size, is published retained on `vehicles/{id}/status`
(`docs/telemetry-format.md`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_agent.errors import UserError

if TYPE_CHECKING:
    from firmware_agent.service.agent import Agent

#: `health.json` older than this many heartbeat intervals (and at least `STALE_MIN_S`) means not running.
STALE_AFTER = 5
STALE_MIN_S = 5.0
#: Where systemd's `RuntimeDirectory=firmware-agent` puts the health file.
DEFAULT_RUNTIME_DIR = Path("/run/firmware-agent")
HEALTH_NAME = "health.json"

EXIT_OK, EXIT_DEGRADED, EXIT_NOT_RUNNING = 0, 1, 3


def runtime_dir_from_environment() -> Path | None:
    """`$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`; the first one when several are listed)."""
    value = os.environ.get("RUNTIME_DIRECTORY", "")
    return Path(value.split(":")[0]) if value else None


# --- the writer's side: fields the agent adds to its health summary -------------------------------------


def health_details(agent: Agent) -> dict[str, Any]:
    """What the operator needs besides the agent's own `health()` fields: errors, outbox, uplink, why."""
    counts = agent.counters()
    reasons = []
    if not agent.uploader.connected:
        reasons.append(f"broker not connected ({agent.uploader.last_error or 'connecting'})")
    for reader in agent.readers:
        if reader.in_gap:
            reasons.append(f"bus {reader.source.name} lost")
    if agent.outbox.condition:  # e.g. the disk is full
        reasons.append(agent.outbox.condition)
    serial = None
    with contextlib.suppress(OSError, ValueError):
        serial = int(agent.config.campaign_serial_path.read_text().strip())
    return {
        "pid": os.getpid(),
        "updated": round(time.time(), 3),
        "heartbeat_interval": agent.config.heartbeat_interval,
        "state_dir": str(agent.config.state_dir),
        "broker": agent.config.broker.url,
        "broker_error": agent.uploader.last_error,
        "decode_errors": sum(v for k, v in counts.items() if k.startswith("decode.decode_")),
        "e2e_dropped": counts.get("e2e.e2e_dropped", 0),
        "batches_sent": counts.get("uploader.published", 0),
        "batches_acknowledged": counts.get("uploader.acknowledged", 0),
        "batches_dead_lettered": counts.get("outbox.dead_lettered", 0),
        "outbox_evicted": counts.get("outbox.evicted", 0),
        "campaigns": [campaign.name for campaign in agent.campaigns],
        "campaign_serial": serial,
        "driver": agent.collector.driver,  # what the identity stage reports (None without it)
        "degraded_because": reasons,
    }


# --- the reader's side: `firmware-agent status` -----------------------------------------------------------


@dataclass
class StatusReport:
    """What `status` prints: the health summary, the outbox figures, and the verdict."""

    exit_code: int
    state: str  # ok, degraded, stopped, stale, not running
    health: dict[str, Any]
    outbox: dict[str, Any]
    health_path: Path | None
    why: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "exit_code": self.exit_code,
            "why": self.why,
            "health_file": str(self.health_path) if self.health_path else None,
            "health": self.health,
            "outbox": self.outbox,
        }


def find_health_file(state_dir: Path, runtime_dir: Path | None) -> Path | None:
    """The newest `health.json` of the agent using `state_dir`: in the runtime folder or the state dir."""
    candidates = [state_dir / HEALTH_NAME]
    for folder in (runtime_dir, runtime_dir_from_environment(), DEFAULT_RUNTIME_DIR):
        if folder is not None:
            candidates.append(folder / HEALTH_NAME)
    found: list[tuple[float, Path]] = []
    for path in dict.fromkeys(candidates):
        try:
            document = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        owner = document.get("state_dir") if isinstance(document, dict) else None
        if owner is not None and Path(owner).resolve() != state_dir.resolve() and path.parent != state_dir:
            continue  # another agent's runtime folder
        found.append((mtime, path))
    return max(found)[1] if found else None


def read_outbox(state_dir: Path) -> dict[str, Any]:
    """Depth, bytes, next seq and the persisted counters of the outbox, read-only (never blocks the agent)."""
    path = state_dir / "outbox.sqlite3"
    if not path.exists():
        return {"exists": False}
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot open the outbox read-only: {exc}") from exc
    try:
        pending, pending_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM outbox"
        ).fetchone()
        dead = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot read the outbox: {exc}") from exc
    finally:
        db.close()
    return {
        "exists": True,
        "pending": int(pending),
        "pending_bytes": int(pending_bytes),
        "file_bytes": size,
        "dead_letters": int(dead),
        "next_seq": int(meta.pop("next_seq", 1)),
        "counters": {key: int(value) for key, value in sorted(meta.items())},
    }


def build_report(state_dir: Path, runtime_dir: Path | None = None, now: float | None = None) -> StatusReport:
    """The status of the agent using `state_dir` (see the module docstring for the exit codes)."""
    now = time.time() if now is None else now
    path = find_health_file(state_dir, runtime_dir)
    health: dict[str, Any] = {}
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            health = json.loads(path.read_text())
    outbox = read_outbox(state_dir) if state_dir.exists() else {"exists": False}
    if path is None or not health:
        return StatusReport(EXIT_NOT_RUNNING, "not running", health, outbox, path, ["no health.json found"])
    age = now - float(health.get("updated", path.stat().st_mtime))
    limit = max(STALE_MIN_S, STALE_AFTER * float(health.get("heartbeat_interval", 1.0)))
    status = health.get("status")
    if status == "stopped":
        return StatusReport(EXIT_NOT_RUNNING, "stopped", health, outbox, path, ["stopped cleanly"])
    if age > limit:
        why = [f"health.json not updated for {age:.0f} s (the agent is hung or was killed)"]
        return StatusReport(EXIT_NOT_RUNNING, "stale", health, outbox, path, why)
    if status == "degraded":
        why = list(health.get("degraded_because") or ["degraded"])
        return StatusReport(EXIT_DEGRADED, "degraded", health, outbox, path, why)
    return StatusReport(EXIT_OK, "ok", health, outbox, path, [])


def render(report: StatusReport) -> str:
    """The human-readable view (`status`, `status --watch`)."""
    h, o = report.health, report.outbox
    lines = [f"firmware-agent: {report.state}" + (f" ({'; '.join(report.why)})" if report.why else "")]
    if h:
        lines.append(
            f"  vehicle {h.get('vehicle_id', '?')}, pid {h.get('pid', '?')}, "
            f"up {_duration(h.get('uptime_s', 0))}"
            f", health file {report.health_path}"
        )
        connected = (
            "connected" if h.get("broker_connected") else f"NOT connected ({h.get('broker_error') or '-'})"
        )
        lines.append(f"  broker   {h.get('broker', '?')}: {connected}")
        lines.append(f"  {'bus':<16} {'frames in':>12} {'dropped':>9} {'gaps':>5}  state")
        for name, bus in sorted((h.get("buses") or {}).items()):
            state = "LOST" if bus.get("lost") else ("done" if bus.get("done") else "ok")
            lines.append(
                f"  {name:<16} {bus.get('frames_in', 0):>12,} {bus.get('frames_dropped', 0):>9,}"
                f" {bus.get('gaps', 0):>5}  {state}"
            )
        lines.append(
            f"  decode errors {h.get('decode_errors', 0):,}, E2E dropped {h.get('e2e_dropped', 0):,}; "
            "batches "
            f"committed {h.get('batches_committed', 0):,}, sent {h.get('batches_sent', 0):,}, acknowledged "
            f"{h.get('batches_acknowledged', 0):,}, dead-lettered {h.get('batches_dead_lettered', 0):,}"
        )
        campaigns = ", ".join(h.get("campaigns") or []) or "-"
        serial = h.get("campaign_serial")
        lines.append(
            f"  campaigns {campaigns}" + (f" (update serial {serial})" if serial is not None else "")
        )
        if h.get("driver") is not None:
            lines.append(f"  driver {h['driver']}")
    if o.get("exists"):
        lines.append(
            f"  outbox   {o['pending']:,} batches waiting ({o['pending_bytes']:,} bytes; file "
            f"{o['file_bytes']:,} bytes), {o['dead_letters']:,} dead letters, next seq {o['next_seq']:,}"
        )
    else:
        lines.append("  outbox   none yet")
    return "\n".join(lines)


def one_line(summary: dict[str, Any]) -> str:
    """`STATUS=` for systemd and the periodic log line: state, frames, uplink, backlog."""
    frames = sum(bus.get("frames_in", 0) for bus in (summary.get("buses") or {}).values())
    dropped = sum(bus.get("frames_dropped", 0) for bus in (summary.get("buses") or {}).values())
    broker = "broker connected" if summary.get("broker_connected") else "broker NOT connected"
    why = summary.get("degraded_because") or []
    text = (
        f"{summary.get('status', '?')}: {frames:,} frames ({dropped:,} dropped) from "
        f"{len(summary.get('buses') or {})} bus(es), "
        f"{summary.get('batches_committed', 0):,} batches committed, "
        f"{summary.get('outbox_pending', 0):,} waiting, {broker}"
    )
    return text + (f" ({'; '.join(why)})" if why and summary.get("status") == "degraded" else "")


def _duration(seconds: float) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"

"""The daemon's life around `Agent.run()`: signals, systemd notifications, the event log, reload.

`ServiceLink` plugs into the agent's two hooks and never touches a stage from another thread:

- `on_ready` (sources and uploader started): logs the start line, sends `READY=1`.
- `on_heartbeat` (pipeline thread, every `pipeline.heartbeat_interval`): sends `WATCHDOG=1` (so the
  pings stop when the pipeline thread hangs), applies a pending `SIGHUP` reload, logs what changed since
  the previous heartbeat (broker connected / refused / lost, a bus lost and back, campaign updates
  applied or rejected), updates `STATUS=`, and every `pipeline.stats_interval` logs a one-line summary and
  publishes it retained on `vehicles/{id}/status`.
- Signal handlers only set flags (`SIGHUP`: reload on the next heartbeat; `SIGTERM`/`SIGINT`: stop, and
  `STOPPING=1` at once, since the flush may take up to `shutdown_timeout`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_agent.service.config import DEFAULT_SIGNING_KEY_NAME, AgentConfig, Overrides
from firmware_agent.service.notify import Notifier
from firmware_agent.service.reload import reload_agent
from firmware_agent.service.status import one_line

if TYPE_CHECKING:
    from firmware_agent.service.agent import Agent

log = logging.getLogger("firmware_agent.service")

#: `STATUS=` is refreshed at most this often (seconds) unless the state changes.
STATUS_REFRESH_S = 5.0


class ServiceLink:
    """Connects one `Agent` to systemd (when `notifier` is set), to `logging` and to signals."""

    def __init__(self, notifier: Notifier | None, config_path: Path | None, overrides: Overrides) -> None:
        self.notifier = notifier
        self.config_path = config_path
        self.overrides = overrides
        self.agent: Agent | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._reload_requested = threading.Event()
        self._previous: dict[str, Any] = {}
        self._last_status = ""
        self._last_status_at = 0.0
        self._next_summary = 0.0
        self._campaign_counts: dict[str, int] = {}

    def attach(self, agent: Agent) -> None:
        """Use `agent` (built with `on_ready=link.on_ready, on_heartbeat=link.on_heartbeat`)."""
        self.agent = agent
        interval = self.notifier.watchdog_interval if self.notifier is not None else None
        if interval is not None and agent.config.heartbeat_interval > interval:
            log.warning(
                "pipeline.heartbeat_interval %.1f s is longer than half of WatchdogSec= (%.1f s): "
                "systemd will kill the agent",
                agent.config.heartbeat_interval,
                interval * 2,
            )

    # --- signals ---------------------------------------------------------------------------------------

    def install_signals(self, stop: threading.Event) -> None:
        """SIGTERM/SIGINT stop the agent (flush, commit, wait for acknowledgements); SIGHUP reloads."""

        def request_stop(signum: int, frame: object) -> None:
            if not stop.is_set():
                log.info(
                    "%s: stopping (flushing, committing, waiting for the broker)", signal.Signals(signum).name
                )
                if self.notifier is not None:
                    self.notifier.stopping()
            stop.set()

        def request_reload(signum: int, frame: object) -> None:
            self._reload_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)

    def request_reload(self) -> None:
        """What SIGHUP does: reload on the pipeline thread's next heartbeat."""
        self._reload_requested.set()

    # --- hooks -----------------------------------------------------------------------------------------

    def on_ready(self) -> None:
        agent = self._agent()
        config = agent.config
        sources = ", ".join(f"{r.source.name}={r.source.spec.text}" for r in agent.readers)
        campaigns = ", ".join(campaign.name for campaign in agent.campaigns)
        log.info(
            "started: vehicle %s, sources %s, broker %s, campaigns %s, state %s, health %s",
            config.vehicle_id,
            sources,
            config.broker.url,
            campaigns,
            config.state_dir,
            config.health_path,
            extra={"event": {"event": "started", "vehicle_id": config.vehicle_id}},
        )
        self._next_summary = time.monotonic() + config.stats_interval
        if self.notifier is not None:
            self.notifier.ready(f"started: {len(agent.readers)} source(s), connecting to {config.broker.url}")

    def on_heartbeat(self, summary: Mapping[str, Any]) -> None:
        if self.notifier is not None:
            self.notifier.watchdog()
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._reload()
        self._log_changes(summary)
        now = time.monotonic()
        status = one_line(dict(summary))
        if self.notifier is not None and (
            summary.get("status") != self._previous.get("status")
            or now - self._last_status_at >= STATUS_REFRESH_S
        ):
            self.notifier.status(status)
            self._last_status_at = now
        if now >= self._next_summary and summary.get("status") != "stopped":
            agent = self._agent()
            self._next_summary = now + max(agent.config.stats_interval, 1.0)
            log.info("summary: %s", status, extra={"event": {"event": "summary", **_flat(summary)}})
            agent.uploader.set_status(dict(summary))
        self._previous = dict(summary)

    # --- internals -------------------------------------------------------------------------------------

    def _agent(self) -> Agent:
        if self.agent is None:
            raise RuntimeError("ServiceLink.attach(agent) was not called")
        return self.agent

    def _reload(self) -> None:
        agent = self._agent()
        if self.notifier is not None:
            self.notifier.reloading()
        result = reload_agent(agent, self.config_path, self.overrides)
        if result.ok:
            self.reloads += 1
            log.info(
                "reloaded %s: campaigns %s%s%s",
                self.config_path or "the command line",
                ", ".join(result.campaigns) or "(unchanged: a signed update is in force)",
                f"; changed {', '.join(result.applied)}" if result.applied else "",
                f"; NOT applied until a restart: {', '.join(result.needs_restart)}"
                if result.needs_restart
                else "",
                extra={"event": {"event": "reloaded", "campaigns": result.campaigns}},
            )
        else:
            self.reload_failures += 1
            log.error(
                "reload refused, the running configuration is kept: %s",
                result.error,
                extra={"event": {"event": "reload_refused"}},
            )
        if self.notifier is not None:
            self.notifier.ready(f"{'reloaded' if result.ok else 'reload refused'}; running")

    def _log_changes(self, summary: Mapping[str, Any]) -> None:
        previous = self._previous
        agent = self._agent()
        if summary.get("status") == "stopped":
            return  # the uploader's own disconnect on a clean stop is not news
        connected = bool(summary.get("broker_connected"))
        error = summary.get("broker_error")
        if connected and not previous.get("broker_connected"):
            log.info(
                "broker connected: %s",
                agent.config.broker.url,
                extra={"event": {"event": "broker_connected"}},
            )
        elif not connected and previous.get("broker_connected"):
            log.warning(
                "broker connection lost: %s (%s); batches wait in the outbox",
                agent.config.broker.url,
                error or "disconnected",
                extra={"event": {"event": "broker_lost"}},
            )
        elif not connected and error and error != previous.get("broker_error"):
            log.warning(
                "broker %s: %s (retrying with backoff)",
                agent.config.broker.url,
                error,
                extra={"event": {"event": "broker_refused"}},
            )
        before = previous.get("buses") or {}
        for name, bus in (summary.get("buses") or {}).items():
            was = before.get(name) or {}
            if bus.get("lost") and not was.get("lost"):
                reader = next((r for r in agent.readers if r.source.name == name), None)
                reason = (reader.gap_reason if reader is not None else None) or "error"
                log.warning(
                    "bus %s lost: %s (reopening with backoff)",
                    name,
                    reason,
                    extra={"event": {"event": "bus_lost", "bus": name}},
                )
            elif was.get("lost") and not bus.get("lost"):
                log.info(
                    "bus %s back: frames flow again",
                    name,
                    extra={"event": {"event": "bus_back", "bus": name}},
                )
        if agent.campaign_updates is not None:
            counts = agent.campaign_updates.counters()
            seen = self._campaign_counts
            for key, value in counts.items():
                if value > seen.get(key, 0) and key != "received":
                    log.info(
                        "campaign update: %d %s (serial now %s)",
                        value - seen.get(key, 0),
                        key.replace("_", " "),
                        summary.get("campaign_serial"),
                        extra={"event": {"event": f"campaign_{key}"}},
                    )
            self._campaign_counts = counts


def ensure_signing_key(config: AgentConfig, environ: Mapping[str, str] | None = None) -> None:
    """First start of the service: create the signing key when it is the default one in systemd's
    `StateDirectory=` and missing.

    Its public half goes next to it (`signing-key.pub.pem`) and into the log, for the backend. Only under
    systemd (`$STATE_DIRECTORY` is the state directory): run by hand, a missing key stays an error that
    names `keys generate`, and a key configured elsewhere (`signing_key`, `--signing-key`) is never created.
    """
    from firmware_agent.telemetry.keys import generate_private_key, kid_of, public_key_pem

    env = os.environ if environ is None else environ
    path = config.signing_key
    service_state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if not service_state or config.state_dir != Path(service_state):
        return
    if path != config.state_dir / DEFAULT_SIGNING_KEY_NAME or path.exists():
        return
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        public = generate_private_key(path).public_key()
        public_path = path.with_name("signing-key.pub.pem")
        public_path.write_text(public_key_pem(public))
        public_path.chmod(0o644)
    except OSError as exc:
        from firmware_agent.errors import UserError

        raise UserError(f"{path}: cannot create the signing key: {exc.strerror or exc}") from exc
    pem = public_key_pem(public)
    log.warning(
        "first start: new signing key %s, kid %s; give the backend its public half %s: %s",
        path,
        kid_of(public).hex(),
        public_path,
        " ".join(line for line in pem.splitlines() if not line.startswith("-----")),
        extra={"event": {"event": "signing_key_created", "kid": kid_of(public).hex(), "public_key_pem": pem}},
    )


def _flat(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if not isinstance(value, (dict, list))}

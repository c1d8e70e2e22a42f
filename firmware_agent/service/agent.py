"""The assembled agent: sources → decode → E2E → identity/observers → collect → identity/annotators →
outbox → uploader.

Threads: one reader per source (see `sources.reader`), paho's network thread and the uploader's worker; all
the processing stages run on the thread that calls `Agent.run()`, so they need no locks.

Time: collection runs on the *data clock*, the timestamp of the latest frame plus the wall time elapsed
since it arrived. For a live bus that is the kernel's clock; for a replay at full speed it is the
capture's clock, so periodic campaigns batch a replayed drive exactly as they would have batched it live.

Counters (per bus, decode, E2E, collector, outbox, uploader) ride in the `counters` map of the first batch
committed after every `stats_interval` seconds, and of the last batch before a clean exit.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import can
import cbor2

from firmware_agent.atomic import write_atomic
from firmware_agent.collect.campaign import Campaign, campaigns_for_option, needed_signals, parse_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.collect.names import SignalNames
from firmware_agent.decode.catalog import Catalog
from firmware_agent.errors import UserError
from firmware_agent.identity.registry import IdentityStateError
from firmware_agent.identity.stage import IdentityStage
from firmware_agent.pipeline.decoding import SampleDecoder
from firmware_agent.pipeline.e2e_check import E2EChecker
from firmware_agent.pipeline.frame_times import FrameTimeGuard
from firmware_agent.pipeline.hooks import BatchAnnotator, SampleObserver
from firmware_agent.service.config import AgentConfig
from firmware_agent.service.status import health_details
from firmware_agent.sources import Source, open_source
from firmware_agent.sources.reader import EventBox, FrameQueue, SourceReader
from firmware_agent.telemetry.campaign_updates import CampaignUpdate, CampaignUpdates
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.keys import kid_of, load_public_key, load_signing_key
from firmware_agent.telemetry.outbox import BatchRejectedError, Outbox
from firmware_agent.telemetry.payload_v2 import scale_hints
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.uploader import Uploader, UploaderConfig
from firmware_agent.values import Batch, Event, samples_of
from firmware_agent.vss import VssMap

log = logging.getLogger("firmware_agent.agent")

#: How often (wall-clock seconds) the collector is polled for finished batches. Wall clock, because the
#: data clock of a replay may start years before the agent did.
POLL_INTERVAL = 0.1
#: Chunks processed back to back before the loop looks at events, polls and heartbeats again.
CHUNKS_PER_TURN = 64
#: CPython's cyclic-GC thresholds while `Agent.run()` runs (restored when it returns). The live path
#: allocates a few short-lived containers per frame (the frame, its record, its values), so with the
#: default young-generation threshold of 700 the collector ran every ~200 frames and kept promoting the
#: rows held for open batches, whose older generations it then walked again and again. Everything is
#: still freed by reference counting at once; only reference cycles wait longer. `bench/pipeline.py`
#: measures the effect (see the README's speed table).
GC_THRESHOLDS = (50_000, 20, 100)

Hook = Callable[[Mapping[str, Any]], None]


class Agent:
    """One vehicle's agent, built from an `AgentConfig`; `run(stop)` until `stop` is set or the data ends.

    `observers` and `annotators` are embedders' hooks (see `pipeline.hooks`), run after the identity
    stage. `on_ready` is called once every source is started and the uploader is connecting;
    `on_heartbeat` on every heartbeat with the health summary (a systemd wrapper sends `READY=1` and
    `WATCHDOG=1` from them). `sources`, when given, replaces the sources the configuration names (for
    embedding the agent, e.g. in benchmarks). The agent reports through `logging` (`firmware_agent.*`
    loggers; `service.logs` formats them for journald); `log` only receives the databases' load warnings.
    """

    def __init__(
        self,
        config: AgentConfig,
        observers: Iterable[SampleObserver] = (),
        annotators: Iterable[BatchAnnotator] = (),
        on_ready: Callable[[], None] | None = None,
        on_heartbeat: Hook | None = None,
        log: TextIO = sys.stderr,
        sources: Iterable[Source] | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.on_ready = on_ready
        self.on_heartbeat = on_heartbeat
        self.annotators = list(annotators)
        self.catalog = Catalog.from_specs(config.dbc, warn_stream=log)
        self.vss = VssMap.load(config.vss)
        self.names = SignalNames.from_catalog(self.catalog, self.vss)
        self.frames = FrameQueue(config.reader)
        self.frame_times = FrameTimeGuard(self._warn)
        self.events = EventBox()
        self.campaign_updates = self._campaign_updates()
        self.campaigns: list[Campaign] = self._initial_campaigns()
        self.collector = Collector(self.campaigns)
        self.checker = E2EChecker(config.e2e, self._event)
        self.observers = list(observers)
        try:
            config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{config.state_dir}: cannot create the state directory: {exc.strerror}") from exc
        self.identity = self._identity_stage() if config.identity.enabled else None
        if self.identity is not None:
            self.annotators.insert(0, self.identity)
        self.decoder = self._sample_decoder(self.campaigns)
        # With campaign updates enabled a later campaign may want any message: filter on the DBCs only.
        # The identity stage reads its own signals, which the kernel filters must let through too.
        filter_wants = needed_signals(self.campaigns)
        if self.campaign_updates is not None:
            filter_wants = None
        if filter_wants is not None and self.identity is not None:
            filter_wants = filter_wants | self.identity.sampler.signal_keys()
        filters = SampleDecoder(self.catalog, self.vss, filter_wants, self.checker)
        self._next_campaigns: tuple[int, list[Campaign]] | None = None
        self._campaign_lock = threading.Lock()
        chosen = list(sources) if sources is not None else [open_source(spec) for spec in config.sources]
        self.readers = [SourceReader(source, self.frames, self.events) for source in chosen]
        for reader in self.readers:
            reader.source.kernel_filters = filters.kernel_filters(reader.source.name)
        signer = Signer(load_signing_key(config.signing_key))
        self.sealer = BatchSealer(
            config.vehicle_id,
            signer,
            self._counters_when_due,
            payload_version=config.payload_version,
            scales=scale_hints((message for _, message in self.catalog.all_messages()), self.vss.name_for),
        )
        self.outbox = Outbox(config.outbox_path, self.sealer, config.outbox_max_bytes)
        uploader_config = UploaderConfig(
            broker=config.broker, vehicle_id=config.vehicle_id, max_inflight=config.max_inflight
        )
        on_campaign = self.campaign_updates.handle if self.campaign_updates is not None else None
        self.uploader = Uploader(uploader_config, self.outbox, on_campaign=on_campaign)
        self.rejected_batches = 0
        self.health_write_errors = 0
        self.batches_committed = 0
        self._stats_due = 0.0  # monotonic time of the next counters report
        self._force_stats = False
        self._stats_sealed = False  # the batch being committed carries the counters report
        self._last_frame_time: float | None = None
        self._last_frame_mono = 0.0
        self._next_poll = 0.0
        self._dropped_at_last_health = 0
        self.started = time.time()
        self.stopped = False  # set for the last health summary of a clean stop

    def _identity_stage(self) -> IdentityStage | None:
        """The identity stage; off (one line on the log) when its saved state cannot be read."""
        try:
            stage = IdentityStage(
                self.config.identity,
                self.catalog,
                self.vss,
                self.config.state_dir,
                emit=self._event,
                set_driver=self.collector.set_driver,
            )
        except IdentityStateError as exc:
            # The car's telemetry matters more than its driver profiles: run without them and say why.
            log.warning("identity stage off: %s", exc)
            return None
        if not stage.useful:
            log.info(
                "identity stage off: the databases define none of its signals "
                "(name this vehicle's in [identity], see docs/identity.md)"
            )
            return None
        return stage

    # --- campaigns and signed updates ---------------------------------------------------------------

    def _campaign_updates(self) -> CampaignUpdates | None:
        if not self.config.campaign_keys:
            return None
        keys = {}
        for path in self.config.campaign_keys:
            public = load_public_key(path)
            keys[kid_of(public)] = public
        return CampaignUpdates(
            self.config.vehicle_id,
            keys,
            self._on_campaign_update,
            self.events.add,
            state_file=self.config.campaign_serial_path,
        )

    def _initial_campaigns(self) -> list[Campaign]:
        """The last campaign a signed update installed, else the configured one."""
        path = self.config.campaign_path
        if self.campaign_updates is not None and path.exists():
            try:
                document = cbor2.loads(path.read_bytes())
            except (OSError, cbor2.CBORDecodeError) as exc:
                raise UserError(
                    f"{path}: cannot read the last applied campaign update ({exc}); remove it to start "
                    "with the configured campaigns"
                ) from exc
            return parse_campaigns(document, str(path), self.names)
        return campaigns_for_option(self.config.collect, self.names)

    def _on_campaign_update(self, update: CampaignUpdate) -> None:
        """paho's thread: check the campaign, keep it on disk, hand it to the pipeline thread."""
        campaigns = parse_campaigns(update.document, f"campaign update {update.serial}", self.names)
        path = self.config.campaign_path
        write_atomic(path, cbor2.dumps(update.document), 0o644)
        with self._campaign_lock:
            self._next_campaigns = (update.serial, campaigns)

    def _apply_campaign_update(self) -> None:
        with self._campaign_lock:
            pending, self._next_campaigns = self._next_campaigns, None
        if pending is None:
            return
        serial, campaigns = pending
        self.install_campaigns(campaigns, {"serial": serial})

    def install_campaigns(self, campaigns: list[Campaign], detail: Mapping[str, Any]) -> None:
        """Pipeline thread: swap the campaigns in (open batches are flushed into the ready queue, so no
        buffered sample is lost) and report a `campaign_applied` event with `detail` and their names."""
        self.campaigns = campaigns
        self.collector.replace_campaigns(campaigns)
        counts = self.decoder.counts
        self.decoder = self._sample_decoder(campaigns)
        self.decoder.counts = counts
        detail = {**detail, "campaigns": [campaign.name for campaign in campaigns]}
        self.collector.add_event(Event(timestamp=self.now(), kind="campaign_applied", detail=detail))

    # --- stages ------------------------------------------------------------------------------------

    def _sample_decoder(self, campaigns: list[Campaign]) -> SampleDecoder:
        """The decoder for what `campaigns` collect; with identity on, its private signals never decode."""
        withheld = self.config.identity.private if self.identity is not None else ()
        return SampleDecoder(self.catalog, self.vss, needed_signals(campaigns), self.checker, withheld)

    def _process(self, chunk: list[can.Message]) -> list[can.Message]:
        """Run a chunk through the stages; the frames that went in (absurd times refused first)."""
        chunk = self.frame_times.filter(chunk)
        if not chunk:
            return chunk
        if self.identity is not None:
            self.identity.observe_frames(chunk)
        records = self.decoder.process_records(chunk)
        if self.observers:  # `Sample` objects only for observers that want them
            samples = samples_of(records)
            for observer in self.observers:
                for sample in samples:
                    observer.observe(sample)
        self.collector.offer_records(records)
        return chunk

    def _warn(self, line: str) -> None:
        log.warning("%s", line)

    def _event(self, event: Event) -> None:
        self.collector.add_event(event)

    def _commit(self, batches: Iterable[Batch]) -> None:
        committed = False
        for batch in batches:
            for annotator in self.annotators:
                annotator.annotate(batch)
            self._stats_sealed = False
            try:
                self.outbox.commit(batch)
            except BatchRejectedError:
                self.rejected_batches += 1
                continue
            if self._stats_sealed:
                self._force_stats = False
                self._stats_due = time.monotonic() + self.config.stats_interval
            self.batches_committed += 1
            committed = True
        if committed:
            self.uploader.notify()

    def now(self) -> float:
        """The data clock: latest frame time plus the wall time since it arrived (wall time before any)."""
        if self._last_frame_time is None:
            return time.time()
        return self._last_frame_time + (time.monotonic() - self._last_frame_mono)

    # --- counters and health -----------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Every counter of the agent, flat, as it appears in the telemetry's `counters` map."""
        counts: dict[str, int] = {}
        for reader in self.readers:
            bus = reader.source.name
            counts[f"bus.{bus}.frames_in"] = reader.frames_in
            counts[f"bus.{bus}.frames_dropped"] = reader.frames_dropped
            counts[f"bus.{bus}.gaps"] = reader.gaps
            counts.update({f"bus.{bus}.{key}": value for key, value in reader.source.counters().items()})
        counts.update({f"decode.{k}": v for k, v in self.decoder.counts.items()})
        counts["decode.bad_time"] = self.frame_times.refused
        counts.update({f"e2e.{k}": v for k, v in self.checker.counts.items()})
        counts.update({f"collect.{k}": v for k, v in self.collector.counters.items()})
        counts.update({f"outbox.{k}": v for k, v in self.outbox.counters().items()})
        counts.update({f"uploader.{k}": v for k, v in self.uploader.counters().items()})
        if self.identity is not None:
            counts.update({f"identity.{k}": v for k, v in self.identity.counters().items()})
        counts["events.dropped"] = self.events.dropped
        counts["agent.batches_rejected"] = self.rejected_batches
        counts["agent.health_write_errors"] = self.health_write_errors
        if self.campaign_updates is not None:
            counts.update({f"campaign_updates.{k}": v for k, v in self.campaign_updates.counters().items()})
        return counts

    def _counters_when_due(self) -> Mapping[str, int]:
        # Called on every seal, also when the outbox re-seals a batch after evicting: the report is due
        # until a commit that carries it succeeds (`_commit` then clears it), so a retry keeps the counters.
        if not self._force_stats and time.monotonic() < self._stats_due:
            return {}
        self._stats_sealed = True
        return self.counters()

    def health(self) -> dict[str, Any]:
        """A small summary for operators and the watchdog: status, buses, uplink, backlog.

        `status` is `degraded` while the broker is unreachable, a bus is lost, frames were dropped since
        the previous summary, or the outbox reports a condition (a full disk); `ok` otherwise. Why is in
        `degraded_because` (`service.status.health_details`), one line per reason.
        """
        buses = {
            reader.source.name: {
                "frames_in": reader.frames_in,
                "frames_dropped": reader.frames_dropped,
                "gaps": reader.gaps,
                "lost": reader.in_gap,
                "done": reader.done.is_set(),
            }
            for reader in self.readers
        }
        dropped = sum(reader.frames_dropped for reader in self.readers)
        degraded = (
            not self.uploader.connected
            or any(reader.in_gap for reader in self.readers)
            or dropped > self._dropped_at_last_health
        )
        newly_dropped = dropped - self._dropped_at_last_health
        self._dropped_at_last_health = dropped
        details = health_details(self)
        if newly_dropped > 0:
            details["degraded_because"].append(f"{newly_dropped:,} frames dropped (pipeline queue full)")
        summary = {
            "status": "stopped"
            if self.stopped
            else "degraded"
            if degraded or self.outbox.condition
            else "ok",
            "vehicle_id": self.config.vehicle_id,
            "uptime_s": round(time.time() - self.started, 1),
            "buses": buses,
            "broker_connected": self.uploader.connected,
            "outbox_pending": self.outbox.pending_count(),
            "batches_committed": self.batches_committed,
        }
        summary.update(details)
        return summary

    def _heartbeat(self) -> None:
        summary = self.health()
        try:
            # rewritten every heartbeat and worthless after a power cut: atomic, but not fsynced; 0644: no
            # secrets in it, and monitoring checks need not run as the service's user
            write_atomic(
                self.config.health_path,
                (json.dumps(summary, sort_keys=True) + "\n").encode(),
                0o644,
                durable=False,
            )
        except OSError:
            # A full disk must not stop the agent: the outbox has its own policy for that.
            self.health_write_errors += 1
        if self.on_heartbeat is not None:
            self.on_heartbeat(summary)

    # --- the main loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Process until `stop` is set (or, with `exit_at_end`, the data ends and all is acknowledged).

        Returns the exit status: 0 after a clean stop, 1 when a source failed for good.
        """
        self._stats_due = time.monotonic() + self.config.stats_interval
        self.uploader.start()
        for reader in self.readers:
            reader.start()
        if self.on_ready is not None:
            self.on_ready()
        status = 0
        next_heartbeat = time.monotonic()
        gc_thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            while not stop.is_set():
                self._turn()
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = time.monotonic() + self.config.heartbeat_interval
                fatal = next((r.fatal for r in self.readers if r.fatal is not None), None)
                if fatal is not None:
                    log.error("%s", fatal)
                    status = 1
                    break
                if self.config.exit_at_end and self._data_ended():
                    break
        finally:
            try:
                self._shutdown(wait_for_all=self.config.exit_at_end and status == 0, stop=stop)
            finally:
                gc.set_threshold(*gc_thresholds)
        return status

    def _turn(self) -> None:
        chunk = self.frames.get(timeout=0.05)
        processed = 0
        while chunk is not None:
            chunk = self._process(chunk)
            if chunk:
                self._last_frame_time = chunk[-1].timestamp
                self._last_frame_mono = time.monotonic()
            processed += 1
            if processed >= CHUNKS_PER_TURN:
                break
            chunk = self.frames.get_nowait()
        self._apply_campaign_update()
        for event in self.events.drain():
            if event.kind == "bus_gap":
                self.decoder.reset_bus(str(event.detail.get("bus")))
            self.collector.add_event(event)
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + POLL_INTERVAL
            # Before the first frame there is no data clock yet: cut nothing by time (a replay's clock
            # may lie years before the wall clock the collector would otherwise anchor on).
            now = self.now() if self._last_frame_time is not None else None
            self._commit(self.collector.poll(now))

    def _data_ended(self) -> bool:
        return all(r.done.is_set() for r in self.readers) and self.frames.empty()

    def _shutdown(self, wait_for_all: bool, stop: threading.Event) -> None:
        for reader in self.readers:
            reader.stop()
        chunk = self.frames.get_nowait()
        while chunk is not None:
            self._process(chunk)
            chunk = self.frames.get_nowait()
        for event in self.events.drain():
            self.collector.add_event(event)
        if self.identity is not None:
            self.identity.finish(self._last_frame_time)
        # an empty batch when nothing is left: it carries the final counters
        batches = list(self.collector.flush()) or [Batch(campaign=None)]
        self._commit(batches[:-1])
        self._force_stats = True  # the last batch before exit carries the final counters
        self._commit(batches[-1:])
        if wait_for_all:
            # --exit-at-end: every batch must reach the broker; only a signal cuts this short.
            while not stop.is_set() and self.outbox.pending_count() > 0:
                self.uploader.flush(timeout=0.5)
        self.uploader.stop(timeout=self.config.shutdown_timeout)
        self.stopped = True
        self._heartbeat()
        self.outbox.close()

"""The collector: routes decoded samples to the campaigns that want them and cuts their batches.

    collector = Collector(campaigns)
    collector.offer_records(records)   # hot path: decoded frames (`values.py`), one route per shape
    collector.offer(sample)            # or one sample at a time
    batches = collector.poll()         # batches cut so far (by sample time or size)
    ...
    batches += collector.flush()       # end of input: everything held, open captures truncated

Time is the samples' own timestamps (frame times), so a replay faster than real time cuts batches as the
vehicle lived them. A live bus that goes silent still needs its batches cut: pass `clock=time.time`
(live sources only; frame timestamps must then be on the same clock) or call `poll(now)`.

Before the first sample, `poll(now)` cuts nothing (so a replay's grid is not anchored on the wall clock).
When `poll(now)` finds the clock more than `rewind_after_s` behind the time it last acted on (the head
unit's clock was stepped back, or a data clock moved from the wall clock to a replay's), every open batch
is cut, open captures are truncated, and periods and batch grids re-anchor on the next sample
(`clock_rewinds`).

The identity stage slots in with `add_event(event)` (events ride in the next batch cut) and
`set_driver(driver, timestamp)` (open batches are cut first, so no batch mixes two drivers; every batch
then carries the driver).

Bounds and policies (counters in `Collector.counters`):
- cut batches wait for `poll()` in a queue of at most `max_ready_batches` batches and `max_ready_samples`
  samples (`collect.budget`); when full, the oldest batch of the lowest priority is dropped
  (`dropped_ready_batches`, `dropped_ready_samples`);
- events wait for a batch in a list of at most `max_pending_events` (oldest dropped, `dropped_events`);
  an event that found no batch within `events_max_delay_s` goes out in an events-only batch;
- pre-trigger buffers and rolling windows: see `runners.TriggeredRunner` and `conditions.RollingWindow`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from firmware_agent.collect.budget import MAX_READY_SAMPLES
from firmware_agent.collect.campaign import Campaign, needed_signals
from firmware_agent.collect.conditions import DEFAULT_WINDOW_POINTS
from firmware_agent.collect.runners import GroupTaker, Handler, Runner, TriggeredRunner, make_runner
from firmware_agent.values import PRIORITY_NORMAL, Batch, Event, FrameRecord, Sample, SignalGroup

#: Distinct sample names remembered for routing; names beyond it are routed without caching the route.
MAX_ROUTES = 100_000


class Collector:
    """Turns a stream of samples into per-campaign batches (see the module docstring).

    Not thread-safe: the pipeline calls every method from its one processing thread.
    """

    def __init__(
        self,
        campaigns: Sequence[Campaign],
        *,
        clock: Callable[[], float] | None = None,
        max_ready_batches: int = 1024,
        max_ready_samples: int = MAX_READY_SAMPLES,
        max_pending_events: int = 1000,
        events_max_delay_s: float = 5.0,
        max_window_points: int = DEFAULT_WINDOW_POINTS,
        rewind_after_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._rewind_after = rewind_after_s
        self._acted_at = -math.inf  # the latest time `_advance` ran for
        self._max_ready = max_ready_batches
        self._max_ready_samples = max_ready_samples
        self._ready_samples = 0
        self._max_events = max_pending_events
        self._events_delay = events_max_delay_s
        self._max_window_points = max_window_points
        self._ready: list[Batch] = []
        self._events: list[Event] = []
        self._events_due = math.inf
        self._driver: dict[str, Any] | None = None
        self._deadline = -math.inf
        self._samples_in = 0
        self._stats = dict.fromkeys(
            (
                "samples_collected",
                "batches",
                "batches_full",
                "events_in",
                "dropped_events",
                "dropped_ready_batches",
                "dropped_ready_samples",
                "clock_rewinds",
            ),
            0,
        )
        self._retired: dict[str, int] = {}
        self._install(campaigns)

    # -- set-up ----------------------------------------------------------------------------------------
    def _install(self, campaigns: Sequence[Campaign]) -> None:
        self.campaigns = tuple(campaigns)
        self._runners: list[Runner] = [
            make_runner(campaign, self._emit, self._lower_deadline, self._max_window_points)
            for campaign in self.campaigns
        ]
        catch_all: list[Handler] = []
        routes: dict[str, list[Handler]] = {}
        for runner in self._runners:
            if runner.campaign.takes_every_signal:
                catch_all.append(runner.append)
            for name, handler in runner.handlers().items():
                routes.setdefault(name, []).append(handler)
        self._catch_all = tuple(catch_all)
        self._routes = {name: (*handlers, *self._catch_all) for name, handlers in routes.items()}
        self._group_routes: dict[SignalGroup, tuple[GroupTaker, ...]] = {}
        self._deadline = -math.inf  # new runners anchor their grids on the next sample or poll

    def replace_campaigns(self, campaigns: Sequence[Campaign]) -> None:
        """Apply a campaign update: the old campaigns' open batches are flushed into the ready queue."""
        for runner in self._runners:
            runner.flush()
        retired = self._runner_counters()
        for key, value in retired.items():
            self._retired[key] = self._retired.get(key, 0) + value
        self._install(campaigns)

    def needed_signals(self) -> frozenset[str] | None:
        """Every sample name some campaign reads (a source may filter on it); None when one takes all."""
        return needed_signals(self.campaigns)

    # -- hot path --------------------------------------------------------------------------------------
    def offer(self, sample: Sample) -> None:
        """Take one sample (samples should come in time order, apart from small skew between buses)."""
        self._samples_in += 1
        if sample.timestamp >= self._deadline:
            self._advance(sample.timestamp)
        try:
            handlers = self._routes[sample.name]
        except KeyError:
            handlers = self._route_new(sample.name)
        for handler in handlers:
            handler(sample)

    def offer_many(self, samples: Iterable[Sample]) -> None:
        """`offer()` each sample, with the lookups hoisted out of the loop (e.g. one frame's samples)."""
        routes = self._routes
        count = 0
        for sample in samples:
            count += 1
            if sample.timestamp >= self._deadline:
                self._advance(sample.timestamp)
            try:
                handlers = routes[sample.name]
            except KeyError:
                handlers = self._route_new(sample.name)
            for handler in handlers:
                handler(sample)
        self._samples_in += count

    def offer_records(self, records: Iterable[FrameRecord]) -> None:
        """Take decoded frames: each record's values go to the runners wanting them, as `offer()` would.

        The runners' takers for a group are looked up once per record (by the group object) and called
        with the record's timestamp and values; no `Sample` is made unless a runner works per sample.
        """
        routes = self._group_routes
        count = 0
        for timestamp, group, values in records:
            if timestamp >= self._deadline:
                self._advance(timestamp)
            takers = routes.get(group)
            if takers is None:
                takers = self._route_group(group)
            for take in takers:
                take(timestamp, values)
            count += len(values)
        self._samples_in += count

    def _route_group(self, group: SignalGroup) -> tuple[GroupTaker, ...]:
        takers = tuple(taker for runner in self._runners if (taker := runner.group_taker(group)) is not None)
        if len(self._group_routes) < MAX_ROUTES:
            self._group_routes[group] = takers
        return takers

    def _route_new(self, name: str) -> tuple[Handler, ...]:
        if len(self._routes) < MAX_ROUTES:
            self._routes[name] = self._catch_all
        return self._catch_all

    # -- time ------------------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        self._acted_at = max(self._acted_at, now)
        deadline = math.inf
        for runner in self._runners:
            if now >= runner.deadline:
                runner.advance(now)
            deadline = min(deadline, runner.deadline)
        if self._events:
            if now >= self._events_due:
                self._emit(Batch(priority=PRIORITY_NORMAL), 0, False)
            else:
                deadline = min(deadline, self._events_due)
        self._deadline = deadline

    def _lower_deadline(self, when: float) -> None:
        self._deadline = min(self._deadline, when)

    # -- identity stage hooks --------------------------------------------------------------------------
    def add_event(self, event: Event) -> None:
        """Queue an event for the next batch cut (or an events-only batch after `events_max_delay_s`)."""
        self._stats["events_in"] += 1
        if len(self._events) >= self._max_events:
            del self._events[0]
            self._stats["dropped_events"] += 1
        self._events.append(event)
        # An event stamped on another clock than the samples (a wall-clock event during a replay) must
        # not wait for that time: far ahead of the collector's own time, the delay counts from the latter.
        base = event.timestamp
        if self._acted_at > -math.inf and base > self._acted_at + self._rewind_after:
            base = self._acted_at
        self._events_due = min(self._events_due, base + self._events_delay)
        self._lower_deadline(self._events_due)

    @property
    def driver(self) -> dict[str, Any] | None:
        """The current driver, stamped on every batch cut (set with `set_driver`)."""
        return self._driver

    def set_driver(self, driver: dict[str, Any] | None, timestamp: float | None = None) -> None:
        """Change the current driver. Open batches are cut first (stamped with the previous driver)."""
        if driver == self._driver:
            return
        if timestamp is not None and timestamp >= self._deadline:
            self._advance(timestamp)
        for runner in self._runners:
            runner.cut()
        self._driver = dict(driver) if driver is not None else None

    # -- output ----------------------------------------------------------------------------------------
    def _emit(self, batch: Batch, sample_count: int, full: bool) -> None:
        if self._driver is not None:
            batch.driver = dict(self._driver)
        if self._events:
            batch.events.extend(self._events)
            self._events.clear()
            self._events_due = math.inf
            batch.priority = max(batch.priority, PRIORITY_NORMAL)
        stats = self._stats
        stats["batches"] += 1
        stats["samples_collected"] += sample_count
        if full:
            stats["batches_full"] += 1
        ready = self._ready
        size = batch.sample_count()
        while ready and (
            len(ready) >= self._max_ready or self._ready_samples + size > self._max_ready_samples
        ):
            lowest = min(range(len(ready)), key=lambda index: (ready[index].priority, index))
            dropped = ready.pop(lowest).sample_count()
            self._ready_samples -= dropped
            stats["dropped_ready_batches"] += 1
            stats["dropped_ready_samples"] += dropped
        ready.append(batch)
        self._ready_samples += size

    def poll(self, now: float | None = None) -> list[Batch]:
        """Batches cut so far. `now` (or the clock given at construction) first cuts what is due by then."""
        if now is None and self._clock is not None:
            now = self._clock()
        if now is not None:
            if now < self._acted_at - self._rewind_after:
                self._rewind()
            if not self._samples_in:
                # Nothing to cut yet, and the grids must be anchored on sample time, not on this clock.
                if self._events and now >= self._events_due:
                    self._emit(Batch(priority=PRIORITY_NORMAL), 0, False)
            elif now >= self._deadline:
                self._advance(now)
        ready, self._ready = self._ready, []
        self._ready_samples = 0
        return ready

    def _rewind(self) -> None:
        self._stats["clock_rewinds"] += 1
        for runner in self._runners:
            runner.rewind()
        self._acted_at = -math.inf
        self._deadline = -math.inf

    def flush(self) -> list[Batch]:
        """End of input: every held sample goes out; open post-trigger windows are cut short (counted).

        Pre-trigger buffers are dropped (nothing triggered them). Returns every batch not yet polled.
        """
        for runner in self._runners:
            runner.flush()
        if self._events:
            self._emit(Batch(priority=PRIORITY_NORMAL), 0, False)
        ready, self._ready = self._ready, []
        self._ready_samples = 0
        return ready

    # -- counters --------------------------------------------------------------------------------------
    def _runner_counters(self) -> dict[str, int]:
        totals = dict.fromkeys(
            (
                "triggers",
                "triggers_suppressed",
                "captures_truncated",
                "dropped_pre_trigger_overflow",
                "dropped_window_overflow",
                "condition_undefined",
            ),
            0,
        )
        for runner in self._runners:
            if isinstance(runner, TriggeredRunner):
                totals["triggers"] += runner.triggers
                totals["triggers_suppressed"] += runner.triggers_suppressed
                totals["captures_truncated"] += runner.captures_truncated
                totals["dropped_pre_trigger_overflow"] += runner.dropped_pre_trigger_overflow
                totals["dropped_window_overflow"] += sum(window.dropped for window in runner.windows)
                totals["condition_undefined"] += runner.evaluator.undefined
        return totals

    @property
    def counters(self) -> dict[str, int]:
        """Monotonic counters (since construction) plus `ready_batches`, the current queue length.

        samples_in, samples_collected, batches, batches_full (cut by max_batch_samples), triggers,
        triggers_suppressed, captures_truncated, dropped_pre_trigger_overflow, dropped_window_overflow,
        condition_undefined, events_in, dropped_events, dropped_ready_batches, dropped_ready_samples,
        clock_rewinds.
        """
        counters = {"samples_in": self._samples_in, **self._stats}
        for key, value in self._runner_counters().items():
            counters[key] = value + self._retired.get(key, 0)
        counters["ready_batches"] = len(self._ready)
        return counters

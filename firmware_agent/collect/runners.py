"""The running state of one campaign: what it keeps of each sample and when its batches are cut.

One runner class per mode. The `Collector` routes each sample only to the runners that want its name
(`handlers()`), and calls `advance(now)` once time (sample time, or the wall clock for a silent live bus)
reaches the runner's `deadline`: a periodic tick, a batch interval, the end of a post-trigger window.
Hot-path methods (`accept*`) do a few dict operations and appends and never allocate beyond the series.

Decoded frames arrive as `FrameRecord`s (`values.py`); `group_taker(group)` gives the function that
takes one record of a group's shape. By default it makes a `Sample` of each wanted value for the per-sample
handlers. `AllRunner` instead keeps each group's records as rows (a timestamp list and a list of value
tuples) and turns them into per-signal columns only when the batch is cut, so collecting every signal
costs two appends per frame rather than an object and two appends per value.

Batch cutting: a batch closes every `batch_interval_s` on a grid anchored at the first sample the
collector sees (empty batches are skipped), or as soon as it holds `max_batch_samples` samples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from firmware_agent.collect.campaign import ALL, ON_CHANGE, PERIODIC, TRIGGERED, Campaign
from firmware_agent.collect.conditions import DEFAULT_WINDOW_POINTS, Evaluator, RollingWindow
from firmware_agent.values import Batch, Event, Sample, SignalGroup, SignalValue

Handler = Callable[[Sample], None]
#: Takes one record of a known group: (timestamp, values aligned with the group's names).
GroupTaker = Callable[[float, tuple[SignalValue, ...]], None]
#: Receives a cut batch, the number of samples in it and whether it was cut because it was full.
Sink = Callable[[Batch, int, bool], None]
#: Lets a runner pull the collector's next deadline earlier (a trigger opening a post-trigger window).
DeadlineHook = Callable[[float], None]

_NOT_SEEN: Any = object()


def next_on_grid(point: float, step: float, now: float) -> float:
    """The first `point + k * step` (k >= 0) strictly after `now`, or the next float after `now`.

    Far from zero a float64 cannot hold the grid: at 2e17 s (a capture stamped in microseconds, read as
    seconds) `now + 0.1 == now`. Stepping until the sum moved spun forever there at 100 % CPU with the
    stop flag out of reach; now every path ends after one step and the time moves by at least one ulp.
    """
    if now < point:
        return point
    ticks = (now - point) / step
    if not math.isfinite(ticks):
        return math.nextafter(now, math.inf)
    candidate = point + step * (math.floor(ticks) + 1)
    if candidate <= now:  # rounding
        candidate = now + step
    if candidate <= now:  # the step is below the float's resolution at this time
        candidate = math.nextafter(now, math.inf)
    return candidate


class Runner:
    """Common part: the open batch's series, size-based and interval-based cutting."""

    def __init__(self, campaign: Campaign, sink: Sink) -> None:
        self.campaign = campaign
        self.deadline = -math.inf
        self._sink = sink
        self._series: dict[str, tuple[list[float], list[SignalValue]]] = {}
        self._events: list[Event] = []
        self._count = 0
        self._max_samples = campaign.max_batch_samples
        self._interval = campaign.batch_interval_s
        self._cut_at = -math.inf
        #: Rows kept per group (`AllRunner`): (names, timestamps, rows, rows hold one bare value).
        self._blocks: list[tuple[tuple[str, ...], list[float], list[Any], bool]] = []
        self._dirty = False  # some block holds rows not yet folded into `_series`
        self._handler_map: dict[str, Handler] | None = None

    def handlers(self) -> dict[str, Handler]:
        """Sample name -> the method that takes samples of it (empty for a campaign taking every name)."""
        return dict.fromkeys(self.campaign.signals, self.append)

    def group_taker(self, group: SignalGroup) -> GroupTaker | None:
        """How records of `group` reach this runner (None when it wants none of the group's names).

        This default hands a `Sample` per wanted value to the per-sample handlers (and, for a campaign
        taking every signal, to `append`).
        """
        if self._handler_map is None:
            self._handler_map = self.handlers()
        handlers = self._handler_map
        every = self.campaign.takes_every_signal
        entries: list[tuple[int, str, Handler]] = []
        for index, name in enumerate(group.names):
            handler = handlers.get(name)
            if handler is not None:
                entries.append((index, name, handler))
            if every:
                entries.append((index, name, self.append))
        if not entries:
            return None
        wanted = tuple(entries)

        def take_samples(timestamp: float, values: tuple[SignalValue, ...]) -> None:
            for index, name, handler in wanted:
                handler(Sample(timestamp, name, values[index]))

        return take_samples

    def _fold(self) -> None:
        """Move the rows held per group into the per-signal series (oldest first, as they arrived)."""
        self._dirty = False
        all_series = self._series
        for names, times, rows, single in self._blocks:
            if not times:
                continue
            columns: Any = (rows,) if single else zip(*rows, strict=True)
            for name, column in zip(names, columns, strict=True):
                series = all_series.get(name)
                if series is None:
                    all_series[name] = (times.copy(), list(column))
                else:
                    series[0].extend(times)
                    series[1].extend(column)
            times.clear()
            rows.clear()

    def append(self, sample: Sample) -> None:
        """Add a sample to the open batch, cutting it when it reaches `max_batch_samples`."""
        if self._dirty:
            self._fold()  # rows held for this signal are older than this sample
        series = self._series.get(sample.name)
        if series is None:
            series = self._series[sample.name] = ([], [])
        series[0].append(sample.timestamp)
        series[1].append(sample.value)
        self._count += 1
        if self._count >= self._max_samples:
            self.cut(full=True)

    def cut(self, full: bool = False) -> None:
        """Hand the open batch (if it holds anything) to the sink and start a new one."""
        if not self._count and not self._events:
            return
        if self._dirty:
            self._fold()
        batch = Batch(
            samples=self._series,
            events=self._events,
            campaign=self.campaign.name,
            priority=self.campaign.priority,
        )
        count = self._count
        self._series, self._events, self._count = {}, [], 0
        self._sink(batch, count, full)

    def advance(self, now: float) -> None:
        """Time reached `deadline`: cut the batch when its interval is over; set the next deadline."""
        if self._cut_at == -math.inf:
            self._cut_at = now + self._interval
        elif now >= self._cut_at:
            self.before_cut(now)
            self.cut()
            self._cut_at = next_on_grid(self._cut_at, self._interval, now)
        self.deadline = self._cut_at

    def before_cut(self, now: float) -> None:
        """Hook: move samples held back (throttled on-change samples) into the batch before it is cut."""

    def flush(self) -> None:
        """End of input: move everything held back into the batch and cut it."""
        self.cut()

    def rewind(self) -> None:
        """The clock went backwards: cut what is open and re-anchor the grids on the next sample."""
        self.flush()
        self._cut_at = -math.inf
        self.deadline = -math.inf


class AllRunner(Runner):
    """Mode `all`: every sample of the listed signals (or of every signal) is collected.

    Records are kept as rows per group (see the module docstring). A group sharing a name with a group
    seen earlier (a multiplexer signal present in several branches, two messages mapped to one VSS path)
    takes the per-sample path instead, so that each signal's samples stay in arrival order.
    """

    def __init__(self, campaign: Campaign, sink: Sink) -> None:
        super().__init__(campaign, sink)
        self._wanted = frozenset(campaign.signals)
        self._claimed: set[str] = set()  # names some block holds

    def group_taker(self, group: SignalGroup) -> GroupTaker | None:
        every = self.campaign.takes_every_signal
        indices = [i for i, name in enumerate(group.names) if every or name in self._wanted]
        if not indices:
            return None
        names = tuple(group.names[i] for i in indices)
        if self._claimed.intersection(names) or len(set(names)) != len(names):
            return super().group_taker(group)
        self._claimed.update(names)
        times: list[float] = []
        rows: list[Any] = []
        single = len(indices) == 1
        self._blocks.append((names, times, rows, single))
        return self._row_taker(names, indices, len(group.names), times, rows)

    def _row_taker(
        self,
        names: tuple[str, ...],
        indices: list[int],
        group_width: int,
        times: list[float],
        rows: list[Any],
    ) -> GroupTaker:
        """The hot path of `all`: a timestamp and a row per frame; exact cuts at `max_batch_samples`."""
        runner = self
        width = len(names)
        limit = self._max_samples
        add_time, add_row = times.append, rows.append
        pick: Callable[[tuple[SignalValue, ...]], Any] | None = None  # None: the whole tuple is the row
        if width == 1:
            pick = itemgetter(indices[0])  # rows hold the bare value
        elif indices != list(range(len(indices))) or width != group_width:
            pick = itemgetter(*indices)  # a tuple of the wanted values

        def take_row(timestamp: float, values: tuple[SignalValue, ...]) -> None:
            count = runner._count + width
            if count >= limit:  # the batch fills within this frame: cut at the exact sample
                for index, name in zip(indices, names, strict=True):
                    runner.append(Sample(timestamp, name, values[index]))
                return
            runner._count = count
            if not times:
                runner._dirty = True
            add_time(timestamp)
            add_row(values if pick is None else pick(values))

        return take_row


class PeriodicRunner(Runner):
    """Mode `periodic`: per signal, the last value seen in each `period_ms` tick, with its own timestamp.

    A signal that sent nothing during a tick contributes nothing (stale values are never repeated).
    """

    def __init__(self, campaign: Campaign, sink: Sink) -> None:
        super().__init__(campaign, sink)
        self._period = campaign.period_ms / 1000.0
        self._tick = -math.inf
        self._latest: dict[str, Sample] = {}

    def handlers(self) -> dict[str, Handler]:
        return dict.fromkeys(self.campaign.signals, self.remember)

    def remember(self, sample: Sample) -> None:
        """Hot path: keep only the newest sample of the signal until the tick."""
        self._latest[sample.name] = sample

    def advance(self, now: float) -> None:
        if self._tick == -math.inf:
            self._tick = now + self._period
        elif now >= self._tick:
            self._take_latest()
            self._tick = next_on_grid(self._tick, self._period, now)
        super().advance(now)
        self.deadline = min(self._tick, self._cut_at)

    def _take_latest(self) -> None:
        latest, self._latest = self._latest, {}
        for sample in latest.values():
            self.append(sample)

    def flush(self) -> None:
        self._take_latest()
        self.cut()

    def rewind(self) -> None:
        super().rewind()
        self._tick = -math.inf


class OnChangeRunner(Runner):
    """Mode `on_change`: a sample is kept when it differs from the last kept value of its signal.

    Numbers differ when `|new - last| > max(deadband, deadband_relative * |last|)`; value-table names and
    strings when they are not equal. The first sample of each signal is always kept. With
    `min_interval_ms` (throttling), a change sooner than that after the signal's last kept sample is held
    back: a newer change replaces it, a return within the deadband drops it, and when no newer sample
    arrives it is kept when the batch is cut (if the interval has passed by then) or at flush.
    """

    def __init__(self, campaign: Campaign, sink: Sink) -> None:
        super().__init__(campaign, sink)
        self._deadband = campaign.deadband
        self._relative = campaign.deadband_relative
        self._min_interval = campaign.min_interval_ms / 1000.0
        self._last: dict[str, SignalValue] = {}
        self._last_time: dict[str, float] = {}
        self._held: dict[str, Sample] = {}

    def handlers(self) -> dict[str, Handler]:
        accept = self.accept_throttled if self._min_interval > 0 else self.accept
        return dict.fromkeys(self.campaign.signals, accept)

    def _unchanged(self, value: SignalValue, last: SignalValue) -> bool:
        if last is _NOT_SEEN:
            return False
        try:
            delta = abs(value - last)  # type: ignore[operator]
        except TypeError:
            return bool(value == last)
        unchanged: bool = delta <= self._deadband or delta <= self._relative * abs(last)  # type: ignore[arg-type]
        return unchanged

    def accept(self, sample: Sample) -> None:
        """Hot path without throttling (`_unchanged` inlined)."""
        value = sample.value
        last = self._last.get(sample.name, _NOT_SEEN)
        if last is not _NOT_SEEN:
            try:
                delta = abs(value - last)
            except TypeError:
                if value == last:
                    return
            else:
                if delta <= self._deadband or delta <= self._relative * abs(last):
                    return
        self._last[sample.name] = value
        self.append(sample)

    def accept_throttled(self, sample: Sample) -> None:
        """Hot path with `min_interval_ms`."""
        name = sample.name
        if self._unchanged(sample.value, self._last.get(name, _NOT_SEEN)):
            self._held.pop(name, None)
            return
        if sample.timestamp - self._last_time.get(name, -math.inf) < self._min_interval:
            self._held[name] = sample
            return
        self._held.pop(name, None)
        self._keep(sample)

    def _keep(self, sample: Sample) -> None:
        self._last[sample.name] = sample.value
        self._last_time[sample.name] = sample.timestamp
        self.append(sample)

    def before_cut(self, now: float) -> None:
        for name, sample in list(self._held.items()):
            if now - self._last_time[name] >= self._min_interval:
                del self._held[name]
                self._keep(sample)

    def flush(self) -> None:
        held, self._held = self._held, {}
        for sample in held.values():
            self._keep(sample)
        self.cut()

    def rewind(self) -> None:
        super().rewind()
        self._last_time.clear()  # throttling must not measure intervals from the future


class TriggeredRunner(Runner):
    """Mode `triggered`: keeps the campaign's signals from `pre_trigger_s` before a trigger to
    `post_trigger_s` after it (both ends inclusive) as one high-priority capture.

    The condition triggers on a rising edge (false to true). An edge while a capture is open or within
    `cooldown_s` of the previous trigger is ignored and counted (`triggers_suppressed`). Until a trigger,
    samples wait in a pre-trigger ring buffer bounded by time (`pre_trigger_s`) and by count
    (`max_pre_trigger_samples`; beyond it the oldest sample is dropped and counted). Samples already sent
    in a capture are not sent again: a trigger right after a capture gets a shorter pre-trigger window.
    A capture larger than `max_batch_samples` goes out in several batches; the first carries a `trigger`
    event (time, campaign, condition, window).
    """

    def __init__(
        self,
        campaign: Campaign,
        sink: Sink,
        lower_deadline: DeadlineHook,
        max_window_points: int = DEFAULT_WINDOW_POINTS,
    ) -> None:
        super().__init__(campaign, sink)
        assert campaign.condition is not None, "a triggered campaign has a condition"
        self.evaluator = Evaluator(campaign.condition, max_window_points)
        self.deadline = math.inf
        self.triggers = 0
        self.triggers_suppressed = 0
        self.captures_truncated = 0
        self.dropped_pre_trigger_overflow = 0
        self._lower_deadline = lower_deadline
        self._pre = campaign.pre_trigger_s
        self._post = campaign.post_trigger_s
        self._cooldown = campaign.cooldown_s
        self._max_pre = campaign.max_pre_trigger_samples
        self._buffer: deque[Sample] = deque(maxlen=self._max_pre)
        self._capturing = False
        self._capture_end = -math.inf
        self._quiet_until = -math.inf
        self._holds = False

    @property
    def windows(self) -> list[RollingWindow]:
        """The condition's rolling windows."""
        return self.evaluator.windows

    def handlers(self) -> dict[str, Handler]:
        signals = set(self.campaign.signals)
        inputs = self.evaluator.expression.signals
        routes: dict[str, Handler] = {}
        for name in signals | inputs:
            if name in signals and name in inputs:
                routes[name] = self.accept_both
            elif name in signals:
                routes[name] = self.accept_signal
            else:
                routes[name] = self.accept_input
        return routes

    def accept_signal(self, sample: Sample) -> None:
        """Hot path: a collected signal goes to the open capture, else to the pre-trigger buffer."""
        if self._capturing:
            self.append(sample)
            return
        buffer = self._buffer
        if len(buffer) == self._max_pre:
            self.dropped_pre_trigger_overflow += 1  # the deque drops its oldest on append
        buffer.append(sample)
        cutoff = sample.timestamp - self._pre
        while buffer[0].timestamp < cutoff:
            buffer.popleft()

    def accept_input(self, sample: Sample) -> None:
        """Hot path: a condition input updates the condition; a rising edge may trigger."""
        holds = self.evaluator.update(sample)
        if holds and not self._holds:
            self._trigger(sample.timestamp)
        self._holds = holds

    def accept_both(self, sample: Sample) -> None:
        """A signal both collected and read by the condition (buffered first, so a trigger keeps it)."""
        self.accept_signal(sample)
        self.accept_input(sample)

    def _trigger(self, when: float) -> None:
        if self._capturing or when < self._quiet_until:
            self.triggers_suppressed += 1
            return
        self.triggers += 1
        self._quiet_until = when + self._cooldown
        self._capturing = True
        self._capture_end = when + self._post
        campaign = self.campaign
        self._events.append(
            Event(
                when,
                "trigger",
                {
                    "campaign": campaign.name,
                    "condition": str(campaign.condition),
                    "pre_trigger_s": self._pre,
                    "post_trigger_s": self._post,
                },
            )
        )
        start = when - self._pre
        buffered, self._buffer = self._buffer, deque(maxlen=self._max_pre)
        for sample in buffered:
            if sample.timestamp >= start:
                self.append(sample)
        # Close the capture on the first time strictly after its end: the end itself is inside it.
        self.deadline = math.nextafter(self._capture_end, math.inf)
        self._lower_deadline(self.deadline)

    def advance(self, now: float) -> None:
        if self._capturing and now > self._capture_end:
            self._capturing = False
            self.cut()
        self.deadline = math.nextafter(self._capture_end, math.inf) if self._capturing else math.inf

    def flush(self) -> None:
        """End of input: an open capture goes out truncated (counted); the pre-trigger buffer is dropped."""
        if self._capturing:
            self._capturing = False
            self.captures_truncated += 1
            self.cut()
            self.deadline = math.inf
        self._buffer.clear()

    def rewind(self) -> None:
        """The clock went backwards: end an open capture (truncated), forget the condition's state."""
        self.flush()
        self.evaluator.reset()
        self._holds = False
        self._quiet_until = -math.inf
        self._capture_end = -math.inf


def make_runner(
    campaign: Campaign,
    sink: Sink,
    lower_deadline: DeadlineHook,
    max_window_points: int = DEFAULT_WINDOW_POINTS,
) -> Runner:
    """The runner for `campaign`'s mode."""
    if campaign.mode == PERIODIC:
        return PeriodicRunner(campaign, sink)
    if campaign.mode == ON_CHANGE:
        return OnChangeRunner(campaign, sink)
    if campaign.mode == TRIGGERED:
        return TriggeredRunner(campaign, sink, lower_deadline, max_window_points)
    if campaign.mode == ALL:
        return AllRunner(campaign, sink)
    raise ValueError(f"unknown campaign mode {campaign.mode!r}")

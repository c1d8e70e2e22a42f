"""The collector on synthetic streams: periodic timing, deadbands, triggered windows, bounds and counters.

Timestamps are multiples of 1/8 s so that window edges fall exactly on samples (no float rounding).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest

from firmware_agent.collect.campaign import Campaign, builtin_all, loads_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_NORMAL, Batch, Event, Sample

STEP = 0.125


def campaign(text: str) -> Campaign:
    (parsed,) = loads_campaigns("[[campaign]]\n" + text)
    return parsed


def run(collector: Collector, samples: Iterable[Sample]) -> list[Batch]:
    batches: list[Batch] = []
    for sample in samples:
        collector.offer(sample)
        batches += collector.poll()
    return batches + collector.flush()


def rows(batches: Iterable[Batch], campaign_name: str | None = None) -> list[tuple[str, float, object]]:
    """Every (name, timestamp, value) in the batches, in time order."""
    found = []
    for batch in batches:
        if campaign_name is not None and batch.campaign != campaign_name:
            continue
        for name, (times, values) in batch.samples.items():
            found += [(name, t, v) for t, v in zip(times, values, strict=True)]
    return sorted(found, key=lambda row: (row[1], row[0]))


def ticks(start: float, stop: float, step: float = STEP) -> list[float]:
    count = round((stop - start) / step)
    return [start + i * step for i in range(count + 1)]


# -- periodic --------------------------------------------------------------------------------------------


def test_periodic_keeps_the_last_value_of_each_period_with_its_own_time() -> None:
    collector = Collector([campaign('name = "p"\nmode = "periodic"\nperiod_ms = 1000\nsignals = ["a", "b"]')])
    stream = [Sample(t, "a", t * 10) for t in ticks(0.0, 4.875)]
    stream += [Sample(0.5, "b", "on")]  # one sample only: never repeated in later periods
    stream.sort(key=lambda s: s.timestamp)
    batches = run(collector, stream)
    assert rows(batches) == [
        ("b", 0.5, "on"),
        ("a", 0.875, 8.75),
        ("a", 1.875, 18.75),
        ("a", 2.875, 28.75),
        ("a", 3.875, 38.75),
        ("a", 4.875, 48.75),  # the last period goes out at flush
    ]


def test_batches_are_cut_on_the_sample_clock_grid() -> None:
    collector = Collector([campaign('name = "x"\nmode = "all"\nbatch_interval_s = 2\nsignals = ["a"]')])
    batches = run(collector, [Sample(100.0 + t, "a", t) for t in ticks(0.0, 5.0)])
    spans = [(min(b.samples["a"][0]), max(b.samples["a"][0])) for b in batches]
    assert spans == [(100.0, 101.875), (102.0, 103.875), (104.0, 105.0)]
    assert all(b.campaign == "x" and b.priority == PRIORITY_NORMAL for b in batches)


def test_a_silent_bus_is_cut_by_poll_with_the_wall_clock() -> None:
    now = [0.0]
    collector = Collector(
        [campaign('name = "x"\nmode = "periodic"\nperiod_ms = 500\nbatch_interval_s = 2\nsignals = ["a"]')],
        clock=lambda: now[0],
    )
    collector.offer(Sample(10.0, "a", 1))
    collector.offer(Sample(10.25, "a", 2))
    now[0] = 11.0
    assert collector.poll() == []  # the batch's interval is not over yet
    now[0] = 12.5  # no sample since 10.25: the clock alone ends the period and the batch
    (batch,) = collector.poll()
    assert batch.samples == {"a": ([10.25], [2])}


# -- on change -------------------------------------------------------------------------------------------


def test_on_change_absolute_deadband() -> None:
    collector = Collector([campaign('name = "c"\nmode = "on_change"\ndeadband = 0.5\nsignals = ["a"]')])
    values = [0.0, 0.4, 0.5, 0.6, 0.7, 1.3, 1.3, 0.7, 0.8]
    batches = run(collector, [Sample(i * STEP, "a", v) for i, v in enumerate(values)])
    # Compared with the last *kept* value: 0.0 -> 0.6 (> 0.5) -> 1.3 -> 0.7 (|-0.6| > 0.5).
    assert [v for _, _, v in rows(batches)] == [0.0, 0.6, 1.3, 0.7]


def test_on_change_relative_deadband_with_an_absolute_floor() -> None:
    text = 'name = "c"\nmode = "on_change"\ndeadband = 1\ndeadband_relative = 0.1\nsignals = ["a"]'
    collector = Collector([campaign(text)])
    values = [100, 109, 111, 111, 5, 5.5, 6.5]
    batches = run(collector, [Sample(i * STEP, "a", v) for i, v in enumerate(values)])
    # 109: |9| <= 10 % of 100; 111 kept; 5 kept; 5.5: within the absolute 1 although > 10 % of 5; 6.5 kept.
    assert [v for _, _, v in rows(batches)] == [100, 111, 5, 6.5]


def test_on_change_names_compare_by_equality() -> None:
    collector = Collector([campaign('name = "c"\nmode = "on_change"\ndeadband = 5\nsignals = ["g"]')])
    values = ["P", "P", "D", "D", "R"]
    batches = run(collector, [Sample(i * STEP, "g", v) for i, v in enumerate(values)])
    assert [v for _, _, v in rows(batches)] == ["P", "D", "R"]


def test_on_change_throttling_keeps_the_latest_change() -> None:
    text = 'name = "c"\nmode = "on_change"\nmin_interval_ms = 1000\nbatch_interval_s = 5\nsignals = ["a"]'
    collector = Collector([campaign(text)])
    stream = [
        Sample(0.0, "a", 1),  # kept (first)
        Sample(0.25, "a", 2),  # too soon: held
        Sample(0.5, "a", 3),  # too soon: replaces the held 2
        Sample(1.25, "a", 4),  # interval over: kept, the held 3 is dropped as outdated
        Sample(1.5, "a", 9),  # too soon: held ...
        Sample(1.75, "a", 4),  # ... and back to the kept value: nothing left to report
        Sample(2.5, "a", 5),  # too soon (kept 1.25): held; no newer sample comes
        Sample(5.0, "a", 5),  # equal to the held value, not to the kept one: still held
    ]
    batches = run(collector, stream)
    # At the batch cut (t=5, 3.75 s after the last kept sample) the held 5 goes out with its own time.
    assert [(t, v) for _, t, v in rows(batches)] == [(0.0, 1), (1.25, 4), (2.5, 5)]
    assert batches[0].samples["a"][0][-1] == 2.5


# -- triggered -------------------------------------------------------------------------------------------

BRAKES = (
    'name = "brakes"\nmode = "triggered"\ncondition = "pedal > 80"\n'
    'pre_trigger_s = 10\npost_trigger_s = 5\ncooldown_s = 30\nsignals = ["speed", "pedal"]\n'
)


def braking_stream(presses: Iterable[float], end: float) -> list[Sample]:
    """speed every 1/8 s; pedal every 1/4 s, at 100 for one second from each press time, else 0."""
    presses = list(presses)
    stream = []
    for t in ticks(0.0, end):
        stream.append(Sample(t, "speed", 50.0 + t))
        if (t / STEP) % 2 == 0:
            pressed = any(p <= t < p + 1 for p in presses)
            stream.append(Sample(t, "pedal", 100.0 if pressed else 0.0))
    return stream


def test_triggered_capture_keeps_exactly_the_pre_and_post_window() -> None:
    collector = Collector([campaign(BRAKES)])
    stream = braking_stream([20.0], end=40.0)
    batches = run(collector, stream)
    (capture,) = batches
    expected = [(s.name, s.timestamp, s.value) for s in stream if 10.0 <= s.timestamp <= 25.0]
    assert rows([capture]) == sorted(expected, key=lambda row: (row[1], row[0]))
    assert min(capture.samples["speed"][0]) == 10.0 and max(capture.samples["speed"][0]) == 25.0
    assert capture.priority == PRIORITY_HIGH and capture.campaign == "brakes"
    (trigger,) = capture.events
    assert (trigger.timestamp, trigger.kind) == (20.0, "trigger")
    assert trigger.detail["condition"] == "pedal > 80"
    assert collector.counters["triggers"] == 1


def test_triggers_during_a_capture_or_the_cooldown_are_suppressed() -> None:
    collector = Collector([campaign(BRAKES)])
    # 20: trigger; 22: inside the capture; 40: within 30 s of 20; 55: triggers again.
    batches = run(collector, braking_stream([20.0, 22.0, 40.0, 55.0], end=70.0))
    triggers = [event.timestamp for batch in batches for event in batch.events]
    assert triggers == [20.0, 55.0]
    counters = collector.counters
    assert (counters["triggers"], counters["triggers_suppressed"]) == (2, 2)
    second = rows(batches[1:])
    assert (second[0][1], second[-1][1]) == (45.0, 60.0)


def test_a_trigger_soon_after_a_capture_does_not_resend_its_samples() -> None:
    text = BRAKES.replace("cooldown_s = 30", "cooldown_s = 0")
    collector = Collector([campaign(text)])
    batches = run(collector, braking_stream([20.0, 28.0], end=40.0))
    first, second = rows(batches[:1]), rows(batches[1:])
    assert (first[0][1], first[-1][1]) == (10.0, 25.0)
    # The second pre-trigger window (18..28) starts after the first capture's end (25).
    assert (second[0][1], second[-1][1]) == (25.125, 33.0)


def test_flush_truncates_an_open_post_trigger_window() -> None:
    collector = Collector([campaign(BRAKES)])
    batches = run(collector, braking_stream([20.0], end=22.0))
    (capture,) = batches
    assert max(capture.samples["speed"][0]) == 22.0
    assert collector.counters["captures_truncated"] == 1


def test_pre_trigger_buffer_bound_drops_oldest_and_counts() -> None:
    collector = Collector([campaign(BRAKES + "max_pre_trigger_samples = 8\n")])
    batches = run(collector, braking_stream([20.0], end=21.0))
    pre = [row for row in rows(batches) if row[1] <= 20.0]
    # Only the 8 newest samples up to the trigger survived (speed at 1/8 s, pedal at 1/4 s).
    assert [t for _, t, _ in pre] == [19.5, 19.5, 19.625, 19.75, 19.75, 19.875, 20.0, 20.0]
    assert collector.counters["dropped_pre_trigger_overflow"] > 0


def test_rolling_condition_triggers_on_a_speed_drop() -> None:
    text = (
        'name = "stop"\nmode = "triggered"\ncondition = "max(speed, 3) - speed > 30"\n'
        'pre_trigger_s = 1\npost_trigger_s = 1\nsignals = ["speed"]\n'
    )
    collector = Collector([campaign(text)])
    # 100 km/h, then -20 km/h per second from t=10: the drop within 3 s exceeds 30 at t=11.625.
    stream = [Sample(t, "speed", 100.0 if t < 10 else 100.0 - 20 * (t - 10)) for t in ticks(0.0, 15.0)]
    batches = run(collector, stream)
    assert [event.timestamp for batch in batches for event in batch.events] == [11.625]


# -- batching, events, driver, bounds --------------------------------------------------------------------


def test_max_batch_samples_cuts_full_batches() -> None:
    collector = Collector([campaign('name = "x"\nmode = "all"\nmax_batch_samples = 4\nsignals = ["a"]')])
    batches = run(collector, [Sample(t, "a", t) for t in ticks(0.0, 1.25)])
    assert [b.sample_count() for b in batches] == [4, 4, 3]
    counters = collector.counters
    assert (counters["batches"], counters["batches_full"], counters["samples_collected"]) == (3, 2, 11)


def test_all_takes_every_sample_and_others_ignore_unknown_names() -> None:
    collector = Collector([builtin_all(), campaign('name = "p"\nmode = "on_change"\nsignals = ["a"]')])
    stream = [Sample(0.0, "a", 1), Sample(0.0, "zz", 2), Sample(0.125, "a", 1), Sample(0.125, "zz", 3)]
    batches = run(collector, stream)
    assert rows(batches, "all") == [("a", 0.0, 1), ("zz", 0.0, 2), ("a", 0.125, 1), ("zz", 0.125, 3)]
    assert rows(batches, "p") == [("a", 0.0, 1)]
    counters = collector.counters
    assert (counters["samples_in"], counters["samples_collected"]) == (4, 5)


def test_offer_many_equals_offer() -> None:
    text = 'name = "p"\nmode = "periodic"\nperiod_ms = 250\nsignals = ["speed", "pedal"]'
    stream = braking_stream([3.0], end=6.0)
    one, many = Collector([campaign(text), campaign(BRAKES)]), Collector([campaign(text), campaign(BRAKES)])
    for sample in stream:
        one.offer(sample)
    many.offer_many(stream)
    assert rows(one.flush()) == rows(many.flush())
    assert one.counters == many.counters


def test_events_ride_in_the_next_batch_or_go_alone_after_the_delay() -> None:
    collector = Collector(
        [campaign('name = "x"\nmode = "all"\nbatch_interval_s = 1\npriority = "low"\nsignals = ["a"]')],
        events_max_delay_s=2.0,
    )
    collector.offer(Sample(0.0, "a", 1))
    collector.add_event(Event(0.5, "driver_change", {"to": "B"}))
    collector.offer(Sample(1.0, "a", 2))  # cuts [0, 1): the event rides along
    (batch,) = collector.poll()
    assert [event.kind for event in batch.events] == ["driver_change"]
    assert batch.priority == PRIORITY_NORMAL  # raised from low: it carries an event
    collector.add_event(Event(1.5, "e2e_burst"))
    assert collector.poll(now=3.0)[0].samples  # the batch [1, 2) cut at 3 carries the event too
    collector.add_event(Event(10.0, "bus_gap"))
    assert collector.poll(now=11.0) == []
    (alone,) = collector.poll(now=12.0)  # nothing to ride with for 2 s: an events-only batch
    assert (alone.campaign, [e.kind for e in alone.events], alone.samples) == (None, ["bus_gap"], {})


def test_pending_events_are_bounded() -> None:
    collector = Collector([], max_pending_events=2)
    for i in range(5):
        collector.add_event(Event(float(i), f"e{i}"))
    (batch,) = collector.flush()
    assert [e.kind for e in batch.events] == ["e3", "e4"]
    assert (collector.counters["events_in"], collector.counters["dropped_events"]) == (5, 3)


def test_driver_change_cuts_open_batches_and_stamps_the_driver() -> None:
    collector = Collector([campaign('name = "x"\nmode = "all"\nbatch_interval_s = 100\nsignals = ["a"]')])
    collector.set_driver({"id": "A"})
    collector.offer(Sample(0.0, "a", 1))
    collector.set_driver({"id": "B"}, timestamp=0.5)
    collector.offer(Sample(1.0, "a", 2))
    first, second = collector.flush()
    assert (first.driver, first.samples["a"][1]) == ({"id": "A"}, [1])
    assert (second.driver, second.samples["a"][1]) == ({"id": "B"}, [2])


def test_ready_queue_bound_drops_the_oldest_lowest_priority_batch() -> None:
    low = campaign('name = "low"\nmode = "all"\npriority = "low"\nmax_batch_samples = 1\nsignals = ["a"]')
    high = campaign('name = "high"\nmode = "all"\npriority = "high"\nmax_batch_samples = 1\nsignals = ["b"]')
    collector = Collector([low, high], max_ready_batches=3)
    for sample in [Sample(0.0, "b", 1), Sample(0.1, "a", 1), Sample(0.2, "a", 2), Sample(0.3, "b", 2)]:
        collector.offer(sample)
    batches = collector.poll()
    assert [(b.campaign, b.samples[next(iter(b.samples))][1]) for b in batches] == [
        ("high", [1]),
        ("low", [2]),
        ("high", [2]),
    ]
    counters = collector.counters
    assert (counters["dropped_ready_batches"], counters["dropped_ready_samples"]) == (1, 1)


def test_replace_campaigns_flushes_the_old_ones_and_keeps_counting() -> None:
    collector = Collector([campaign(BRAKES)])
    for sample in braking_stream([2.0], end=3.0):
        collector.offer(sample)
    collector.replace_campaigns([campaign('name = "x"\nmode = "all"\nsignals = ["speed"]')])
    (truncated,) = collector.poll()
    assert truncated.campaign == "brakes"
    collector.offer(Sample(4.0, "speed", 1.0))
    (batch,) = collector.flush()
    assert batch.campaign == "x"
    assert collector.counters["triggers"] == 1
    assert collector.counters["captures_truncated"] == 1


def test_needed_signals_lists_collected_and_condition_signals() -> None:
    collector = Collector([campaign(BRAKES.replace('signals = ["speed", "pedal"]', 'signals = ["speed"]'))])
    assert collector.needed_signals() == {"speed", "pedal"}


@pytest.mark.parametrize("mode", ["periodic", "on_change", "all"])
def test_nothing_is_lost_at_flush(mode: str) -> None:
    extra = "period_ms = 100\n" if mode == "periodic" else ""
    collector = Collector([campaign(f'name = "x"\nmode = "{mode}"\n{extra}signals = ["a"]')])
    collector.offer(Sample(0.0, "a", 1))
    collector.offer(Sample(0.01, "a", 2))
    assert rows(collector.flush())[-1] == ("a", 0.01, 2)
    assert collector.counters["ready_batches"] == 0


# -- clock -----------------------------------------------------------------------------------------------


def test_poll_before_the_first_sample_does_not_anchor_on_the_wall_clock() -> None:
    # The agent's data clock is the wall clock until the first frame; a replay's frames are years older.
    collector = Collector([campaign('name = "x"\nmode = "all"\nbatch_interval_s = 2\nsignals = ["a"]')])
    assert collector.poll(now=2_000_000_000.0) == []
    batches = []
    for t in ticks(0.0, 5.0):
        collector.offer(Sample(1_500_000_000.0 + t, "a", t))
        batches += collector.poll()
    assert [b.sample_count() for b in batches] == [16, 16]  # cut by sample time, before any flush


def test_a_clock_stepped_back_re_anchors_and_truncates_open_captures() -> None:
    collector = Collector(
        [campaign(BRAKES), campaign('name = "x"\nmode = "all"\nbatch_interval_s = 2\nsignals = ["a"]')]
    )
    for sample in braking_stream([20.0], end=21.0):
        collector.offer(Sample(1000.0 + sample.timestamp, sample.name, sample.value))
    collector.offer(Sample(1021.0, "a", 1))
    before = collector.poll(now=1021.0)
    assert before == []  # the capture is open until 1025, the batch of "a" until 1023
    # The clock is stepped back by 500 s: what was open goes out, grids restart on the new time.
    after_step = collector.poll(now=521.0)
    assert sorted(b.campaign or "" for b in after_step) == ["brakes", "x"]
    counters = collector.counters
    assert (counters["clock_rewinds"], counters["captures_truncated"]) == (1, 1)
    for t in ticks(0.0, 4.0):
        collector.offer(Sample(521.0 + t, "a", t))
    assert [b.sample_count() for b in collector.poll()] == [16, 16]  # cut at 523 and 525: the new grid


def test_an_event_on_the_wall_clock_does_not_wait_for_it_during_a_replay() -> None:
    collector = Collector([campaign(BRAKES)], events_max_delay_s=2.0)  # no batch to ride with
    collector.offer(Sample(1_500_000_000.0, "speed", 1.0))
    collector.add_event(Event(2_000_000_000.0, "bus_gap"))
    collector.offer(Sample(1_500_000_001.0, "speed", 1.0))
    assert collector.poll() == []
    collector.offer(Sample(1_500_000_002.0, "speed", 1.0))
    (batch,) = collector.poll()
    assert [event.kind for event in batch.events] == ["bus_gap"]


# -- absurd times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1.7e15, 2e17, 1e300, 1.7e308])
def test_absurd_timestamps_never_freeze_the_collector(start: float) -> None:
    """A capture stamped in microseconds (read as seconds), a line stamped 2e17, `sim:start=1e300`: the
    grid of a 10 Hz periodic campaign cannot be represented there (`t + 0.1 == t`); it used to spin."""
    collector = Collector(
        [
            campaign('name = "p"\nmode = "periodic"\nperiod_ms = 100\nsignals = ["a"]'),
            builtin_all(),
        ]
    )
    stream = [Sample(start + i * start * 1e-15, "a", float(i)) for i in range(50)]
    batches: list[Batch] = []
    worker = threading.Thread(target=lambda: batches.extend(run(collector, stream)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), f"the collector spins at t = {start:g}"
    assert sum(len(times) for b in batches for times, _ in b.samples.values()) >= 50

"""Batches that fit the broker: the MQTT 5 Maximum Packet Size and how a batch is split to honour it.

A v5 broker may announce in its CONNACK the largest packet it accepts (mosquitto: `max_packet_size`). A
PUBLISH above it is a protocol error: the broker closes the connection, paho re-sends the same message after
reconnecting, and nothing ever arrives (issue 12: 0 of 54 batches of ~80 KB reached a broker with
`max_packet_size 65536`, the agent looping connect/disconnect). So the uploader turns the broker's limit into
a limit on the signed message (`message_limit`) and hands it to the outbox, which splits every batch whose
sealed message exceeds it before storing it (`split_batch`, each part sealed with its own `seq`), and
splits again a batch stored before the limit was known (`batch_of_payload` rebuilds it from its payload).

Policy of a split: the samples, in time order, are cut in two halves of equal count (the events go with
the half their time falls in); campaign, driver and priority go with both; the counters the batch carried
go with the first half. Halving repeats until each part fits. A part that cannot be split (one sample or
one event, or nothing but counters) and still does not fit is dead-lettered by the outbox and counted
(`outbox.oversize`, also in `outbox.dead_lettered`), never retried.
"""

from __future__ import annotations

from operator import itemgetter

from firmware_agent.telemetry.payload import Payload
from firmware_agent.values import Batch, Event, SignalValue

#: The MQTT 5 PUBLISH around a QoS 1 message without properties, at most: fixed header (1 byte and a
#: remaining length of up to 4), topic length (2), packet identifier (2) and property length (1).
PUBLISH_FIXED_OVERHEAD = 1 + 4 + 2 + 2 + 1


def message_limit(maximum_packet_size: int, topic: str) -> int:
    """The largest signed message that fits a PUBLISH on `topic` within `maximum_packet_size` bytes."""
    return maximum_packet_size - PUBLISH_FIXED_OVERHEAD - len(topic.encode())


def split_batch(batch: Batch) -> tuple[Batch, Batch] | None:
    """`batch` cut in two by time (see the module docstring); None when it holds fewer than two items."""
    items = [
        (timestamp, name, index)
        for name, (times, _) in batch.samples.items()
        for index, timestamp in enumerate(times)
    ]
    if len(items) >= 2:
        items.sort(key=itemgetter(0))  # stable: equal times keep their signal order
        half = len(items) // 2
        cut = items[half][0]
        parts = (_part(batch, items[:half]), _part(batch, items[half:]))
        for event in batch.events:
            parts[0 if event.timestamp < cut else 1].events.append(event)
    elif len(batch.events) + len(items) >= 2:
        # one sample or none: it alone in the first part, or the events in halves
        half = 0 if items else len(batch.events) // 2
        parts = (_part(batch, items), _part(batch, []))
        parts[0].events.extend(batch.events[:half])
        parts[1].events.extend(batch.events[half:])
    else:
        return None
    parts[0].counters = batch.counters
    parts[1].counters = {} if batch.counters is not None else None
    return parts


def _part(batch: Batch, items: list[tuple[float, str, int]]) -> Batch:
    part = Batch(
        campaign=batch.campaign,
        driver=dict(batch.driver) if batch.driver is not None else None,
        priority=batch.priority,
    )
    samples: dict[str, tuple[list[float], list[SignalValue]]] = {}
    for timestamp, name, index in items:
        series = samples.get(name)
        if series is None:
            series = samples[name] = ([], [])
        series[0].append(timestamp)
        series[1].append(batch.samples[name][1][index])
    # each signal's samples in time order (items are sorted by time; a stable sort keeps equal times' order)
    part.samples = samples
    return part


def batch_of_payload(payload: Payload, priority: int) -> Batch:
    """The batch a payload was sealed from, with the counters it carried, to be split and sealed again."""
    return Batch(
        samples={name: (list(times), list(values)) for name, (times, values) in payload.signals.items()},
        events=[Event(event.timestamp, event.kind, dict(event.detail)) for event in payload.events],
        campaign=payload.campaign,
        driver=payload.driver,
        priority=priority,
        counters=dict(payload.counters) if payload.counters is not None else {},
    )

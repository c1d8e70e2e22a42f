"""Verifying received telemetry: signatures, kid, topic binding, replays and gaps in `seq`.

`TelemetryVerifier.check(topic, message)` verifies one message and returns the decoded batch or a
`Problem`; `finish()` reports the gaps in each vehicle's `seq` once all messages are in. Saved messages use
a line-oriented dump format (`read_dump`, `DumpWriter`): one message per line, `TOPIC<TAB>BASE64`, with
blank lines and lines starting with `#` ignored.
"""

from __future__ import annotations

import base64
import binascii
import csv
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_agent.errors import UserError
from firmware_agent.telemetry.cose import (
    BadSignatureError,
    MalformedMessageError,
    UnknownKidError,
    VerificationError,
    WrongAlgorithmError,
    message_kid,
    unverified_payload,
    verify_sign1,
)
from firmware_agent.telemetry.payload import Payload, PayloadError, decode_payload
from firmware_agent.telemetry.topics import telemetry_topic, vehicle_of_topic


@dataclass(frozen=True)
class Problem:
    """One reason a message (or the stream) failed verification; `str()` is the one-line report."""

    kind: str  # bad_signature, unknown_kid, wrong_alg, malformed, wrong_topic, replay, gap, ...
    topic: str
    detail: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.kind}: {self.topic}: {self.detail}"


@dataclass(frozen=True)
class VerifiedBatch:
    """A message whose signature, kid and topic binding verified."""

    topic: str
    kid: bytes
    payload: Payload


_ERROR_KINDS: tuple[tuple[type[VerificationError], str], ...] = (
    (MalformedMessageError, "malformed"),
    (WrongAlgorithmError, "wrong_alg"),
    (UnknownKidError, "unknown_kid"),
    (BadSignatureError, "bad_signature"),
)


#: The outbox counters that say a batch will never arrive (or may not: still settling).
LOSS_COUNTERS = ("evicted", "evicted_in_flight", "dead_lettered")


class TelemetryVerifier:
    """Checks a stream of telemetry messages against known public keys (by kid).

    A second message with an already seen `(vehicle, seq)` is a `replay`. MQTT QoS 1 is at-least-once, so
    a broker may legitimately re-deliver a batch after a reconnect; with `allow_duplicates`, a byte-identical
    re-delivery is only counted in `duplicates`, while a different message with a seen seq stays a problem.
    `owners` binds kids to vehicle ids: a batch on vehicle B's topic signed with vehicle A's key is then a
    `wrong_key` problem even though the signature itself is valid. With `track_seq=False` the verifier keeps
    no per-vehicle state (replays and gaps are the caller's: `ingest` has a unique key in its database).
    """

    def __init__(
        self,
        keys: Mapping[bytes, Ed25519PublicKey],
        allow_duplicates: bool = False,
        owners: Mapping[bytes, str] | None = None,
        track_seq: bool = True,
    ) -> None:
        self._keys = dict(keys)
        self._track_seq = track_seq
        self._owners = dict(owners or {})
        self._allow_duplicates = allow_duplicates
        self._seen: dict[str, dict[int, bytes]] = {}
        self.received = 0
        self.verified = 0
        self.duplicates = 0
        self.missing = 0  # batches in the gaps found by finish()
        self.counted_lost = 0  # of those, batches the vehicle counted as evicted or dead-lettered
        self._losses: dict[str, tuple[int, int]] = {}  # vehicle -> (seq of the report, batches lost)
        self.problems: list[Problem] = []
        self.counted: list[Problem] = []  # gaps the vehicle's counters account for (kind `evicted`)

    def check(self, topic: str, message: bytes, source: str = "") -> VerifiedBatch | Problem:
        """Verify one message received on `topic`; problems are also collected in `problems`."""
        self.received += 1
        result = self._check(topic, message, source)
        if isinstance(result, Problem):
            self.problems.append(result)
        else:
            self.verified += 1
        return result

    def _check(self, topic: str, message: bytes, source: str) -> VerifiedBatch | Problem:
        vehicle = vehicle_of_topic(topic)
        if vehicle is None or topic != telemetry_topic(vehicle):
            return Problem("wrong_topic", topic, "not a vehicles/{id}/telemetry topic", source)
        try:
            payload_bytes = verify_sign1(message, topic, self._keys)
        except BadSignatureError as exc:
            return Problem(*self._diagnose_bad_signature(topic, message, exc), source)
        except VerificationError as exc:
            kind = next(k for cls, k in _ERROR_KINDS if isinstance(exc, cls))
            return Problem(kind, topic, str(exc), source)
        try:
            payload = decode_payload(payload_bytes)
        except PayloadError as exc:
            return Problem("malformed", topic, f"signed payload: {exc}", source)
        if payload.vehicle != vehicle:
            return Problem("wrong_vehicle", topic, f"payload is from vehicle {payload.vehicle!r}", source)
        kid = message_kid(message) or b""
        owner = self._owners.get(kid)
        if owner is not None and owner != vehicle:
            return Problem("wrong_key", topic, f"signed with kid {kid.hex()} of vehicle {owner}", source)
        if not self._track_seq:
            return VerifiedBatch(topic, kid, payload)
        seen = self._seen.setdefault(vehicle, {})
        first = seen.get(payload.seq)
        if first is not None:
            if self._allow_duplicates and first == message:
                self.duplicates += 1
            else:
                return Problem("replay", topic, f"seq {payload.seq} seen before", source)
        seen[payload.seq] = message
        if payload.counters:
            self._note_losses(vehicle, payload.seq, payload.counters)
        return VerifiedBatch(topic, kid, payload)

    def _note_losses(self, vehicle: str, seq: int, counters: Mapping[str, object]) -> None:
        """Keep the latest loss report of each vehicle: evicted, still-unsettled and dead-lettered batches."""
        lost = 0
        for name in LOSS_COUNTERS:
            for key in (f"outbox.{name}", name):  # the agent prefixes them, a bare outbox does not
                value = counters.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    lost += value
                    break
        if seq >= self._losses.get(vehicle, (-1, 0))[0]:
            self._losses[vehicle] = (seq, lost)

    def _diagnose_bad_signature(
        self, topic: str, message: bytes, exc: BadSignatureError
    ) -> tuple[str, str, str]:
        """Tell a batch moved to another topic (it verifies for its own) from a forged or damaged one."""
        try:
            claimed = telemetry_topic(decode_payload(unverified_payload(message)).vehicle)
        except Exception:  # a forged message may hold anything: the diagnosis must never raise
            claimed = None
        if claimed and claimed != topic:
            try:
                verify_sign1(message, claimed, self._keys)
            except VerificationError:
                pass
            else:
                return "wrong_topic", topic, f"signed for {claimed}, received on {topic}"
        return "bad_signature", topic, str(exc)

    def finish(self) -> list[Problem]:
        """The gaps in each vehicle's seq between the lowest and highest seen.

        When the vehicle's latest `counters` account for every missing batch (`outbox.evicted`,
        `outbox.evicted_in_flight`, `outbox.dead_lettered`), its gaps are reported with kind `evicted`: losses
        the vehicle counted, listed in `counted` and not added to `problems`. Otherwise they are `gap`
        problems: batches lost without a count, or still on their way.
        """
        gaps = []
        for vehicle, seen in sorted(self._seen.items()):
            seqs = sorted(seen)
            found = []
            for before, after in itertools.pairwise(seqs):
                if after > before + 1:
                    missing = f"seq {before + 1}" if after == before + 2 else f"seq {before + 1}..{after - 1}"
                    found.append((after - before - 1, missing))
            total = sum(count for count, _ in found)
            self.missing += total
            lost = self._losses.get(vehicle, (0, 0))[1]
            counted = bool(found) and total <= lost
            topic = telemetry_topic(vehicle)
            for _, missing in found:
                if counted:
                    detail = (
                        f"{missing} missing, counted by the vehicle ({lost} batches evicted or dead-lettered)"
                    )
                    gaps.append(Problem("evicted", topic, detail))
                else:
                    gaps.append(Problem("gap", topic, f"{missing} missing"))
            if counted:
                self.counted_lost += total
        self.counted.extend(g for g in gaps if g.kind == "evicted")
        self.problems.extend(g for g in gaps if g.kind != "evicted")
        return gaps


# --- the dump format -------------------------------------------------------------------------------


class DumpFormatError(UserError):
    """A dump line that is not `TOPIC<TAB>BASE64`."""


def read_dump(
    path: Path, on_bad_line: Callable[[DumpFormatError], None] | None = None
) -> Iterator[tuple[str, bytes, str]]:
    """Yield `(topic, message, "FILE:LINE")` from a dump file, or from every file in a directory.

    A line that is not `TOPIC<TAB>BASE64` raises `DumpFormatError`, or, with `on_bad_line`, is handed to it
    and skipped (a verifier reports it with its line number and goes on with the rest of the dump).
    """
    path = Path(path)
    if path.is_dir():
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            yield from read_dump(child, on_bad_line)
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DumpFormatError(f"{path}: cannot read dump: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        topic, tab, encoded = line.partition("\t")
        try:
            if not tab or not topic:
                raise DumpFormatError(f"{path}:{number}: expected TOPIC<TAB>BASE64")
            try:
                message = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DumpFormatError(f"{path}:{number}: bad base64: {exc}") from exc
        except DumpFormatError as exc:
            if on_bad_line is None:
                raise
            on_bad_line(exc)
            continue
        yield topic, message, f"{path}:{number}"


class DumpWriter:
    """Appends messages to a dump file, one `TOPIC<TAB>BASE64` line each, flushed per line."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, topic: str, message: bytes) -> None:
        """Append one message."""
        self._stream.write(f"{topic}\t{base64.b64encode(message).decode('ascii')}\n")
        self._stream.flush()


# --- sample export ---------------------------------------------------------------------------------


class SampleWriter:
    """Writes the samples of verified batches as JSON lines or CSV (`vehicle,seq,signal,time,value`)."""

    FIELDS = ("vehicle", "seq", "signal", "time", "value")

    def __init__(self, stream: IO[str], fmt: str) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown sample format {fmt!r}")
        self._stream = stream
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.FIELDS)
        self.samples = 0

    def write(self, batch: VerifiedBatch) -> None:
        """Write every sample of `batch`."""
        payload = batch.payload
        for sample in payload.samples():
            row = (payload.vehicle, payload.seq, sample.name, round(sample.timestamp, 6), sample.value)
            if self._csv is not None:
                self._csv.writerow(row)
            else:
                self._stream.write(json.dumps(dict(zip(self.FIELDS, row, strict=True))) + "\n")
            self.samples += 1


class EventWriter:
    """Writes the events of verified batches as JSON lines: `{vehicle, seq, time, kind, detail, driver}`."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.events = 0

    def write(self, batch: VerifiedBatch) -> None:
        """Write every event of `batch`, with the driver map of the batch it rode in."""
        payload = batch.payload
        for event in payload.events:
            line = {
                "vehicle": payload.vehicle,
                "seq": payload.seq,
                "time": round(event.timestamp, 6),
                "kind": event.kind,
                "detail": event.detail,
                "driver": payload.driver,
            }
            self._stream.write(json.dumps(line, default=str) + "\n")
            self.events += 1
        self._stream.flush()

"""Signed campaign updates pushed by the backend on `vehicles/{id}/campaigns`.

The message is a COSE_Sign1 (see `cose`) signed by a backend key the agent is configured with, with
`external_aad` = the campaigns topic. Its payload is a CBOR map::

    {"v": 1, "serial": UINT, "campaign": MAP}      ; the campaign document itself
    {"v": 1, "serial": UINT, "toml": TEXT}         ; or the campaign file's TOML text

`serial` increases with every update the backend issues. An update is applied only if it verifies and its
serial is above the last applied one; the same serial again (a retained message re-delivered on reconnect)
is ignored, a lower one is rejected as a replay. With a `state_file`, the last applied serial survives
restarts (written atomically after the callback accepted the update). Everything rejected is counted and
reported as an `Event` of kind `campaign_rejected` with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_agent.atomic import write_atomic
from firmware_agent.errors import UserError
from firmware_agent.telemetry.cose import VerificationError, message_kid, verify_sign1
from firmware_agent.telemetry.topics import campaigns_topic
from firmware_agent.values import Event

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

CAMPAIGN_COUNTERS = ("received", "applied", "duplicates", "rejected", "apply_failed")


@dataclass(frozen=True)
class CampaignUpdate:
    """A verified campaign document, as handed to the agent's callback."""

    serial: int
    document: dict[str, Any]
    kid: bytes


class CampaignRejectedError(ValueError):
    """A campaign message that verified badly or is not a well-formed update."""


def encode_campaign_update(serial: int, campaign: Mapping[str, Any] | str) -> bytes:
    """The CBOR payload of an update (backend side): a document map, or TOML text. Sign it separately."""
    body: dict[str, Any] = {"v": 1, "serial": serial}
    if isinstance(campaign, str):
        body["toml"] = campaign
    else:
        body["campaign"] = dict(campaign)
    return cbor2.dumps(body, canonical=True)


def _parse_update(payload: bytes) -> tuple[int, dict[str, Any]]:
    try:
        body = cbor2.loads(payload)
    except Exception as exc:
        raise CampaignRejectedError(f"payload is not CBOR: {exc}") from exc
    if not isinstance(body, dict) or body.get("v") != 1:
        raise CampaignRejectedError("payload is not a version-1 campaign update map")
    serial = body.get("serial")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise CampaignRejectedError("'serial' is missing or not a non-negative integer")
    if isinstance(body.get("campaign"), dict):
        return serial, body["campaign"]
    if isinstance(body.get("toml"), str):
        try:
            return serial, tomllib.loads(body["toml"])
        except tomllib.TOMLDecodeError as exc:
            raise CampaignRejectedError(f"campaign TOML does not parse: {exc}") from exc
        except RecursionError:  # tomllib recurses per nested array or table (200,000 deep, issue 12)
            raise CampaignRejectedError("campaign TOML is nested too deeply") from None
    raise CampaignRejectedError("update carries neither a 'campaign' map nor 'toml' text")


class CampaignUpdates:
    """Verifies messages from the campaigns topic and hands good updates to `on_update`.

    `handle(topic, message)` is what the uploader calls for each message (from paho's network thread, so
    `on_update` and `on_event` should hand the work to the pipeline rather than do it there). `on_event`
    receives a `campaign_rejected` or `campaign_apply_failed` Event for each refusal, to put in telemetry.
    """

    def __init__(
        self,
        vehicle_id: str,
        backend_keys: Mapping[bytes, Ed25519PublicKey],
        on_update: Callable[[CampaignUpdate], None],
        on_event: Callable[[Event], None] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.topic = campaigns_topic(vehicle_id)
        self._keys = dict(backend_keys)
        self._on_update = on_update
        self._on_event = on_event
        self._state_file = Path(state_file) if state_file is not None else None
        self.last_serial = self._load_serial()
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(CAMPAIGN_COUNTERS, 0)
        # The last message refused for its content: a retained update comes back on every reconnect, and
        # is then a duplicate rather than one more warning and event each time.
        self._refused: bytes | None = None

    def _load_serial(self) -> int:
        if self._state_file is None or not self._state_file.exists():
            return -1
        try:
            return int(self._state_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise UserError(
                f"{self._state_file}: cannot read the last applied campaign serial: {exc}"
            ) from exc

    def _save_serial(self, serial: int) -> None:
        if self._state_file is None:
            return
        write_atomic(self._state_file, f"{serial}\n".encode(), 0o644)

    def counters(self) -> dict[str, int]:
        """How many updates were received, applied, ignored as duplicates, rejected, failed to apply."""
        with self._lock:
            return dict(self._counters)

    def handle(self, topic: str, message: bytes) -> CampaignUpdate | None:
        """Verify and apply one message; return the update applied, or None (duplicate or rejected)."""
        with self._lock:
            self._counters["received"] += 1
            digest = hashlib.sha256(topic.encode() + b"\0" + message).digest()
            if digest == self._refused:
                self._counters["duplicates"] += 1
                return None
            try:
                update = self._verify(topic, message)
            except (CampaignRejectedError, VerificationError) as exc:
                self._reject("campaign_rejected", str(exc), topic, message)
                return None
            if update.serial == self.last_serial:
                self._counters["duplicates"] += 1
                return None
            if update.serial < self.last_serial:
                self._reject(
                    "campaign_rejected",
                    f"replayed update: serial {update.serial} is below the applied {self.last_serial}",
                    topic,
                    message,
                )
                return None
            try:
                self._on_update(update)
            except UserError as exc:  # the campaign itself is unusable (e.g. a condition nested too deep)
                self._reject("campaign_rejected", str(exc), topic, message)
                return None
            except Exception as exc:
                self._reject("campaign_apply_failed", f"{type(exc).__name__}: {exc}", topic, message)
                return None
            self.last_serial = update.serial
            self._counters["applied"] += 1
            try:
                self._save_serial(update.serial)
            except OSError as exc:
                # Applied, but a restart would accept this serial again: say so rather than fail silently.
                self._reject("campaign_apply_failed", f"serial not saved: {exc}", topic, message)
            return update

    def _verify(self, topic: str, message: bytes) -> CampaignUpdate:
        if topic != self.topic:
            raise CampaignRejectedError(f"update arrived on {topic}, not {self.topic}")
        payload = verify_sign1(message, topic, self._keys)
        serial, document = _parse_update(payload)
        return CampaignUpdate(serial, document, message_kid(message) or b"")

    def _reject(self, kind: str, reason: str, topic: str, message: bytes) -> None:
        key = "apply_failed" if kind == "campaign_apply_failed" else "rejected"
        self._counters[key] += 1
        if kind == "campaign_rejected":
            self._refused = hashlib.sha256(topic.encode() + b"\0" + message).digest()
        log.warning("campaign update on %s refused: %s", topic, reason)
        if self._on_event is not None:
            try:
                self._on_event(
                    Event(time.time(), kind, {"reason": reason, "topic": topic, "bytes": len(message)})
                )
            except Exception:
                log.exception("campaign updates: on_event failed")

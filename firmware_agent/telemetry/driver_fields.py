"""The identity stage's part of the wire format: the batch's `driver` map and the driver events.

Checked by `decode_payload`, so `verify` and every receiver refuse a batch whose identity fields are not
what docs/telemetry-format.md promises (a pseudonymous profile id, never a raw key id; a confidence in
[0, 1]). Extra keys are allowed (later minor additions), wrong types of the documented ones are not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

#: A profile as the wire carries it: a pseudonymous id, or "unknown" (a driver the model does not know).
PROFILE = re.compile(r"p-[0-9a-f]{16}|unknown")
SOURCES = ("explicit", "behaviour", "none")
MODEL_STATES = ("active", "learning", "off")

#: Event kind -> (field, kind of value) that its detail must carry.
EVENT_FIELDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "driver_identified": (("profile", "profile"), ("source", "source"), ("confidence", "confidence")),
    "driver_changed": (("from", "profile"), ("to", "profile")),
    "driver_mismatch": (
        ("explicit", "profile"),
        ("behaviour", "profile"),
        ("confidence", "confidence"),
        ("seconds", "seconds"),
    ),
}


def driver_problem(driver: Mapping[str, Any]) -> str | None:
    """What is wrong with a batch's `driver` map, or None when it is well formed."""
    profile = driver.get("profile")
    if profile is not None and _problem("profile", profile, "profile"):
        return f"'driver': {_problem('profile', profile, 'profile')}"
    for key, kind in (("source", "source"), ("confidence", "confidence")):
        if key not in driver:
            return f"'driver' has no {key!r}"
        problem = _problem(key, driver[key], kind)
        if problem:
            return f"'driver': {problem}"
    if driver["source"] != "none" and profile is None:
        return f"'driver': source {driver['source']!r} without a profile"
    for key in ("behaviour",):
        if key in driver and _problem(key, driver[key], "profile"):
            return f"'driver': {_problem(key, driver[key], 'profile')}"
    if "behaviour_confidence" in driver and _problem(
        "behaviour_confidence", driver["behaviour_confidence"], "confidence"
    ):
        return "'driver': behaviour_confidence is not a number in [0, 1]"
    if "model" in driver and driver["model"] not in MODEL_STATES:
        return f"'driver': model {driver['model']!r} is not one of {', '.join(MODEL_STATES)}"
    return None


def event_problem(kind: str, detail: Mapping[str, Any]) -> str | None:
    """What is wrong with a driver event's detail, or None (also for kinds this module does not own)."""
    for key, value_kind in EVENT_FIELDS.get(kind, ()):
        if key not in detail:
            return f"event {kind}: no {key!r} in its detail"
        problem = _problem(key, detail[key], value_kind)
        if problem:
            return f"event {kind}: {problem}"
    return None


def _problem(key: str, value: Any, kind: str) -> str:
    if kind == "profile":
        if not isinstance(value, str) or not PROFILE.fullmatch(value):
            return f"{key} {value!r} is not a profile id (p- and 16 hex digits, or 'unknown')"
    elif kind == "source":
        if value not in SOURCES:
            return f"{key} {value!r} is not one of {', '.join(SOURCES)}"
    elif kind == "confidence":
        if not _number(value) or not 0.0 <= value <= 1.0:
            return f"{key} {value!r} is not a number in [0, 1]"
    elif kind == "seconds" and (not _number(value) or value < 0):
        return f"{key} {value!r} is not a non-negative number of seconds"
    return ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

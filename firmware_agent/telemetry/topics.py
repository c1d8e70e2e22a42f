"""MQTT topic names for one vehicle, and the vehicle-id rule that keeps them unambiguous.

The vehicle id becomes a topic level and, on the broker, the username derived from the client
certificate's CN (mosquitto `use_identity_as_username`). Mosquitto only rejects `+` and `#` in such
usernames, so a CN of `veh-0002/evil` would match the ACL pattern `vehicles/%u/#` for a topic under
`vehicles/veh-0002/...`. Ids are therefore checked here, both where certificates are issued and where the
agent starts.
"""

from __future__ import annotations

import re

from firmware_agent.errors import UserError

#: Letters, digits, `-`, `_`, `.`; starts with a letter or digit; at most 64 characters.
VEHICLE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class InvalidVehicleIdError(UserError):
    """A vehicle id that would not be a single, safe MQTT topic level."""


def validate_vehicle_id(vehicle_id: str) -> str:
    """Return `vehicle_id` unchanged, or raise `InvalidVehicleIdError` naming the problem."""
    if not vehicle_id:
        raise InvalidVehicleIdError("vehicle id is empty")
    if not VEHICLE_ID_PATTERN.fullmatch(vehicle_id):
        raise InvalidVehicleIdError(
            f"vehicle id {vehicle_id!r} is not allowed: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (no '/', '+', '#', spaces)"
        )
    return vehicle_id


def telemetry_topic(vehicle_id: str) -> str:
    """The topic a vehicle publishes its signed batches to."""
    return f"vehicles/{validate_vehicle_id(vehicle_id)}/telemetry"


def status_topic(vehicle_id: str) -> str:
    """The retained `online`/`offline` status topic (birth message and last will)."""
    return f"vehicles/{validate_vehicle_id(vehicle_id)}/status"


def campaigns_topic(vehicle_id: str) -> str:
    """The topic the backend pushes signed campaign updates to."""
    return f"vehicles/{validate_vehicle_id(vehicle_id)}/campaigns"


def vehicle_of_topic(topic: str) -> str | None:
    """The vehicle id of a `vehicles/{id}/...` topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "vehicles" and VEHICLE_ID_PATTERN.fullmatch(parts[1]):
        return parts[1]
    return None

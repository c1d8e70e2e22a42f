"""Never succeed silently: what a decode run should say when captures and databases do not meet.

`decode rav4.log` with the vehicle's built-in DBCs, or `--dbc vcan0=FILE` on a capture whose channels
are `can0` and `can1`, decodes nothing; without these lines it printed "decoded 0 of 135,468 frames"
and exited 0. Each finding is one line naming the capture's channels, the bound ones and whether the
built-in DBCs were used; `decode --strict` makes the first an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from firmware_agent.decode.captures import CaptureReport
from firmware_agent.decode.catalog import Catalog


def describe_bindings(catalog: Catalog, builtin: bool) -> str:
    """Which channels have databases, as one phrase for the lines below."""
    bound = [channel for channel in catalog.channels if channel is not None]
    parts = []
    if None in catalog.channels:
        parts.append("every channel")
    if bound:
        parts.append(", ".join(bound))
    text = "DBCs bound to " + (" and ".join(parts) if parts else "no channel")
    if builtin:
        numbers = ", ".join(f"{number}={bus}" for number, bus in catalog.aliases.items())
        text += f" (the vehicle's built-in DBCs: no --dbc given; ASC/BLF channels {numbers})"
    return text


def coverage_findings(reports: Sequence[CaptureReport], catalog: Catalog, builtin: bool) -> list[str]:
    """One line per capture or channel that decoded nothing, and per `--dbc CHANNEL=` naming no channel."""
    findings = []
    bindings = describe_bindings(catalog, builtin)
    seen_channels = {channel for report in reports for channel in report.frames}
    for report in reports:
        total = sum(report.frames.values())
        if not total:
            continue
        channels = ", ".join(f"{name} ({count:,} frames)" for name, count in sorted(report.frames.items()))
        if not sum(report.decoded.values()):
            findings.append(
                f"{report.name}: decoded none of its {total:,} frames; channels {channels}; {bindings}"
            )
            continue
        for name, count in sorted(report.frames.items()):
            if not report.decoded[name]:
                findings.append(
                    f"{report.name}: channel {name} ({count:,} frames) decoded nothing; {bindings}"
                )
    if not builtin and seen_channels:
        present = ", ".join(sorted(seen_channels))
        for spec in catalog.sources:
            if spec.channel is not None and spec.channel not in seen_channels:
                findings.append(
                    f"--dbc {spec.channel}={spec.path}: no channel {spec.channel!r} in the captures "
                    f"(their channels: {present})"
                )
    return findings

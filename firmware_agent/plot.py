"""Signals over time as a picture (`firmware-agent plot`); needs the optional `plot` extra (matplotlib).

One axis per unit (signals that share a unit share an axis); a signal with a value table gets an axis of
its own, drawn as steps with its labels on the y axis. Bus load over time per channel (`--bus-load`)
comes from `Summary.load_over_time`. Never imported by the daemon.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_agent.decode.vectorised import DecodedGroup
from firmware_agent.errors import UserError

#: Points kept per signal; beyond it every other point is dropped (a plot has fewer pixels than that).
MAX_POINTS = 200_000


@dataclass
class Series:
    """One signal's points, its unit and value-table labels."""

    name: str
    unit: str
    labels: dict[int, str] = field(default_factory=dict)
    times: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    count: int = 0


class SeriesCollector:
    """A `RecordWriter` that keeps the chosen signals' raw numbers for plotting (bounded per signal)."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.series: dict[str, Series] = {}

    def write(self, groups: list[DecodedGroup]) -> None:
        """Keep the wanted columns of one batch."""
        for group in groups:
            for name, column in group.signals.items():
                key = f"{group.message.name}.{name}"
                if name not in self.wanted and key not in self.wanted:
                    continue
                series = self.series.get(key)
                if series is None:
                    signal = group.message.get_signal_by_name(name)
                    choices = {int(number): str(text) for number, text in (signal.choices or {}).items()}
                    series = self.series[key] = Series(key, signal.unit or "", choices)
                rows = slice(None) if column.present is None else column.present
                values = column.values[rows]
                if values.dtype.kind not in "iuf":
                    values = values.astype(np.float64)
                series.times.append(group.timestamp[rows])
                series.values.append(values.astype(np.float64))
                series.count += len(values)
                if series.count > MAX_POINTS:
                    times, points = np.concatenate(series.times)[::2], np.concatenate(series.values)[::2]
                    series.times, series.values, series.count = [times], [points], len(times)

    def close(self) -> None:
        """Nothing to flush."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("plot needs matplotlib: pip install 'firmware-agent[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_signals(series: list[Series], title: str, output: Path, start: float | None = None) -> None:
    """Draw one axis per unit (value-table signals one each) and save to `output` (png, svg or html)."""
    plt = _pyplot()
    axes_plan: dict[str, list[Series]] = defaultdict(list)
    for item in series:
        axes_plan[f"labels:{item.name}" if item.labels else f"unit:{item.unit}"].append(item)
    origin = start if start is not None else min(float(np.concatenate(s.times).min()) for s in series)
    figure, axes = plt.subplots(
        len(axes_plan), 1, sharex=True, figsize=(10, 1.2 + 1.9 * len(axes_plan)), squeeze=False
    )
    for axis, (key, members) in zip(axes[:, 0], axes_plan.items(), strict=True):
        for item in members:
            times = np.concatenate(item.times) - origin
            values = np.concatenate(item.values)
            if item.labels:
                axis.step(times, values, where="post", label=item.name)
                seen = set(np.unique(values).astype(int).tolist())
                shown = sorted(seen | set(item.labels) if len(item.labels) <= 6 else seen)
                axis.set_yticks(shown, [item.labels.get(value, str(value)) for value in shown])
            else:
                axis.plot(times, values, linewidth=0.9, label=item.name)
        unit = members[0].unit
        axis.set_ylabel(
            unit if key.startswith("unit:") and unit else ("" if key.startswith("labels:") else "-")
        )
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("seconds from the first frame")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    save(figure, output)
    plt.close(figure)


def render_bus_load(loads: dict[str, tuple[np.ndarray, np.ndarray]], interval: float, output: Path) -> None:
    """Bus load (%) per channel over time, one line each, the peak marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 3.5))
    origin = min(float(starts[0]) for starts, _ in loads.values() if len(starts))
    for channel, (starts, load) in sorted(loads.items()):
        axis.step(starts - origin, 100 * load, where="post", label=channel)
        if len(load):
            peak = int(np.argmax(load))
            axis.annotate(
                f"{100 * load[peak]:.0f} %", (starts[peak] - origin, 100 * load[peak]), fontsize="small"
            )
    axis.set_ylabel(f"bus load % (per {interval:g} s)")
    axis.set_xlabel("seconds from the first frame")
    axis.grid(True, alpha=0.3)
    axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    save(figure, output)
    plt.close(figure)


def save(figure: Any, output: Path) -> None:
    """PNG or SVG by extension; HTML is the SVG inside a page."""
    suffix = output.suffix.lower()
    try:
        if suffix == ".html":
            import io

            buffer = io.StringIO()
            figure.savefig(buffer, format="svg")
            svg = buffer.getvalue()
            svg = svg[svg.find("<svg") :]
            head = f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{output.stem}</title></head>"
            page = f"{head}\n<body>\n{svg}\n</body></html>\n"
            output.write_text(page, encoding="utf-8")
        elif suffix in (".png", ".svg"):
            figure.savefig(output, dpi=80 if suffix == ".png" else None)
        else:
            raise UserError(f"{output}: plot writes .png, .svg or .html")
    except OSError as exc:
        raise UserError(f"{output}: cannot write: {exc.strerror or exc}") from None

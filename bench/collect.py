"""Benchmark: samples per second through `Collector.offer` against naive baselines, in the same run.

The stream is a synthetic drive of our reference vehicle: every signal of every periodic message of
`dbc/*.dbc` at its DBC cycle time (`GenMsgCycleTime`), named as the decode stage names it (VSS path, else
MESSAGE.Signal), with a hard brake every 20 s. The campaigns are `docs/examples/campaigns/demo.toml`
(periodic drive, on-change windows/doors with throttling, triggered hard braking, on-change
infotainment) and, separately, the built-in `--collect all`.

Baselines, measured on the same stream:
- naive-append: a per-sample dict-of-lists append of every sample (no campaign logic at all);
- naive-campaigns: the demo campaigns done the obvious way, every campaign checked for every sample.

    .venv/bin/python bench/collect.py [--seconds 120] [--rounds 5]

Times are the best of `--rounds`, taken round-robin over the paths so that a change of load on a
shared machine hits every path alike; only the ratios mean something across machines.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_agent.collect.campaign import Campaign, builtin_all, load_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.collect.names import SignalNames
from firmware_agent.decode.catalog import Catalog
from firmware_agent.values import Sample
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs
from firmware_agent.vss import VssMap

DEMO = Path(__file__).resolve().parents[1] / "docs" / "examples" / "campaigns" / "demo.toml"
POLL_EVERY = 1000  # samples between two `poll()` calls, as a pipeline would do per chunk of frames


def synthetic_drive(seconds: float, seed: int = 1) -> tuple[list[Sample], SignalNames]:
    """Samples of every periodic signal of our vehicle for `seconds`, in time order."""
    catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
    vss = VssMap.load(default_dbc_dir() / "vss.toml")
    rng = random.Random(seed)
    generators: list[tuple[float, list[tuple[str, Callable[[float], object]]]]] = []
    for _, message in catalog.all_messages():
        if not message.cycle_time:
            continue
        signals = []
        for signal in message.signals:
            name = vss.name_for(message.name, signal.name)
            signals.append((name, _value_function(name, signal, rng)))
        generators.append((message.cycle_time / 1000.0, signals))
    stream: list[tuple[float, str, object]] = []
    for period, signals in generators:
        phase = rng.uniform(0, period)
        for tick in range(int(seconds / period)):
            t = 1_700_000_000.0 + phase + tick * period
            stream.extend((t, name, value(t)) for name, value in signals)
    stream.sort(key=lambda row: row[0])
    return [Sample(t, name, value) for t, name, value in stream], SignalNames.from_catalog(catalog, vss)  # type: ignore[arg-type]


def _value_function(name: str, signal: object, rng: random.Random) -> Callable[[float], object]:
    choices = getattr(signal, "choices", None)
    if name == "Vehicle.Chassis.Brake.PedalPosition":
        return lambda t: 95.0 if t % 20.0 < 1.0 else 5.0
    if choices:
        names = [str(choice) for choice in choices.values()]
        return lambda t: names[int(t / 7.0) % len(names)]
    low = float(getattr(signal, "minimum", None) or 0.0)
    high = float(getattr(signal, "maximum", None) or 100.0)
    span, offset = (high - low) / 2 or 1.0, rng.uniform(0, 10)
    return lambda t: round(low + span * (1 + math.sin(t / 5.0 + offset)), 1)


class NaiveAppend:
    """Baseline: every sample appended to a per-name list; batches are the whole dict."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[float, object]]] = {}

    def offer(self, sample: Sample) -> None:
        self.series.setdefault(sample.name, []).append((sample.timestamp, sample.value))

    def poll(self) -> list[object]:
        return []


class NaiveCampaigns:
    """Baseline: the campaign logic without routing: every campaign looks at every sample."""

    def __init__(self, campaigns: list[Campaign]) -> None:
        self.campaigns = campaigns
        self.kept: dict[str, list[Sample]] = {campaign.name: [] for campaign in campaigns}
        self.last: dict[tuple[str, str], object] = {}

    def offer(self, sample: Sample) -> None:
        for campaign in self.campaigns:
            if sample.name not in campaign.signals:
                continue
            key = (campaign.name, sample.name)
            if campaign.mode == "on_change" and self.last.get(key) == sample.value:
                continue
            self.last[key] = sample.value
            self.kept[campaign.name].append(sample)

    def poll(self) -> list[object]:
        return []


def run_once(make: Callable[[], Any], stream: list[Sample], many: bool = False) -> float:
    """Seconds to push `stream` through a fresh `make()` (poll every POLL_EVERY samples)."""
    target = make()
    offer, poll = target.offer, target.poll
    started = time.perf_counter()
    if many:
        offer_many = target.offer_many
        for start in range(0, len(stream), POLL_EVERY):
            offer_many(stream[start : start + POLL_EVERY])
            poll()
    else:
        for start in range(0, len(stream), POLL_EVERY):
            for sample in stream[start : start + POLL_EVERY]:
                offer(sample)
            poll()
    return time.perf_counter() - started


def measure(
    paths: dict[str, tuple[Callable[[], Any], bool]], stream: list[Sample], rounds: int
) -> dict[str, float]:
    """Best samples/s per path; rounds go round-robin over the paths so that load changes hit all alike."""
    best = dict.fromkeys(paths, math.inf)
    for _ in range(rounds):
        for label, (make, many) in paths.items():
            best[label] = min(best[label], run_once(make, stream, many))
    return {label: len(stream) / seconds for label, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the synthetic drive")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    stream, names = synthetic_drive(args.seconds)
    demo = load_campaigns(DEMO, names)
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    print(f"# {len(stream):,} samples ({len(stream) / args.seconds:,.0f}/s of drive), campaigns: {DEMO.name}")

    check = Collector(demo)
    check.offer_many(stream)
    check.flush()
    counters = check.counters
    print(
        f"# demo campaigns keep {counters['samples_collected']:,} samples in {counters['batches']} batches, "
        f"{counters['triggers']} triggers"
    )

    paths: dict[str, tuple[Callable[[], Any], bool]] = {
        "naive-append (all samples)": (NaiveAppend, False),
        "naive-campaigns (demo)": (lambda: NaiveCampaigns(demo), False),
        "Collector.offer (--collect all)": (lambda: Collector([builtin_all()]), False),
        "Collector.offer (demo)": (lambda: Collector(demo), False),
        "Collector.offer_many (demo)": (lambda: Collector(demo), True),
    }
    results = measure(paths, stream, args.rounds)
    baseline = results["naive-append (all samples)"]
    naive_demo = results["naive-campaigns (demo)"]
    print(f"{'path':<34} {'samples/s':>12} {'vs naive-append':>16} {'vs naive-campaigns':>19}")
    for label, rate in results.items():
        print(f"{label:<34} {rate:>12,.0f} {rate / baseline:>15.2f}x {rate / naive_demo:>18.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Driver identification on simulated drives: profiles learned with `profile learn`, then owners' drives
and borrowed-key drives through the identity stage exactly as `run` feeds it.

Learning: each of the four personas drives `--learn-drives` trips (city and highway alternating, seeds
1, 2, ...) of `--minutes` minutes, learned with `firmware-agent profile learn` into one state directory
(default settings: the model activates a profile after 20 minutes, so 4 drives of 7 minutes).
Owners: every persona drives city and highway trips with unseen seeds under their own key. Measured:
identification accuracy (the drive's `driver_identified` names the owner, confirmed by behaviour), time to
that decision, and false alarms (`driver_mismatch`) per hour of owner driving.
Borrowed keys: every persona drives a city trip with every other persona's key (12 pairs per seed).
Measured: the share of drives that raise `driver_mismatch`, and how long into the drive.
Test drives run with `identity.learn = false`, so they do not learn from each other.

    .venv/bin/python bench/driver_id_sim.py [--learn-drives 4] [--minutes 7] [--seeds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_agent.cli import main as cli  # noqa: E402
from firmware_agent.decode.catalog import Catalog  # noqa: E402
from firmware_agent.identity.registry import ProfileRegistry  # noqa: E402
from firmware_agent.identity.settings import IdentitySettings  # noqa: E402
from firmware_agent.identity.stage import IdentityStage  # noqa: E402
from firmware_agent.values import Event  # noqa: E402
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs  # noqa: E402
from firmware_agent.vss import VssMap  # noqa: E402
from sim import PERSONAS, Simulation  # noqa: E402

CHUNK = 256  # frames per chunk, as the agent's reader hands them over


def learn(state: Path, workdir: Path, drives: int, minutes: float) -> float:
    """Simulate the learning drives to capture files and learn them with `profile learn`; returns seconds."""
    captures = []
    for persona in PERSONAS:
        for index in range(drives):
            scenario = ("city", "highway")[index % 2]
            path = workdir / f"learn-{persona.name}-{index}.log"
            argv = ["sim", "--driver", persona.name, "--scenario", scenario, "--seed", str(index + 1)]
            assert cli([*argv, "--duration", str(minutes * 60), "--out", str(path)]) == 0
            captures.append(str(path))
    started = time.perf_counter()
    assert cli(["profile", "learn", "--state-dir", str(state), *captures]) == 0
    return time.perf_counter() - started


def drive(state: Path, simulation: Simulation, catalog: Catalog, vss: VssMap) -> tuple[list[Event], float]:
    """One simulated drive through a fresh identity stage on a copy of `state`: its events and length (s)."""
    events: list[Event] = []
    # Test drives are not learned: each must meet the model the learning drives made.
    settings = IdentitySettings(learn=False)
    stage = IdentityStage(settings, catalog, vss, state, emit=events.append, set_driver=lambda d, t: None)
    chunk: list[Any] = []
    first = last = None
    for frame in simulation.frames():
        first = frame.timestamp if first is None else first
        last = frame.timestamp
        chunk.append(frame)
        if len(chunk) == CHUNK:
            stage.observe_frames(chunk)
            chunk = []
    stage.observe_frames(chunk)
    stage.finish(last)
    return events, (last or 0.0) - (first or 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learn-drives", type=int, default=4, help="learning drives per persona (default 4)")
    parser.add_argument("--minutes", type=float, default=7.0, help="minutes per drive (default 7)")
    parser.add_argument(
        "--seeds", type=int, default=2, help="test seeds per owner scenario and pair (default 2)"
    )
    args = parser.parse_args(argv)
    catalog = Catalog.from_specs(default_dbc_specs(), warn_stream=None)
    vss = VssMap.load(default_dbc_dir() / "vss.toml")
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-driver-id-") as tmp:
        workdir = Path(tmp)
        learned = workdir / "learned"
        learn_time = learn(learned, workdir, args.learn_drives, args.minutes)
        registry = ProfileRegistry(learned)
        profile_of = {p.name: registry.profile_id(f"KEY_STATUS.KeyId={p.identity.key_id}") for p in PERSONAS}

        owner_correct = owner_drives = false_alarms = 0
        owner_hours = 0.0
        decision_times: list[float] = []
        for persona in PERSONAS:
            for scenario in ("city", "highway"):
                for seed in range(100, 100 + args.seeds):
                    simulation = Simulation(persona, scenario, seed, seconds)
                    events, length = drive(learned, simulation, catalog, vss)
                    owner_drives += 1
                    owner_hours += length / 3600
                    identified = [e.detail for e in events if e.kind == "driver_identified"]
                    first = identified[0] if identified else {}
                    if first.get("profile") == profile_of[persona.name] and first.get("confirmed"):
                        owner_correct += 1
                        decision_times.append(first["seconds"])
                    false_alarms += sum(1 for e in events if e.kind == "driver_mismatch")
        borrowed = detected = 0
        detection_times: list[float] = []
        for driver in PERSONAS:
            for owner in PERSONAS:
                if owner is driver:
                    continue
                for seed in range(200, 200 + args.seeds):
                    simulation = Simulation(driver, "borrowed-key", seed, seconds, key_owner=owner)
                    events, _ = drive(learned, simulation, catalog, vss)
                    borrowed += 1
                    mismatch = [e.detail for e in events if e.kind == "driver_mismatch"]
                    if mismatch and mismatch[0]["explicit"] == profile_of[owner.name]:
                        detected += 1
                        detection_times.append(mismatch[0]["after"])
        windows, cost = inference_cost(learned, catalog, vss)
        refit_windows, refit_ms = refit_cost(learned)

    print(f"simulated drives: 4 personas, {args.learn_drives} learning drives each of {args.minutes:g} min "
          f"(`profile learn`: {learn_time:.1f} s); python {sys.version.split()[0]}")  # fmt: skip
    print(f"  owners' drives: {owner_drives} ({owner_hours:.2f} h, city and highway, unseen seeds)")
    print(f"    identified and confirmed by behaviour: {owner_correct}/{owner_drives} "
          f"= {owner_correct / owner_drives:.2f}")  # fmt: skip
    if decision_times:
        print(f"    time to decision: median {statistics.median(decision_times):.0f} s, "
              f"max {max(decision_times):.0f} s after ignition on")  # fmt: skip
    print(f"    false alarms (driver_mismatch): {false_alarms} = {false_alarms / owner_hours:.2f} per hour")
    print(f"  borrowed-key drives: {borrowed} (each persona with each other's key)")
    print(f"    mismatch raised: {detected}/{borrowed} = {detected / borrowed:.2f}")
    if detection_times:
        print(f"    time to mismatch: median {statistics.median(detection_times):.0f} s, "
              f"max {max(detection_times):.0f} s after ignition on")  # fmt: skip
    print(f"  inference per window (features + model, {windows} windows of 4 profiles): {cost:.0f} us")
    print(f"  refit after a drive ({refit_windows} windows of 4 profiles, fit + save): {refit_ms:.0f} ms")
    return 0


def refit_cost(state: Path) -> tuple[int, float]:
    """Milliseconds the refit at the end of a drive takes on the learned registry (median of 5)."""
    from firmware_agent.identity.learning import refit

    registry = ProfileRegistry(state)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        refit(registry, IdentitySettings())
        times.append((time.perf_counter() - started) * 1000)
    return sum(record.windows for record in registry.profiles.values()), statistics.median(times)


def inference_cost(state: Path, catalog: Catalog, vss: VssMap) -> tuple[int, float]:
    """Microseconds per window for features + model on the windows of one drive, one at a time."""
    import numpy as np

    from firmware_agent.identity.features import window_features
    from firmware_agent.identity.learning import load_or_refit

    registry = ProfileRegistry(state)
    model, _ = load_or_refit(registry, IdentitySettings())
    assert model is not None
    rows: list[np.ndarray] = []

    class Rows:
        def on_row(self, timestamp: float, row: np.ndarray) -> None:
            rows.append(row)

        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    from firmware_agent.identity.sampler import FrameSampler

    sampler = FrameSampler(IdentitySettings(), catalog, vss, Rows())  # type: ignore[arg-type]
    sampler.feed(Simulation(PERSONAS[0], "city", 999, 420).frames())
    windows = [np.array(rows[start : start + 60]) for start in range(0, len(rows) - 60, 10)]
    started = time.perf_counter()
    for window in windows:
        model.log_likelihoods(window_features(window)[np.newaxis, :])
    return len(windows), (time.perf_counter() - started) / len(windows) * 1e6


if __name__ == "__main__":
    sys.exit(main())

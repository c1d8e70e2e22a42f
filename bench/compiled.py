"""Benchmark: the per-frame compiled decoder (the daemon's live path) against cantools' `decode_message`.

Decodes every frame of the real RAV4 capture (135 k frames, two buses) that the DBCs know, once with
`db.decode_message(frame_id, data)` and once with `FrameDecoder.decode(frame)`, and prints both times and
the ratio. Frames are read beforehand, so only decoding is timed.

    .venv/bin/python bench/compiled.py
"""

from __future__ import annotations

import time
from pathlib import Path

import can
import cantools

from firmware_agent.decode.catalog import Catalog
from firmware_agent.decode.compiled import FrameDecoder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTURE = DATA / "captures" / "rav4" / "rav4_2018-08-02_seg40.log"
DBCS = {
    "can0": DATA / "dbc" / "opendbc__toyota_new_mc_pt_generated.dbc",
    "can1": DATA / "dbc" / "opendbc__toyota_adas.dbc",
}


def main() -> None:
    frames = list(can.LogReader(str(CAPTURE)))
    databases = {
        channel: cantools.database.load_file(str(path), strict=False) for channel, path in DBCS.items()
    }
    catalog = Catalog.from_specs([f"{channel}={path}" for channel, path in DBCS.items()], warn_stream=None)
    known = [f for f in frames if catalog.lookup(f.channel, f.arbitration_id, f.is_extended_id) is not None]

    start = time.perf_counter()
    theirs = 0
    for frame in known:
        try:
            databases[frame.channel].decode_message(frame.arbitration_id, frame.data)
            theirs += 1
        except Exception:  # cantools refuses some frames (PCS_HUD); so do we
            continue
    cantools_seconds = time.perf_counter() - start

    decoder = FrameDecoder(catalog)
    start = time.perf_counter()
    ours = sum(decoder.decode(frame) is not None for frame in known)
    compiled_seconds = time.perf_counter() - start

    assert ours == theirs, (ours, theirs)
    print(f"frames decoded: {ours:,} of {len(frames):,}")
    print(f"db.decode_message:     {cantools_seconds:6.3f} s  {1e6 * cantools_seconds / ours:5.2f} us/frame")
    print(f"FrameDecoder.decode:   {compiled_seconds:6.3f} s  {1e6 * compiled_seconds / ours:5.2f} us/frame")
    print(f"speed-up: {cantools_seconds / compiled_seconds:.1f}x")


if __name__ == "__main__":
    main()

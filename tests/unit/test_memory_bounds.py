"""Memory stays bounded whatever arrives (issue 12): unknown identifiers, many campaigns, absurd DBCs."""

from __future__ import annotations

import random
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import can
import pytest

from firmware_agent.collect.budget import MEMORY_BUDGET_BYTES, worst_case_bytes
from firmware_agent.collect.campaign import CampaignError, builtin_all, loads_campaigns
from firmware_agent.collect.collector import Collector
from firmware_agent.decode.catalog import Catalog, load_database
from firmware_agent.decode.memo import MAX_FRAME_KEYS
from firmware_agent.errors import UserError
from firmware_agent.pipeline.decoding import SampleDecoder
from firmware_agent.pipeline.e2e_check import E2EChecker, E2ESettings
from firmware_agent.values import SignalGroup
from firmware_agent.vss import VssMap
from tests.conftest import DBC_DIR


def test_a_flood_of_unknown_identifiers_grows_no_table_beyond_its_bound() -> None:
    """slcan has no kernel filter: 3 million distinct unknown 29-bit ids took 1.2 GB. Here 56,384 (past
    the bound), between frames of a real message, which must still decode."""
    catalog = Catalog.from_specs([str(p) for p in sorted(DBC_DIR.glob("*.dbc"))], warn_stream=None)
    checker = E2EChecker(E2ESettings(), print)
    decoder = SampleDecoder(catalog, VssMap.load(DBC_DIR / "vss.toml"), None, checker)
    known = next(m for m in catalog.messages() if not m.is_multiplexed() and not m.is_extended_frame)
    real = can.Message(timestamp=1.0, arbitration_id=known.frame_id, is_extended_id=False, channel="b")
    real.data = bytearray(known.length)
    real.dlc = known.length
    flood = [
        can.Message(timestamp=1.0, arbitration_id=0x10000000 + i, is_extended_id=True, data=b"", channel="b")
        for i in range(MAX_FRAME_KEYS + 40_000)
    ]
    decoder.process_records([real])
    tracemalloc.start()
    for start in range(0, len(flood), 1000):
        decoder.process_records(flood[start : start + 1000])
    grown, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(decoder._plans) <= MAX_FRAME_KEYS
    assert len(decoder._frame_decoder._by_key) <= MAX_FRAME_KEYS
    assert len(catalog._cache) <= MAX_FRAME_KEYS
    assert decoder.counts["frames_uncached"] == len(flood) - (MAX_FRAME_KEYS - 1)
    assert decoder.counts["skipped"] == len(flood)
    assert grown < 16 * 2**20, f"{grown / 2**20:.1f} MiB for {len(flood)} unknown identifiers"
    assert decoder.process_records([real]), "the vehicle's own traffic still decodes after the flood"
    print(f"{len(flood)} unknown ids: {grown / 2**20:.1f} MiB traced")


def test_two_hundred_all_campaigns_stay_within_their_estimate() -> None:
    """200 `all` campaigns took 3.4 GB: every campaign cuts its own batches, and the queue of cut batches
    was bounded in batches, not samples. Now it holds at most `max_ready_samples`; what is dropped is
    counted, and the traced memory stays below the budget's estimate."""
    campaigns = [replace(builtin_all(), name=f"all-{i}", max_batch_samples=500) for i in range(200)]
    names = tuple(f"M.S{i}" for i in range(20))
    group = SignalGroup(names)
    rng = random.Random(1)
    records = [(1.7e9 + i / 100, group, tuple(rng.random() for _ in names)) for i in range(1000)]
    ready_bound = 200_000
    collector = Collector(campaigns, max_ready_samples=ready_bound)
    tracemalloc.start()
    for start in range(0, len(records), 100):
        collector.offer_records(records[start : start + 100])
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counters = collector.counters
    produced = 200 * len(records) * len(names)
    ready = sum(batch.sample_count() for batch in collector.poll())
    assert ready <= ready_bound
    assert counters["dropped_ready_samples"] > 0
    assert counters["samples_collected"] == ready + counters["dropped_ready_samples"], "cut: kept or counted"
    assert counters["samples_in"] == len(records) * len(names) and produced == counters["samples_collected"]
    estimate = worst_case_bytes(campaigns) - 64 * (1_000_000 - ready_bound)  # the same formula, this bound
    assert held < estimate, f"{held / 2**20:.1f} MiB held, estimated {estimate / 2**20:.1f} MiB"
    print(f"200 all campaigns: {held / 2**20:.1f} MiB held (estimate {estimate / 2**20:.1f} MiB)")


def test_campaigns_whose_worst_case_exceeds_the_budget_are_refused_in_one_line() -> None:
    many_all = "".join(f'[[campaign]]\nname = "a{i}"\nmode = "all"\n' for i in range(200))
    assert len(loads_campaigns(many_all)) == 200, "bounded by the ready queue: within the budget"
    heavy = "".join(
        f'[[campaign]]\nname = "a{i}"\nmode = "all"\nmax_batch_samples = 1000000\n' for i in range(200)
    )
    with pytest.raises(CampaignError) as refused:
        loads_campaigns(heavy, "heavy.toml")
    line = str(refused.value)
    assert "\n" not in line and line.startswith("heavy.toml: 200 campaigns could hold")
    assert f"budget of {MEMORY_BUDGET_BYTES // 2**20} MiB" in line


def test_a_dbc_message_longer_than_any_frame_is_refused_before_cantools(tmp_path: Path) -> None:
    dbc = tmp_path / "huge.dbc"
    dbc.write_text(
        'VERSION ""\n\nBS_:\n\nBU_: ECU\n\n'
        "BO_ 256 HUGE: 2147483648 ECU\n"
        ' SG_ A : 0|8@1+ (1,0) [0|255] "" ECU\n'
    )
    capture = tmp_path / "one.log"
    capture.write_text("(1.0) can0 100#01\n")
    command = [sys.executable, "-m", "firmware_agent", "decode", str(capture), "--dbc", str(dbc)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        f"firmware-agent decode: error: {dbc}:7: message HUGE declares 2147483648 bytes; "
        "a CAN frame has at most 64 (CAN FD)\n"
    )


KCD = """<NetworkDefinition xmlns="http://kayak.2codeornot2code.org/1.0">
  <Document/>
  <Bus name="B">
    <Message id="0x100" name="SMALL" length="8">
      <Signal name="A" offset="0" length="8"/>
    </Message>
    <Message id="0x101" name="HUGE" length="{length}">
      <Signal name="B" offset="0" length="8"/>
    </Message>
  </Bus>
</NetworkDefinition>
"""
SYM = """FormatVersion=6.0 // Do not edit this line!
Title="t"

{{SENDRECEIVE}}

[SMALL]
ID=100h
Len=8
Var=A unsigned 0,8

[HUGE]
ID=101h
Len={length}
Var=B unsigned 0,8
"""
ARXML = """<?xml version="1.0" encoding="UTF-8"?>
<AUTOSAR><AR-PACKAGES><AR-PACKAGE><SHORT-NAME>Frames</SHORT-NAME><ELEMENTS>
<CAN-FRAME><SHORT-NAME>HUGE</SHORT-NAME>
<FRAME-LENGTH>{length}</FRAME-LENGTH>
</CAN-FRAME></ELEMENTS></AR-PACKAGE></AR-PACKAGES></AUTOSAR>
"""


CAN_BOUND = "a CAN frame has at most 64 (CAN FD)"


@pytest.mark.parametrize(
    ("suffix", "template", "line", "limit"),
    [
        ("kcd", KCD, 7, CAN_BOUND),
        ("sym", SYM, 13, CAN_BOUND),
        ("arxml", ARXML, 4, "a frame has at most 65535"),
    ],
)
def test_other_database_formats_declaring_absurd_lengths_are_refused_before_cantools(
    tmp_path: Path, suffix: str, template: str, line: int, limit: str
) -> None:
    if suffix != "arxml":  # the same file with a sane length loads
        sane = tmp_path / f"sane.{suffix}"
        sane.write_text(template.format(length=8))
        assert {m.name: m.length for m in load_database(sane).messages} == {"SMALL": 8, "HUGE": 8}
    huge = tmp_path / f"huge.{suffix}"
    huge.write_text(template.format(length=2147483648))
    with pytest.raises(UserError) as refused:
        load_database(huge)
    assert str(refused.value) == f"{huge}:{line}: message HUGE declares 2147483648 bytes; {limit}"

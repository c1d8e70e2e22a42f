"""The collector's memory budget: what a set of campaigns may hold at worst, checked when they are loaded.

Issue 12: 200 `all` campaigns on the RAV4 replay took 3.4 GB, because every campaign materialises its own
copy of each batch and the queue of cut batches was bounded in batches (1024), not in samples. Two rules:

- the queue of cut batches waiting for the outbox holds at most `MAX_READY_SAMPLES` samples; beyond it the
  oldest batch of the lowest priority is dropped and counted (`collect.dropped_ready_batches`,
  `collect.dropped_ready_samples`), as for the batch-count bound;
- a campaign set whose worst case exceeds `MEMORY_BUDGET_BYTES` is refused where it is parsed (a campaign
  file, `--collect`, a signed campaign update), with one line naming the estimate and the budget.

Worst case, in samples held: the ready queue, plus per campaign its open batch (`max_batch_samples`) and,
for a triggered campaign, its pre-trigger buffer (`max_pre_trigger_samples`) and its condition's rolling
windows (`DEFAULT_WINDOW_POINTS` each), times `BYTES_PER_SAMPLE`. Measured on the RAV4 capture with 50
`all` campaigns: 29 bytes per held sample (each campaign's batch lists; the values themselves are shared);
`BYTES_PER_SAMPLE` is 64 to cover sealing and allocator slack. The default `--collect all` is (1,000,000
+ 10,000) x 64 = 65 MB; 200 `all` campaigns 192 MB (within the budget, and now bounded); 200 campaigns with
`max_batch_samples = 1000000` 12.9 GB (refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from firmware_agent.collect.conditions import DEFAULT_WINDOW_POINTS, Evaluator

if TYPE_CHECKING:
    from firmware_agent.collect.campaign import Campaign

#: Samples the queue of cut batches may hold (see the module docstring).
MAX_READY_SAMPLES = 1_000_000
#: Bytes a held sample costs at worst (measured 29; see the module docstring).
BYTES_PER_SAMPLE = 64
#: What the collector may hold at worst: 256 MiB, a quarter of a 1 GiB head unit.
MEMORY_BUDGET_BYTES = 256 * 1024 * 1024


def held_samples(campaign: Campaign) -> int:
    """Samples `campaign` may hold at worst outside the ready queue."""
    held = campaign.max_batch_samples
    if campaign.condition is not None:  # a triggered campaign
        held += campaign.max_pre_trigger_samples
        held += len(Evaluator(campaign.condition).windows) * DEFAULT_WINDOW_POINTS
    return held


def worst_case_bytes(campaigns: Sequence[Campaign]) -> int:
    """The collector's worst-case memory for `campaigns` (see the module docstring)."""
    return BYTES_PER_SAMPLE * (MAX_READY_SAMPLES + sum(held_samples(c) for c in campaigns))


def budget_problem(campaigns: Sequence[Campaign]) -> str | None:
    """Why `campaigns` could exceed the budget (one line), or None when they fit."""
    worst = worst_case_bytes(campaigns)
    if worst <= MEMORY_BUDGET_BYTES:
        return None
    heaviest = max(campaigns, key=held_samples)
    return (
        f"{len(campaigns)} campaigns could hold {worst / 2**20:.0f} MiB at worst, above the "
        f"collector's budget of {MEMORY_BUDGET_BYTES / 2**20:.0f} MiB (largest: {heaviest.name!r}, "
        f"{held_samples(heaviest)} samples); use fewer campaigns or lower max_batch_samples / "
        "max_pre_trigger_samples (docs/campaigns.md)"
    )

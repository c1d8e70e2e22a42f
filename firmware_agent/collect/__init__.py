"""Collection campaigns: which signals, when (periodic, on change, on a condition) and bounded buffers.

Public API: `load_campaigns` / `loads_campaigns` / `parse_campaigns` / `campaigns_for_option` (campaign
definitions), `SignalNames` (name validation and VSS aliases), `parse_condition` / `Evaluator` (the
condition language), `Collector` (samples or frame records in, batches out) and `FrameRecord` /
`SignalGroup` / `samples_of` (the record hand-over from decoding). See `docs/campaigns.md`.
"""

from firmware_agent.collect.campaign import (
    Campaign,
    CampaignError,
    builtin_all,
    campaigns_for_option,
    load_campaigns,
    loads_campaigns,
    needed_signals,
    parse_campaigns,
)
from firmware_agent.collect.collector import Collector
from firmware_agent.collect.conditions import ConditionError, Evaluator, Expression, parse_condition
from firmware_agent.collect.names import SignalNames, UnknownSignal
from firmware_agent.values import FrameRecord, SignalGroup, samples_of

__all__ = [
    "Campaign",
    "CampaignError",
    "Collector",
    "ConditionError",
    "Evaluator",
    "Expression",
    "FrameRecord",
    "SignalGroup",
    "SignalNames",
    "UnknownSignal",
    "builtin_all",
    "campaigns_for_option",
    "load_campaigns",
    "loads_campaigns",
    "needed_signals",
    "parse_campaigns",
    "parse_condition",
    "samples_of",
]

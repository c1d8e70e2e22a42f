"""`SIGHUP` (`systemctl reload`): read the configuration and campaigns again, apply what can change live.

The new configuration is loaded and checked completely (the file, the flags of the running process, the
campaign file against the DBCs) before anything changes. A configuration with a problem is refused with
one log line naming the file and key, and the running one stays as it was.

Applied live, on the pipeline thread (so no stage needs a lock):
- the campaigns (`collect` and the file it names, re-read even when its name did not change): the old
  campaigns' open batches are flushed into the outbox first, so no buffered sample is lost, and the kernel
  ID filters of socketcan sources follow the new campaigns;
- `pipeline.stats_interval`, `pipeline.heartbeat_interval`, `pipeline.shutdown_timeout`.

Everything else (sources, DBCs, broker, vehicle id, keys, state directory, outbox and queue bounds, the
`[identity]` section) would
mean new connections or a new outbox: a change there is logged as needing a restart and not applied, and
the rest of the reload goes ahead. The outbox is never touched by a reload.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_agent.collect.campaign import Campaign, campaigns_for_option, needed_signals
from firmware_agent.errors import UserError
from firmware_agent.pipeline.decoding import SampleDecoder
from firmware_agent.service.config import AgentConfig, Overrides, load_config

if TYPE_CHECKING:
    from firmware_agent.service.agent import Agent

log = logging.getLogger(__name__)

#: Settings a reload applies in place.
LIVE_FIELDS = ("collect", "stats_interval", "heartbeat_interval", "shutdown_timeout")
#: Settings that need a restart (compared, reported, not applied).
RESTART_FIELDS = (
    "vehicle_id",
    "sources",
    "broker",
    "signing_key",
    "state_dir",
    "dbc",
    "vss",
    "campaign_keys",
    "outbox_max_bytes",
    "payload_version",
    "e2e",
    "reader",
    "identity",
)


@dataclass
class ReloadResult:
    """What a reload did: `error` set when it was refused (nothing changed)."""

    error: str | None = None
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def prepare(agent: Agent, path: Path | None, overrides: Overrides) -> tuple[AgentConfig, list[Campaign]]:
    """Load and check the new configuration and campaigns; `UserError` when either has a problem."""
    new = load_config(path, overrides)
    campaigns = campaigns_for_option(new.collect, agent.names)
    return new, campaigns


def reload_agent(agent: Agent, path: Path | None, overrides: Overrides) -> ReloadResult:
    """Pipeline thread: reload `agent` from `path` + `overrides` (what `run` was started with)."""
    try:
        new, campaigns = prepare(agent, path, overrides)
    except UserError as exc:
        return ReloadResult(error=str(exc))
    old = agent.config
    result = ReloadResult()
    result.needs_restart = [name for name in RESTART_FIELDS if getattr(old, name) != getattr(new, name)]
    result.applied = [name for name in LIVE_FIELDS if getattr(old, name) != getattr(new, name)]
    agent.config = dataclasses.replace(old, **{name: getattr(new, name) for name in LIVE_FIELDS})
    if agent.campaign_updates is not None and old.campaign_path.exists():
        # A signed campaign update from the backend outranks the file until the backend sends another.
        log.warning(
            "reload: campaigns from %s not applied: a signed campaign update (%s) is in force",
            new.collect,
            old.campaign_path,
        )
    else:
        agent.install_campaigns(campaigns, {"source": "reload", "collect": new.collect})
        _update_kernel_filters(agent)
        result.campaigns = [campaign.name for campaign in campaigns]
    return result


def _update_kernel_filters(agent: Agent) -> None:
    """Socketcan sources pass exactly what the new campaigns want (all DBC messages with updates on)."""
    wanted = None if agent.campaign_updates is not None else needed_signals(agent.campaigns)
    identity = getattr(agent, "identity", None)
    if wanted is not None and identity is not None:  # the identity stage reads its own signals too
        wanted = wanted | identity.sampler.signal_keys()
    filters = SampleDecoder(agent.catalog, agent.vss, wanted, agent.checker)
    for reader in agent.readers:
        source = reader.source
        setter = getattr(source, "set_kernel_filters", None)
        if setter is not None:
            try:
                setter(filters.kernel_filters(source.name))
            except OSError as exc:  # the bus went away meanwhile; the filters apply when it reopens
                log.warning("reload: kernel filters of %s not updated now: %s", source.name, exc)
        else:
            source.kernel_filters = filters.kernel_filters(source.name)

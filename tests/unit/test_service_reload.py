"""SIGHUP reload: campaigns and live settings change, buffered samples and the outbox survive, a bad
configuration is refused with one line and the running one kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firmware_agent.service.agent import Agent
from firmware_agent.service.config import Overrides, load_config
from firmware_agent.service.lifecycle import ServiceLink
from firmware_agent.service.reload import reload_agent
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.values import Sample

CAMPAIGN = """\
[[campaign]]
name = "{name}"
mode = "periodic"
period_ms = 100
batch_interval_s = 3600
signals = ["Vehicle.Speed"]
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Overrides, Agent]:
    generate_private_key(tmp_path / "key.pem")
    (tmp_path / "campaigns.toml").write_text(CAMPAIGN.format(name="before"))
    (tmp_path / "agent.toml").write_text(
        'collect = "campaigns.toml"\n[pipeline]\nstats_interval = 60\nshutdown_timeout = 0\n'
    )
    overrides = Overrides(
        sources=["virtual:reload-test"],
        broker="mqtt://127.0.0.1:1",
        vehicle_id="v1",
        signing_key=str(tmp_path / "key.pem"),
        state_dir=str(tmp_path / "state"),
    )
    agent = Agent(load_config(tmp_path / "agent.toml", overrides))
    yield tmp_path / "agent.toml", overrides, agent
    agent.outbox.close()


def test_reload_swaps_campaigns_without_losing_buffered_samples(setup: tuple[Path, Overrides, Agent]) -> None:
    path, overrides, agent = setup
    for i in range(20):
        agent.collector.offer(Sample(1000.0 + i * 0.25, "Vehicle.Speed", float(i)))
    pending_before = agent.outbox.pending_count()
    (path.parent / "campaigns.toml").write_text(CAMPAIGN.format(name="after"))
    path.write_text(path.read_text().replace("stats_interval = 60", "stats_interval = 5"))
    result = reload_agent(agent, path, overrides)
    assert result.ok and result.campaigns == ["after"]
    assert result.applied == ["stats_interval"] and result.needs_restart == []
    assert agent.config.stats_interval == 5
    batches = agent.collector.poll(None) + agent.collector.flush()  # flush: the new campaign's batch
    old = [b for b in batches if b.campaign == "before"]
    assert len(old) == 1 and len(old[0].samples["Vehicle.Speed"][0]) == 20  # the open batch was flushed
    applied = [e for b in batches for e in b.events if e.kind == "campaign_applied"]
    assert applied and applied[0].detail["campaigns"] == ["after"] and applied[0].detail["source"] == "reload"
    assert agent.outbox.pending_count() == pending_before
    assert [c.name for c in agent.campaigns] == ["after"]


def test_a_bad_configuration_is_refused_and_the_running_one_kept(
    setup: tuple[Path, Overrides, Agent],
) -> None:
    path, overrides, agent = setup
    before = agent.config
    path.write_text("bogus = 1\n" + path.read_text())
    result = reload_agent(agent, path, overrides)
    assert not result.ok and f"{path}:1: bogus: unknown key" in (result.error or "")  # file:line: key
    (path.parent / "campaigns.toml").write_text('[[campaign]]\nname = "x"\nmode = "periodic"\n')
    path.write_text(path.read_text().replace("bogus = 1\n", ""))
    result = reload_agent(agent, path, overrides)
    assert not result.ok and "campaigns.toml" in (result.error or "")
    assert agent.config is before and [c.name for c in agent.campaigns] == ["before"]


def test_settings_that_need_a_restart_are_named_not_applied(setup: tuple[Path, Overrides, Agent]) -> None:
    path, overrides, agent = setup
    path.write_text(path.read_text() + "[outbox]\nmax_bytes = 1048576\n")
    result = reload_agent(agent, path, overrides)
    assert result.ok and result.needs_restart == ["outbox_max_bytes"]
    assert agent.config.outbox_max_bytes == 64 * 1024 * 1024


def test_sighup_reloads_on_the_next_heartbeat_with_one_log_line(
    setup: tuple[Path, Overrides, Agent], caplog: pytest.LogCaptureFixture
) -> None:
    path, overrides, agent = setup
    link = ServiceLink(None, path, overrides)
    link.attach(agent)
    path.write_text("nope = 1\n" + path.read_text())
    link.request_reload()
    with caplog.at_level(logging.INFO, logger="firmware_agent"):
        link.on_heartbeat(agent.health())
        link.on_heartbeat(agent.health())  # a reload happens once per request
    refused = [r for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "nope: unknown key" in refused[0].getMessage()
    assert link.reload_failures == 1 and link.reloads == 0

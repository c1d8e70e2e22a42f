"""The daemon's log: one line per event, text or JSON, never a line per frame."""

from __future__ import annotations

import io
import json
import logging

from firmware_agent.service.logs import setup_logging


def test_json_lines_carry_the_event_fields() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    log = logging.getLogger("firmware_agent.service")
    log.info("broker connected: %s", "mqtt://x", extra={"event": {"event": "broker_connected"}})
    log.debug("not shown at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert document["message"] == "broker connected: mqtt://x" and document["event"] == "broker_connected"
    assert document["level"] == "info" and document["logger"] == "firmware_agent.service"


def test_text_is_one_line_even_for_multi_line_messages() -> None:
    stream = io.StringIO()
    setup_logging("warning", "text", stream)
    logging.getLogger("firmware_agent.x").warning("a\nb")
    logging.getLogger("firmware_agent.x").info("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("warning a b")
    setup_logging("info", "text")  # back to stderr for the other tests

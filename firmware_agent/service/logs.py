"""How the daemon speaks: `logging`, one line per event on stderr, never one per frame.

Under systemd, journald adds the time, the unit and the priority, so the text format carries only the
level and the message (`<N>` prefixes tell journald the priority: `SyslogLevelPrefix=` is on by default).
`--log-format json` prints one JSON object per line (`time`, `level`, `logger`, `message` and the
record's `event` fields) for log shippers. Loggers are named after the modules (`firmware_agent.*`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

#: syslog priorities (sd-daemon(3) prefixes) of the logging levels.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class TextFormatter(logging.Formatter):
    """`<6>firmware-agent: message` under journald (it reads the prefix), `LEVEL message` elsewhere."""

    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(record.getMessage())
        if record.exc_info:
            message += " | " + _one_line(self.formatException(record.exc_info))
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{message}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname.lower()} {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"event": {...}}` fields are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "event", None)
        if isinstance(fields, dict):
            document.update({key: value for key, value in fields.items() if key not in document})
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, sort_keys=False)


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Route the `firmware_agent` loggers to `stream` (stderr) in `fmt`; returns the handler installed.

    Called once by `run`; calling it again replaces the handler (tests, a reload that changes the level).
    """
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger("firmware_agent")
    for handler in list(root.handlers):
        if getattr(handler, "_firmware_agent", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._firmware_agent = True  # type: ignore[attr-defined]
    journald = _under_journald(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(journald))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    return handler


def _under_journald(stream: TextIO) -> bool:
    """True when `stream` is the journal's stream socket (`$JOURNAL_STREAM` names its device:inode)."""
    import os

    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def _one_line(text: str) -> str:
    return " ".join(text.split())

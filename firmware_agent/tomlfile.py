"""The one TOML reader of the configuration and the campaign files: errors name the file and the line.

`parse_toml` turns a syntax error into `FILE:LINE:COLUMN: TOML syntax error: ...`; `key_line` finds the
line that sets a (dotted) key, so that a value the loader refuses is reported as `FILE:LINE: KEY: ...`
(tomllib keeps no positions for values, hence the search in the text).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from firmware_agent.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def parse_toml(text: str, source: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The TOML document in `text`; a syntax error raises `error` naming `source`, line and column."""
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _POSITION.search(message)
        if match:
            line, column = match.groups()
            raise error(f"{source}:{line}:{column}: TOML syntax error: {message[: match.start()]}") from exc
        raise error(f"{source}: TOML syntax error: {message}") from exc
    except RecursionError:  # tomllib recurses per nested array or table
        raise error(f"{source}: TOML nested too deeply") from None
    return document


def key_line(text: str, key: str) -> int | None:
    """The 1-based line that sets `key` (`table.key` or a top-level `key`), or None when not found."""
    table, _, name = key.rpartition(".")
    assignment = re.compile(rf"^\s*(\"{re.escape(name)}\"|'{re.escape(name)}'|{re.escape(name)})\s*=")
    current = ""
    table_line = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1).strip()
            if current == key:
                table_line = number
            continue
        if current == table and assignment.match(line):
            return number
    return table_line

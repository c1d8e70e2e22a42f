"""Errors the user can act on.

A `UserError` carries one line that names the file, line, setting or signal at fault. The CLI prints it
without a traceback and exits non-zero; anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line and exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Collapse to one line: messages from libraries (cantools, sqlite) sometimes span several.
        super().__init__(" ".join(message.split()))

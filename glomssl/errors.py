"""The one error type users see.

Library code raises :class:`GlomsslError` for bad input (a wrong path, a corrupt file, a malformed
server answer, a bad config value). The message names the input and says how to fix it; the CLI turns
it into a single line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class GlomsslError(Exception):
    """Bad input or an unrecoverable condition, with a message meant for the user."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

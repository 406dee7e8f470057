"""The CLI's error: a one-line message and an exit code, never a traceback for a user's mistake."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a run that failed or was cancelled; a missing object; an unreachable server
EXIT_USAGE = 2  # a bad command line or bad input files


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)

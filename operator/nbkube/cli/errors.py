"""The CLI's error: a one-line message and an exit code, never a traceback for a user's mistake."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

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


def invalid_spec(what: str, exc: ValidationError) -> UsageError:
    """A spec the API model refuses, as one line: `invalid run: timeouts.cellSeconds: ...`."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return UsageError(f"invalid {what}: {where}: {message}" if where else f"invalid {what}: {message}")

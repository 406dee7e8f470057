"""What every part of the node agent shares: its logger, the API's timestamps and ConfigError."""

from __future__ import annotations

import datetime
import logging

log = logging.getLogger("nodeagent")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ConfigError(Exception):
    """The container cannot start yet (missing secret or config map, no command, bad workingDir)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

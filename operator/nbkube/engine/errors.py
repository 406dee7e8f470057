"""Errors raised by the kernel engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class EngineError(Exception):
    """Base of every error the engine raises."""


class GatewayError(EngineError):
    """The gateway answered with an unexpected HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(GatewayError):
    """The gateway refused our token (HTTP 401)."""


class KernelNotFound(GatewayError):
    """The kernel does not exist on the gateway (HTTP 404): deleted, or removed after repeated deaths."""


class KernelLimitReached(GatewayError):
    """The gateway refused to start another kernel (KG_MAX_KERNELS, HTTP 403 "Resource Limit")."""


class GatewayUnavailable(EngineError):
    """The gateway could not be reached (refused, reset, timed out), or a lost websocket could not be
    re-established within the reconnect timeout."""

    partial_result: Any = None
    """When raised out of execute_notebook: the NotebookResult up to the failure."""


class ExecutionLost(EngineError):
    """Resuming an execution by msg_id found no trace of it: the kernel had already moved past it and its
    messages were not buffered by the gateway (or the request was never sent). The cell's outcome is
    unknown; the caller decides whether to run it again."""

    def __init__(self, msg_id: str) -> None:
        super().__init__(f"no messages of execution {msg_id} were replayed and the kernel is past it")
        self.msg_id = msg_id


# Failures that mean "the gateway is not there" rather than "the gateway said no".
UNREACHABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError)


def error_for_status(status: int, body: str, what: str) -> GatewayError:
    reason = body.strip()
    try:
        reason = json.loads(body).get("message") or reason
    except (ValueError, AttributeError):
        pass
    message = f"{what}: HTTP {status} {reason}".strip()
    if status == 401:
        return AuthenticationError(f"{what}: the gateway rejected the token (HTTP 401)", status)
    if status == 404:
        return KernelNotFound(message, status)
    if status == 403 and "Resource Limit" in body:
        return KernelLimitReached(message, status)
    return GatewayError(message, status)

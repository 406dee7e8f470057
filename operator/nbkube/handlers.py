"""kopf handlers: thin decorators over the plain functions in the controller modules.

Run with:  kopf run -m nbkube.handlers --all-namespaces --liveness=http://0.0.0.0:8081/healthz
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf

from nbkube import GROUP, VERSION
from nbkube.api import RunState
from nbkube.api.session import SessionState
from nbkube.environment.objects import GATEWAY_APP_NAME
from nbkube.runtime import OperatorContext

ENVIRONMENTS = (GROUP, VERSION, "notebookenvironments")
RUNS = (GROUP, VERSION, "notebookruns")
SESSIONS = (GROUP, VERSION, "notebooksessions")
SCHEDULES = (GROUP, VERSION, "notebookschedules")

# When a run or session is deleted or the operator stops, kopf sets `stopped` and, after
# cancellation_backoff, cancels the daemon: without a backoff it cancels at once, and the daemon's
# own ending (a commit, a kernel released or left for the next operator) is cut short.
DAEMON_GRACE_SECONDS = 30
DAEMON_EXIT_SECONDS = 5.0
GATEWAY_POD_LABELS = {"app.kubernetes.io/name": GATEWAY_APP_NAME}


def _ctx(memo: Any) -> OperatorContext:
    return memo["nbkube"]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Silent watches are a known kopf failure mode: make the server and the client both time out.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.INFO
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # A daemon told to stop (its object deleted, the operator stopping) ends on its own in well under
    # this (a kernel released, a status written): kopf waits for that, then removes the finalizer at
    # once, instead of looking again only when DAEMON_GRACE_SECONDS have passed.
    settings.background.instant_exit_timeout = DAEMON_EXIT_SECONDS
    memo["nbkube"] = await OperatorContext.start(logger)


# kopf's own session opens a connection per concurrent request without limit: a burst of 1,000 runs
# held ~330 TLS connections (and their buffers) open. A bounded pool costs nothing in latency here.
API_CONNECTIONS = 24


@kopf.on.login()
async def login(
    logger: logging.Logger, settings: kopf.OperatorSettings, **kwargs: Any
) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(logger=logger, settings=settings, **kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=API_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=info.as_aiohttp_basic_auth(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session, server=info.server, default_namespace=info.default_namespace
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "nbkube" in memo:
        await _ctx(memo).stop()


@kopf.on.probe(id="ready")
def probe_ready(memo: kopf.Memo, **_: Any) -> bool:
    return "nbkube" in memo


# NotebookEnvironment


@kopf.on.resume(*ENVIRONMENTS)
@kopf.on.create(*ENVIRONMENTS)
@kopf.on.update(*ENVIRONMENTS, field="spec")
async def environment_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    status = await _ctx(memo).environments.reconcile(body)
    patch.status.update(status)


@kopf.timer(*ENVIRONMENTS, interval=5, initial_delay=2, idle=0)
async def environment_status(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    status = await _ctx(memo).environments.refresh_status(body)
    if status is not None:
        patch.status.update(status)


@kopf.on.delete(*ENVIRONMENTS, optional=True)
async def environment_deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    _ctx(memo).environments.forget(namespace, name)


@kopf.on.event("", "v1", "pods", labels=GATEWAY_POD_LABELS)
async def gateway_pod_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if "nbkube" in memo:
        await _ctx(memo).environments.observe_pod(event.get("type") or "MODIFIED", event["object"])


def _requirements_config_map(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> bool:
    """Only a ConfigMap some environment installs packages from reaches the handler (and kopf's log)."""
    return "nbkube" in memo and _ctx(memo).environments.requirements.used(namespace, name)


@kopf.on.event("", "v1", "configmaps", when=_requirements_config_map)
async def config_map_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """A changed requirements ConfigMap (packages.configMapRef) rolls its environments' gateway pods."""
    await _ctx(memo).environments.config_map_changed(event.get("type"), event["object"])


# NotebookRun


def _active(status: dict[str, Any], **_: Any) -> bool:
    state = (status or {}).get("state")
    return state not in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


def _finished_with_ttl(spec: dict[str, Any], status: dict[str, Any], **_: Any) -> bool:
    return not _active(status) and spec.get("ttlSecondsAfterFinished") is not None


@kopf.daemon(
    *RUNS,
    when=_active,
    cancellation_backoff=DAEMON_GRACE_SECONDS,
    cancellation_timeout=60,
    initial_delay=0,
    backoff=10,
)
async def run_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).runs.drive(body, stopped)


@kopf.on.event(*RUNS)
def run_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if "nbkube" in memo:
        _ctx(memo).runs.observe(event.get("type"), event.get("object") or {})
        _ctx(memo).schedules.observe_run(event.get("type"), event.get("object") or {})


TTL_CHECK_SECONDS = 10


@kopf.timer(*RUNS, interval=TTL_CHECK_SECONDS, when=_finished_with_ttl, idle=0)
async def run_ttl(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).runs.expire_if_due(body, within=TTL_CHECK_SECONDS)


# NotebookSession


def _live(status: dict[str, Any], **_: Any) -> bool:
    return (status or {}).get("state") != SessionState.ENDED


@kopf.daemon(
    *SESSIONS,
    when=_live,
    cancellation_backoff=DAEMON_GRACE_SECONDS,
    cancellation_timeout=60,
    initial_delay=0,
    backoff=10,
)
async def session_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).sessions.drive(body, stopped)


@kopf.on.event(*SESSIONS)
def session_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if "nbkube" in memo:
        _ctx(memo).sessions.observe(event.get("type"), event.get("object") or {})


# NotebookSchedule


@kopf.daemon(*SCHEDULES, cancellation_backoff=DAEMON_EXIT_SECONDS, initial_delay=0, backoff=10)
async def schedule_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).schedules.drive(body, stopped)


@kopf.on.event(*SCHEDULES)
def schedule_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    if "nbkube" in memo:
        _ctx(memo).schedules.observe_schedule(event.get("type"), event.get("object") or {})

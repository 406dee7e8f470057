"""Kubernetes access for the CLI: kubeconfig loading, NotebookRun and NotebookSession reads and writes,
one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from nbkube import GROUP, VERSION
from nbkube.api.session import SessionState
from nbkube.api.states import TERMINAL_RUN_STATES, RunState
from nbkube.cli.errors import CliError

PLURAL_RUNS = "notebookruns"
PLURAL_ENVIRONMENTS = "notebookenvironments"
PLURAL_SESSIONS = "notebooksessions"
PLURAL_SCHEDULES = "notebookschedules"
WATCH_SECONDS = 60

T = TypeVar("T")


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n", "--namespace", help="the namespace (default: the context's namespace, else default)"
    )


@dataclass
class ClusterOptions:
    kubeconfig: str | None
    context: str | None
    namespace: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClusterOptions:
        return cls(args.kubeconfig, args.context, args.namespace)


def api_message(exc: Any) -> str:
    """The API server's own message of an ApiException (e.g. 'namespaces "x" not found')."""
    try:
        body = json.loads(exc.body)
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return f"{exc.status} {exc.reason}".strip()


class ClusterClient:
    """A sync kubernetes client for one namespace, every failure turned into a CliError."""

    def __init__(self, options: ClusterOptions) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        self.options = options
        config_file = options.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        default_namespace = "default"
        try:
            if config_file is None and not os.path.exists(os.path.expanduser("~/.kube/config")):
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config()
                    self.api_client = client.ApiClient()
                    default_namespace = _incluster_namespace()
                else:
                    raise CliError("no kubeconfig found: set KUBECONFIG or pass --kubeconfig")
            else:
                self.api_client = config.new_client_from_config(
                    config_file=config_file, context=options.context, persist_config=False
                )
                default_namespace = _context_namespace(config_file, options.context)
        except ConfigException as exc:
            raise CliError(f"cannot load the kubeconfig: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot read the kubeconfig: {exc}") from None
        self.namespace = options.namespace or default_namespace
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.kubeconfig = config_file

    def close(self) -> None:
        self.api_client.close()

    def call(
        self, what: str, fn: Callable[..., Any], *args: Any, missing: str | None = None, **kwargs: Any
    ) -> Any:
        """Calls the API; a missing object, a refusal or an unreachable server becomes a CliError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and missing:
                raise CliError(missing) from None
            raise CliError(f"{what}: {api_message(exc)}") from None
        except HTTPError as exc:
            host = self.api_client.configuration.host
            raise CliError(f"{what}: cannot reach the Kubernetes API server at {host} ({exc})") from None

    # NotebookRuns

    def find_run(self, name: str) -> dict[str, Any]:
        return self.call(
            f"NotebookRun {self.namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_RUNS,
            name,
            missing=f"NotebookRun {name!r} not found in namespace {self.namespace} "
            f"(`nbkube get -n {self.namespace}` lists the runs)",
        )

    def list_runs(self) -> list[dict[str, Any]]:
        found = self.call(
            f"NotebookRuns in {self.namespace}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_RUNS,
        )
        return list(found.get("items", []))

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(
            f"creating NotebookRun {self.namespace}/{name}",
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_RUNS,
            body,
        )

    def patch_run(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.call(
            f"NotebookRun {self.namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_RUNS,
            name,
            patch,
        )

    def environment_exists(self, name: str) -> bool:
        try:
            self.call(
                f"NotebookEnvironment {self.namespace}/{name}",
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL_ENVIRONMENTS,
                name,
                missing="missing",
            )
        except CliError as exc:
            if exc.message == "missing":
                return False
            raise
        return True

    def watch_run(self, name: str, deadline: float | None = None) -> Iterator[dict[str, Any]]:
        """Yields the run now and after every change, until it reaches a terminal state (or the
        monotonic `deadline` passes)."""
        return self._watch(
            "NotebookRun",
            PLURAL_RUNS,
            name,
            self.find_run,
            lambda run: run_state(run) in TERMINAL_RUN_STATES,
            deadline,
        )

    def _watch(
        self,
        kind: str,
        plural: str,
        name: str,
        find: Callable[[str], dict[str, Any]],
        done: Callable[[dict[str, Any]], bool],
        deadline: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields the object now and after every change, until `done` says so or time.monotonic()
        passes `deadline` (a deletion is an error)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        obj = find(name)
        yield obj
        while not done(obj):
            wait = WATCH_SECONDS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = max(1, min(WATCH_SECONDS, math.ceil(left)))
            resource_version = obj["metadata"]["resourceVersion"]
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=wait,
                ):
                    if event["type"] == "DELETED":
                        raise CliError(f"{kind} {self.namespace}/{name} was deleted")
                    if event["type"] in ("ADDED", "MODIFIED"):
                        obj = event["object"]
                        yield obj
                        if done(obj):
                            return
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: our resourceVersion is too old; read the object again
                    raise CliError(f"watching {kind} {self.namespace}/{name}: {api_message(exc)}") from None
            except HTTPError:
                pass  # a dropped watch: read the object again (that read reports an unreachable server)
            finally:
                stream.stop()
            obj = find(name)
            yield obj

    # NotebookSessions

    def find_session(self, name: str) -> dict[str, Any]:
        return self.call(
            f"NotebookSession {self.namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SESSIONS,
            name,
            missing=f"NotebookSession {name!r} not found in namespace {self.namespace} "
            f"(`nbkube session list -n {self.namespace}` lists the sessions)",
        )

    def list_sessions(self) -> list[dict[str, Any]]:
        found = self.call(
            f"NotebookSessions in {self.namespace}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SESSIONS,
        )
        return list(found.get("items", []))

    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(
            f"creating NotebookSession {self.namespace}/{name}",
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SESSIONS,
            body,
        )

    def delete_session(self, name: str) -> None:
        self.call(
            f"deleting NotebookSession {self.namespace}/{name}",
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SESSIONS,
            name,
            missing=f"NotebookSession {name!r} not found in namespace {self.namespace}",
        )

    def watch_session(
        self, name: str, done: Callable[[dict[str, Any]], bool], deadline: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yields the session now and after every change, until `done` says so or `deadline` passes."""
        return self._watch("NotebookSession", PLURAL_SESSIONS, name, self.find_session, done, deadline)

    # NotebookSchedules

    def find_schedule(self, name: str) -> dict[str, Any]:
        return self.call(
            f"NotebookSchedule {self.namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SCHEDULES,
            name,
            missing=f"NotebookSchedule {name!r} not found in namespace {self.namespace} "
            f"(`nbkube schedule list -n {self.namespace}` lists the schedules)",
        )

    def list_schedules(self) -> list[dict[str, Any]]:
        found = self.call(
            f"NotebookSchedules in {self.namespace}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SCHEDULES,
        )
        return list(found.get("items", []))

    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(
            f"creating NotebookSchedule {self.namespace}/{name}",
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SCHEDULES,
            body,
        )

    def patch_schedule(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.call(
            f"NotebookSchedule {self.namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL_SCHEDULES,
            name,
            patch,
            missing=f"NotebookSchedule {name!r} not found in namespace {self.namespace}",
        )

    # ConfigMaps

    def create_config_map(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.call(
            f"creating ConfigMap {self.namespace}/{name}",
            self.core.create_namespaced_config_map,
            self.namespace,
            body,
        ).to_dict()

    def patch_config_map(self, name: str, patch: dict[str, Any]) -> None:
        self.call(
            f"ConfigMap {self.namespace}/{name}",
            self.core.patch_namespaced_config_map,
            name,
            self.namespace,
            patch,
        )

    def delete_config_map(self, name: str) -> None:
        self.call(
            f"deleting ConfigMap {self.namespace}/{name}",
            self.core.delete_namespaced_config_map,
            name,
            self.namespace,
        )


def run_state(run: dict[str, Any]) -> str:
    return (run.get("status") or {}).get("state") or RunState.PENDING.value


def session_state(session: dict[str, Any]) -> str:
    """Pending, Ready or Ended (a session the operator has not seen yet is Pending)."""
    return (session.get("status") or {}).get("state") or SessionState.PENDING.value


def _context_namespace(config_file: str | None, context: str | None) -> str:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(config_file=config_file)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    if context and chosen is None:
        raise CliError(f"context {context!r} not found in the kubeconfig")
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"

"""The user-facing API (results, logs, sessions) through the Kubernetes API server, with your kubeconfig.

Requests go to `/apis/subresources.nbkube.io/v1alpha1/...` on the API server with whatever the
kubeconfig authenticates with (client certificates, tokens, exec plugins); the API server checks RBAC
and forwards them to the operator. No port-forward, no rights in the operator's namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nbkube.cli.errors import CliError
from nbkube.cli.kubeclient import ClusterClient
from nbkube.userapi import paths


class UserApiError(CliError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(status: int, body: bytes) -> str:
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and payload.get("message"):
            return str(payload["message"])
    except ValueError:
        pass
    text = body.decode(errors="replace").strip()
    return text.splitlines()[0] if text else f"HTTP {status}"


def _post_chunked(client: Any, url: str, headers: dict[str, str], body: Any, timeout: float | None) -> Any:
    """POST `body` (as param_serialize sanitised it) as JSON, chunked, not with a Content-Length.

    kube-apiserver forwards the request to the operator with Go's ReverseProxy. With a Content-Length
    body, the operator can read the whole body and start its answer while the proxy has not yet seen
    the end of the body it copies; writing the answer's headers then closes that body, the copy fails,
    and the proxy closes the connection to the operator with the answer half read (golang/go#40747:
    "ReverseProxy read error during body copy"). Streamed executions broke so, 1 to 2.5 in 100 under
    CPU load. A chunked body cannot be finished before the proxy has read it to its end."""
    import urllib3

    data = json.dumps(body).encode()
    return client.rest_client.pool_manager.request(
        "POST",
        url,
        body=iter([data]),
        chunked=True,
        headers=headers,
        timeout=urllib3.Timeout(total=timeout) if timeout else None,
        preload_content=False,
    )


class UserApi:
    def __init__(self, kube: ClusterClient) -> None:
        self.kube = kube

    def _open(
        self,
        path: str,
        query: dict[str, str] | None,
        stream: bool,
        method: str = "GET",
        body: dict[str, Any] | None = None,
    ) -> Any:
        """The urllib3 response of `method` path (not yet read), or a UserApiError for an error status.
        A POST sends `body` as JSON."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        client = self.kube.api_client
        try:
            headers = {"Accept": "*/*"}
            if method != "GET":
                headers["Content-Type"] = "application/json"
            verb, url, header_params, payload, post = client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body if method != "GET" else None,
                auth_settings=["BearerToken"],
            )
            timeout = None if stream else 60
            if method == "GET":
                response = client.call_api(
                    verb, url, header_params, payload, post, _request_timeout=timeout
                ).response
            else:
                response = _post_chunked(client, url, header_params, payload, timeout)
        except (ApiException, HTTPError) as exc:  # the client's SSL errors are ApiException(status=0)
            detail = exc.reason if isinstance(exc, ApiException) else exc
            host = client.configuration.host
            raise CliError(f"cannot reach the Kubernetes API server at {host} ({detail})") from None
        if response.status >= 400:
            status, data = response.status, response.data
            response.release_conn()
            message = _message(status, data)
            if status == 503 or "the server could not find the requested resource" in message:
                message += (
                    f" (is nbkube's APIService {paths.APISERVICE} available? "
                    f"`kubectl get apiservice {paths.APISERVICE}`)"
                )
            raise UserApiError(status, message)
        return response

    def get(self, path: str, query: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
        from urllib3.exceptions import HTTPError

        response = self._open(path, query, stream=False)
        try:
            return response.data, dict(response.headers)
        except HTTPError as exc:
            raise CliError(f"reading {path} through the API server failed: {exc}") from None
        finally:
            response.release_conn()

    def post(self, path: str, body: dict[str, Any]) -> bytes:
        """POST of a JSON body; the answer's bytes (an error status is a UserApiError)."""
        from urllib3.exceptions import HTTPError

        # No read timeout: an operation waits its turn in the session's queue (a restart can take long).
        response = self._open(path, None, stream=True, method="POST", body=body)
        try:
            return bytes(response.data)
        except HTTPError as exc:
            raise CliError(f"reading the answer of {path} through the API server failed: {exc}") from None
        finally:
            response.release_conn()

    def lines(
        self, path: str, query: dict[str, str] | None = None, *, post: dict[str, Any] | None = None
    ) -> Iterator[bytes]:
        """The answer's lines as they arrive: of a GET, or of a POST of `post` (a JSON body)."""
        from urllib3.exceptions import HTTPError

        if post is None:
            response = self._open(path, query, stream=True)
        else:
            response = self._open(path, query, stream=True, method="POST", body=post)
        ended = False
        try:
            yield from response
            ended = True
        except HTTPError as exc:
            raise CliError(f"the stream from the API server broke: {exc}") from None
        finally:
            if ended:
                response.release_conn()
            else:  # left half-read (the caller stopped, or it broke): its connection is not reused
                response.close()

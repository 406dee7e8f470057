"""`nbkube ui`: the read-only web page of a namespace, through a local proxy on 127.0.0.1.

A browser cannot present a kubeconfig's credentials (client certificates, tokens, exec plugins) to the
Kubernetes API server, so, like `kubectl proxy`, this listens on loopback and forwards the page's
requests with the user's own credentials. Unlike `kubectl proxy` it forwards only what the page reads:

- GET and HEAD, nothing else (no create, no exec: a page or anything else on this machine that reaches
  the port can read what the user may read of nbkube, and change nothing);
- only below `/apis/nbkube.io/v1alpha1/namespaces/` and `/apis/subresources.nbkube.io/v1alpha1/namespaces/`
  (NotebookRuns, and the user API: results, rendered notebooks, the page), never a watch;
- only requests whose Host header names this loopback listener (`127.0.0.1:<port>`, `localhost:<port>`,
  `[::1]:<port>`): a DNS-rebinding page of another site sends its own host name and is refused.

The API server and the operator authorise every request as the user, exactly as `kubectl get --raw`.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nbkube import GROUP, VERSION
from nbkube.cli.errors import EXIT_OK, CliError
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options
from nbkube.userapi import paths

ALLOWED_PREFIXES = (f"/apis/{GROUP}/{VERSION}/namespaces/", f"{paths.PREFIX}/namespaces/")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Response headers passed on to the browser (its security headers above all); others are dropped.
PASSED_HEADERS = frozenset(
    {
        "content-type",
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
        "etag",
        "location",
        "retry-after",
        "x-nbkube-commit",
    }
)
UPSTREAM_TIMEOUT = 120


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve the read-only web page of a namespace on 127.0.0.1",
        description="Starts a local, read-only proxy to the Kubernetes API server on 127.0.0.1 that adds "
        "your kubeconfig's credentials (like `kubectl proxy`, but only GETs of nbkube's resources and "
        "pages), prints the URL of the namespace's page and serves until interrupted.",
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_ui)


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a request's Host header names this listener (refusing DNS-rebinding host names)."""
    if not host:
        return False
    return host.lower() in {f"{name}:{port}" for name in LOOPBACK_HOSTS}


def forwardable(method: str, target: str) -> tuple[int, str] | None:
    """None when the request may be forwarded, else (status, reason)."""
    if method not in ("GET", "HEAD"):
        return 405, "the nbkube ui proxy is read only: only GET and HEAD are forwarded"
    parts = urlsplit(target)
    segments = parts.path.split("/")
    escaped = any(code in parts.path.lower() for code in ("%2f", "%2e", "%5c"))
    if not parts.path.startswith(ALLOWED_PREFIXES) or ".." in segments or "." in segments or escaped:
        return 404, "the nbkube ui proxy forwards only nbkube's resources and pages of a namespace"
    if any(key in ("watch", "follow") for key, _ in parse_qsl(parts.query)):
        return 400, "the nbkube ui proxy forwards no watch or follow (the page polls)"
    return None


class UiProxy:
    """The loopback listener and its forwarding, on threads (one per request)."""

    def __init__(self, kube: ClusterClient, port: int) -> None:
        self.kube = kube
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    def url(self, namespace: str) -> str:
        return f"http://127.0.0.1:{self.port}{paths.ui_path(namespace)}"

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.server.serve_forever, name="nbkube-ui", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def forward(self, method: str, target: str, accept: str) -> tuple[int, dict[str, str], bytes]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        parts = urlsplit(target)
        client = self.kube.api_client
        try:
            verb, url, headers, body, post = client.param_serialize(
                method,
                parts.path,
                query_params=parse_qsl(parts.query, keep_blank_values=True),
                header_params={"Accept": accept or "*/*"},
                auth_settings=["BearerToken"],
            )
            response = client.call_api(
                verb, url, headers, body, post, _request_timeout=UPSTREAM_TIMEOUT
            ).response
            try:
                data = bytes(response.data)
            finally:
                response.release_conn()
        except (ApiException, HTTPError) as exc:
            detail = exc.reason if isinstance(exc, ApiException) else exc
            return 502, {"Content-Type": "text/plain"}, f"cannot reach the API server: {detail}\n".encode()
        passed = {k: v for k, v in response.headers.items() if k.lower() in PASSED_HEADERS}
        return response.status, passed, data

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "nbkube-ui"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the user sees only errors
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _refuse(self, status: int, reason: str) -> None:
                self._answer(status, {"Content-Type": "text/plain; charset=utf-8"}, f"{reason}\n".encode())

            def _serve(self) -> None:
                if not host_allowed(self.headers.get("Host"), proxy.port):
                    self._refuse(403, "refused: the Host header does not name this loopback proxy")
                    return
                if urlsplit(self.path).path in ("", "/"):
                    self._answer(302, {"Location": paths.ui_path(proxy.kube.namespace)}, b"")
                    return
                refused = forwardable(self.command, self.path)
                if refused is not None:
                    self._refuse(*refused)
                    return
                self._answer(*proxy.forward(self.command, self.path, self.headers.get("Accept", "")))

            def do_GET(self) -> None:
                self._serve()

            def do_HEAD(self) -> None:
                self._serve()

            def _read_only(self) -> None:
                self._refuse(405, "the nbkube ui proxy is read only: only GET and HEAD are forwarded")

            do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _read_only

        return Handler


def cmd_ui(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        try:
            proxy = UiProxy(kube, args.port)
        except OSError as exc:
            raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
        print(f"nbkube ui: {proxy.url(kube.namespace)}", flush=True)
        print("(read only, your kubeconfig's credentials; Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            proxy.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            proxy.server.server_close()
    finally:
        kube.close()
    return EXIT_OK

"""The operator's user-facing HTTP port (results files, run logs), reached directly or by port-forward.

`--operator-url` (or NBKUBE_OPERATOR_URL) names it directly. Otherwise the CLI runs
`kubectl port-forward -n <operator namespace> svc/<results service> :8082`, reads the local port
kubectl picked from its first line of output, and stops kubectl when the command ends.
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO
from urllib.parse import quote, urlencode, urlsplit

from nbkube.cli.errors import CliError
from nbkube.cli.kubeclient import ClusterOptions

DEFAULT_OPERATOR_NAMESPACE = "nbkube"
DEFAULT_RESULTS_SERVICE = "nbkube-results"
RESULTS_PORT = 8082
CONNECT_TIMEOUT = 30.0
PORT_FORWARD_TIMEOUT = 30.0
_FORWARDING = re.compile(r"Forwarding from (?:127\.0\.0\.1|\[::1\]):(\d+) -> ")


def add_operator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator")
    group.add_argument(
        "--operator-url",
        default=os.environ.get("NBKUBE_OPERATOR_URL"),
        help="base URL of the operator's HTTP port "
        "(default: $NBKUBE_OPERATOR_URL, else a kubectl port-forward)",
    )
    group.add_argument(
        "--operator-namespace",
        default=os.environ.get("NBKUBE_OPERATOR_NAMESPACE", DEFAULT_OPERATOR_NAMESPACE),
        help="namespace nbkube is installed in, for the port-forward (default: %(default)s)",
    )
    group.add_argument(
        "--results-service",
        default=os.environ.get("NBKUBE_RESULTS_SERVICE", DEFAULT_RESULTS_SERVICE),
        help="the operator's results Service, for the port-forward (default: %(default)s)",
    )


def parse_forwarding_line(line: str) -> int | None:
    """The local port from kubectl's 'Forwarding from 127.0.0.1:40123 -> 8082' line."""
    match = _FORWARDING.search(line)
    return int(match.group(1)) if match else None


@dataclass
class PortForward:
    """`kubectl port-forward` to the results Service on a local port kubectl picks."""

    cluster: ClusterOptions
    namespace: str
    service: str
    process: subprocess.Popen[str] | None = None
    port: int | None = None
    _stderr: list[str] = field(default_factory=list)

    def start(self) -> int:
        kubectl = os.environ.get("NBKUBE_KUBECTL") or shutil.which("kubectl")
        if not kubectl:
            raise CliError(
                "kubectl not found for the port-forward to the operator: "
                "install kubectl, or pass --operator-url (or set NBKUBE_OPERATOR_URL)"
            )
        argv = [kubectl]
        if self.cluster.kubeconfig:
            argv.append(f"--kubeconfig={self.cluster.kubeconfig}")
        if self.cluster.context:
            argv.append(f"--context={self.cluster.context}")
        argv += [
            "port-forward",
            "--address=127.0.0.1",
            f"--namespace={self.namespace}",
            f"svc/{self.service}",
            f":{RESULTS_PORT}",
        ]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=_pump, args=(self.process.stdout, lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(self.process.stderr, self._keep_stderr), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=PORT_FORWARD_TIMEOUT)
            except queue.Empty:
                self.stop()
                raise self._failure(f"no answer in {PORT_FORWARD_TIMEOUT:.0f}s") from None
            if line is None:
                self.process.wait(10)
                raise self._failure("; ".join(self._stderr[-3:]) or f"exit code {self.process.returncode}")
            port = parse_forwarding_line(line)
            if port is not None:
                self.port = port
                return port

    def _keep_stderr(self, line: str | None) -> None:
        if line and line.strip():
            self._stderr.append(line.strip())

    def _failure(self, detail: str) -> CliError:
        return CliError(
            f"kubectl port-forward to svc/{self.service} in namespace {self.namespace} failed ({detail}): "
            "pass --operator-url (or set NBKUBE_OPERATOR_URL), or --operator-namespace/--results-service"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _pump(stream: IO[str], sink: Callable[[str | None], object]) -> None:
    """Reads a pipe to its end (so kubectl never blocks on a full pipe), then signals None."""
    for line in stream:
        sink(line)
    sink(None)


class OperatorHttp:
    """A context manager giving the operator's HTTP base URL (starting a port-forward if needed)."""

    def __init__(self, args: argparse.Namespace, cluster: ClusterOptions) -> None:
        self.url: str | None = args.operator_url
        self.forward = (
            None if self.url else PortForward(cluster, args.operator_namespace, args.results_service)
        )

    def __enter__(self) -> OperatorHttp:
        if self.forward is not None:
            self.url = f"http://127.0.0.1:{self.forward.start()}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.forward is not None:
            self.forward.stop()

    @property
    def base(self) -> str:
        assert self.url is not None
        return self.url.rstrip("/")

    def open(
        self, path: str, query: dict[str, str] | None = None, stream: bool = False
    ) -> http.client.HTTPResponse:
        """GETs base+path; raises CliError for an unreachable operator or an error status."""
        url = urlsplit(self.base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise CliError(f"invalid operator URL {self.base!r}: expected http://host:port")
        target = url.path + quote(path) + (f"?{urlencode(query)}" if query else "")
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
            if stream and conn.sock is not None:
                conn.sock.settimeout(None)  # a cell may run for hours without output
            conn.request("GET", target)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise CliError(
                f"cannot reach the nbkube operator at {self.base} ({reason}): "
                "check --operator-url / NBKUBE_OPERATOR_URL"
            ) from None
        if response.status >= 400:
            body = response.read().decode(errors="replace").strip()
            conn.close()
            raise HttpError(response.status, body or response.reason)
        return response

    def get(self, path: str, query: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
        response = self.open(path, query)
        try:
            return response.read(), dict(response.getheaders())
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"reading {path} from the nbkube operator at {self.base} failed: {exc}") from None
        finally:
            response.close()

    def lines(self, path: str, query: dict[str, str] | None = None) -> Iterator[bytes]:
        response = self.open(path, query, stream=True)
        try:
            yield from response
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"the stream from the nbkube operator at {self.base} broke: {exc}") from None
        finally:
            response.close()


class HttpError(CliError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"the nbkube operator answered {status}: {body.splitlines()[0] if body else ''}")
        self.status = status
        self.body = body

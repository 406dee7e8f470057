"""Readiness and liveness probes (httpGet, tcpSocket, exec) against the pod's address."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import log

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.container import Container


class Probe:
    """One readiness or liveness probe with its thresholds."""

    def __init__(self, spec: dict[str, Any], container: Container):
        self.spec = spec
        self.container = container
        self.period = spec.get("periodSeconds", 10)
        self.timeout = spec.get("timeoutSeconds", 1)
        self.success_threshold = spec.get("successThreshold", 1)
        self.failure_threshold = spec.get("failureThreshold", 3)
        self.reset()

    def reset(self) -> None:
        self.next_at = time.monotonic() + self.spec.get("initialDelaySeconds", 0)
        self.successes = 0
        self.failures = 0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def run(self) -> bool | None:
        """Probes once; returns the new verdict when a threshold was crossed, else None."""
        self.next_at = time.monotonic() + self.period
        ok = self._check()
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            return True if self.successes >= self.success_threshold else None
        self.successes, self.failures = 0, self.failures + 1
        return False if self.failures >= self.failure_threshold else None

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.container.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no container port named {port}")

    def _check(self) -> bool:
        pod_ip = self.container.worker.ip
        try:
            if "httpGet" in self.spec:
                return self._http_get(self.spec["httpGet"], pod_ip)
            if "tcpSocket" in self.spec:
                ts = self.spec["tcpSocket"]
                with socket.create_connection(
                    (ts.get("host") or pod_ip, self._port(ts["port"])), self.timeout
                ):
                    return True
            if "exec" in self.spec:
                done = subprocess.run(
                    self.spec["exec"]["command"],
                    env=self.container.env,
                    cwd=self.container.cwd,
                    capture_output=True,
                    timeout=self.timeout,
                    check=False,
                )
                return done.returncode == 0
        except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException):
            return False
        log.warning("unsupported probe %s in %s", list(self.spec), self.container.worker.key)
        return False

    def _http_get(self, hg: dict[str, Any], pod_ip: str) -> bool:
        host = hg.get("host") or pod_ip
        port = self._port(hg["port"])
        if hg.get("scheme", "HTTP").upper() == "HTTPS":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders", [])}
            conn.request("GET", hg.get("path", "/"), headers=headers)
            return 200 <= conn.getresponse().status < 400
        finally:
            conn.close()

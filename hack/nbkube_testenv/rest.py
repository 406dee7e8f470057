"""A minimal thread-safe JSON client for the Kubernetes API (urllib3, client-certificate auth), used by
the node agent: plain dicts in and out, and a line-by-line watch stream."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body


class TransportError(OSError):
    """The API server could not be reached or the connection broke."""


class Rest:
    def __init__(self, kubeconfig: str | Path):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"].rstrip("/")
        self._tmp = tempfile.TemporaryDirectory(prefix="nbkube-rest-")
        files = {}
        for key, field in (
            ("ca", "certificate-authority"),
            ("cert", "client-certificate"),
            ("key", "client-key"),
        ):
            src = cluster if key == "ca" else user
            if f"{field}-data" in src:
                p = Path(self._tmp.name) / key
                p.write_bytes(base64.b64decode(src[f"{field}-data"]))
                files[key] = str(p)
            elif field in src:
                files[key] = src[field]
        self._headers = {"Accept": "application/json"}
        if "token" in user:
            self._headers["Authorization"] = f"Bearer {user['token']}"
        self._http = urllib3.PoolManager(
            maxsize=16,
            ca_certs=files.get("ca"),
            cert_reqs="CERT_REQUIRED",
            cert_file=files.get("cert"),
            key_file=files.get("key"),
            retries=False,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = self.server + path
        if params:
            url += ("&" if "?" in path else "?") + urlencode(params)
        try:
            resp = self._http.request(
                method, url, body=data, headers=headers, timeout=urllib3.Timeout(connect=10, read=timeout)
            )
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"{method} {path}: {e}") from e
        try:
            out = json.loads(resp.data) if resp.data else {}
        except ValueError:
            out = {"message": resp.data.decode(errors="replace")}
        if resp.status >= 400:
            raise ApiError(resp.status, out)
        return out

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """Yields watch events ({type, object}) until the server ends the watch."""
        sep = "&" if "?" in path else "?"
        url = (
            f"{self.server}{path}{sep}watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={resource_version}&timeoutSeconds={timeout_seconds}"
        )
        try:
            resp = self._http.request(
                "GET",
                url,
                headers=self._headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 30),
            )
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"watch {path}: {e}") from e
        try:
            if resp.status >= 400:
                data = resp.read()
                raise ApiError(resp.status, json.loads(data) if data else {})
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()

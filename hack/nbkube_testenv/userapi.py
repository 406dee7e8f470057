"""A user of nbkube's user-facing API, as tests need one: requests through the API server with a
kubeconfig's own credentials (a client certificate or a bearer token), and `git` configured the same way.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from nbkube.userapi import paths

from nbkube_testenv.cluster import ClusterInfo


@dataclass
class ApiUser:
    server: str
    ca_file: Path
    token: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> ApiUser:
        """The current context's user; embedded certificates are written beside the kubeconfig."""
        cfg = json.loads(Path(kubeconfig).read_text())
        context = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == context["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == context["user"])["user"]
        base = Path(kubeconfig)

        def written(key: str, suffix: str) -> Path | None:
            if f"{key}-data" in user or f"{key}-data" in cluster:
                data = base64.b64decode(user.get(f"{key}-data") or cluster[f"{key}-data"])
                out = base.with_name(f"{base.name}.{suffix}")
                out.write_bytes(data)
                out.chmod(0o600)
                return out
            value = user.get(key) or cluster.get(key)
            return Path(value) if value else None

        ca = written("certificate-authority", "ca.crt")
        assert ca is not None
        return cls(
            server=cluster["server"],
            ca_file=ca,
            token=user.get("token"),
            cert_file=written("client-certificate", "crt"),
            key_file=written("client-key", "key"),
        )

    @classmethod
    def admin(cls, info: ClusterInfo) -> ApiUser:
        return cls.from_kubeconfig(info.kubeconfig)

    @classmethod
    def anonymous(cls, info: ClusterInfo) -> ApiUser:
        return cls(server=info.server, ca_file=info.ca_file)

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context

    def open(
        self,
        path: str,
        query: dict[str, str] | None = None,
        *,
        method: str = "GET",
        data: bytes | None = None,
        timeout: float = 60,
    ) -> Any:
        """The response (a file-like object with .status), for any status."""
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        # A body goes chunked, as nbkube's clients send it (nbkube.cli.userapi._post_chunked says why).
        body = None if data is None else iter([data])
        request = urllib.request.Request(url, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout, context=self._context())
        except urllib.error.HTTPError as exc:
            return exc

    def get(self, path: str, query: dict[str, str] | None = None) -> tuple[int, bytes]:
        with self.open(path, query) as response:
            return response.status, response.read()

    def file(self, namespace: str, path: str, ref: str | None = None) -> tuple[int, bytes]:
        return self.get(paths.file_path(namespace, path), {"ref": ref} if ref else None)

    def log_events(self, namespace: str, run: str, follow: bool = False) -> Iterator[dict[str, Any]]:
        query = {"follow": "true"} if follow else None
        with self.open(paths.run_log_path(namespace, run), query, timeout=300) as response:
            if response.status != 200:
                raise AssertionError(f"log of {namespace}/{run}: {response.status} {response.read()[:300]!r}")
            for line in response:
                if line.strip():
                    yield json.loads(line)

    def session(
        self,
        namespace: str,
        name: str,
        sub: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """A session's read (no body: GET) or operation (POST of `body`); (status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if body is None else "POST"
        with self.open(
            paths.session_path(namespace, name, sub), query, method=method, data=data, timeout=300
        ) as r:
            raw = r.read()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw.decode(errors="replace")

    def session_execute(self, namespace: str, name: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """An execution's events as they come (the last is its result or error); AssertionError unless 200."""
        data = json.dumps(body).encode()
        path = paths.session_path(namespace, name, paths.SESSION_EXEC)
        with self.open(path, method="POST", data=data, timeout=300) as response:
            if response.status != 200:
                raise AssertionError(
                    f"execute in {namespace}/{name}: {response.status} {response.read()[:300]!r}"
                )
            for line in response:
                if line.strip():
                    yield json.loads(line)

    def repository_url(self, namespace: str) -> str:
        return self.server + paths.repository_path(namespace, "git")

    def git_options(self) -> list[str]:
        options = ["-c", f"http.sslCAInfo={self.ca_file}"]
        if self.cert_file:
            options += ["-c", f"http.sslCert={self.cert_file}", "-c", f"http.sslKey={self.key_file}"]
        if self.token:
            options += ["-c", f"http.extraHeader=Authorization: Bearer {self.token}"]
        return options

    def git(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *self.git_options(), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin", "HOME": str(self.ca_file.parent)},
        )

    def clone(self, namespace: str, dest: Path) -> subprocess.CompletedProcess[str]:
        return self.git("clone", "-q", self.repository_url(namespace), str(dest))

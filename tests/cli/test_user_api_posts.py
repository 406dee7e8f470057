"""The CLI's (and `nbkube mcp`'s) POSTs to the user API send their JSON body chunked, never with a
Content-Length: kube-apiserver's proxy can otherwise cut a streamed answer short (see
nbkube.cli.userapi._post_chunked, golang/go#40747). Checked on the wire, against a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions
from nbkube.cli.sessionops import SessionApi
from nbkube.userapi import paths


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        events = [{"type": "cell", "id": "c0"}, {"type": "result", "result": {"operation": "execute"}}]
        if self.path.endswith("/exec"):
            payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        else:
            payload = json.dumps({"operation": "edit", "head": "abc"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[SessionApi, list[dict[str, Any]]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}],
                "current-context": "x",
            }
        )
    )
    kube = ClusterClient(ClusterOptions(str(kubeconfig), None, None))
    try:
        yield SessionApi(kube, "s1"), _Recorder.seen
    finally:
        kube.close()
        server.shutdown()
        server.server_close()


def test_an_execution_and_an_operation_post_their_bodies_chunked_with_the_callers_token(
    api: tuple[SessionApi, list[dict[str, Any]]],
) -> None:
    session, seen = api
    events = list(session.execute({"cellIds": ["c0"]}))
    assert [e["type"] for e in events] == ["cell", "result"]
    assert session.operate("edit", {"mode": "insert", "source": "1"})["head"] == "abc"

    assert [s["path"].rsplit("/", 1)[-1] for s in seen] == ["exec", "edit"]
    for request in seen:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers.get("transfer-encoding") == "chunked", headers
        assert "content-length" not in headers, headers
        assert headers["authorization"] == "Bearer t0ken"
        assert headers["content-type"] == "application/json"
    assert seen[0]["body"] == {"cellIds": ["c0"]}
    assert seen[1]["body"] == {"mode": "insert", "source": "1"}
    assert seen[0]["path"] == paths.session_path("team-a", "s1", paths.SESSION_EXEC)

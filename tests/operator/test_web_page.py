"""Looking at results: a notebook rendered as HTML and the read-only web page, through the API server.

Real users (ServiceAccount tokens bound to `view` in one namespace each), the real aggregated API, the
operator, and a real headless Chromium (from the Debian packages: hack/install-chromium.sh) driving the
page served through `nbkube ui`, over the DevTools protocol. Waits are on the page's DOM (a
MutationObserver in the page) and on a gate the running cell waits for, never on sleeps.

The README's screenshots are this test's: `NBKUBE_SCREENSHOT_DIR=docs pytest tests/operator/test_web_page.py`
writes docs/ui-runs.png and docs/ui-notebook.png. Without Chromium (and no way to install it: not root,
no apt-get) the browser test skips saying so; CI installs it first (.ci/run), so there it runs.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run, wait_run_finished
from nbkube.results.render import CONTENT_SECURITY_POLICY
from nbkube.userapi import paths
from nbkube_testenv import browser
from nbkube_testenv import pki as pki_mod
from nbkube_testenv.hostile_notebooks import HOSTILE_HTML, MARKER, parse, png_images
from nbkube_testenv.userapi import ApiUser
from run_inputs_helpers import Gate, png

IMAGE = png(48, 32, (37, 99, 235))
RECORD_SCORE = """\
from IPython.display import display
display({"application/scrapbook.scrap.json+json":
         {"name": "score", "data": alpha * seed, "encoder": "json", "version": 1}}, raw=True)"""
PNG_CELL = (
    "import base64\nfrom IPython.display import Image, display\n"
    f"display(Image(data=base64.b64decode({base64.b64encode(IMAGE).decode()!r})))"
)
HOSTILE_CELL = f"from IPython.display import HTML, display\ndisplay(HTML({HOSTILE_HTML!r}))"
SCREENSHOTS = os.environ.get("NBKUBE_SCREENSHOT_DIR")
"""Where the browser test also writes docs/ui-runs.png and docs/ui-notebook.png (e.g. `docs`)."""


@pytest.fixture(scope="module")
def users(
    _session_kubectl: Any, cluster: Any, env_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A viewer of the test's namespace, a viewer of another namespace, and their kubeconfigs."""
    kubectl = _session_kubectl
    other = f"other-{secrets.token_hex(3)}"
    kubectl("create", "namespace", other)
    workdir = tmp_path_factory.mktemp("page-users")
    kubeconfigs = {}
    for key, namespace in (("viewer", env_namespace), ("outsider", other)):
        kubectl("create", "serviceaccount", key, namespace=namespace)
        kubectl(
            "create",
            "rolebinding",
            key,
            "--clusterrole=view",
            f"--serviceaccount={namespace}:{key}",
            namespace=namespace,
        )
        kubeconfigs[key] = cluster.service_account_kubeconfig(namespace, key, workdir / f"{key}.kubeconfig")
    yield {
        "namespace": env_namespace,
        "other": other,
        "kubeconfigs": kubeconfigs,
        "viewer": ApiUser.from_kubeconfig(kubeconfigs["viewer"]),
        "outsider": ApiUser.from_kubeconfig(kubeconfigs["outsider"]),
        "workdir": workdir,
    }
    kubectl("delete", "namespace", other, "--wait=false", check=False)


def cli(kubeconfig: Path, cwd: Path, *commands: list[str]) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each `nbkube` command, run at once as the kubeconfig's user."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "nbkube.cli", *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = [p.communicate(timeout=120) for p in started]
    return [(p.returncode, *output) for p, output in zip(started, outputs, strict=True)]


def test_a_notebook_as_html_and_the_page_reach_viewers_of_their_namespace_only(
    _session_kubectl: Any, users: dict[str, Any], cluster: Any, operator: Any, tmp_path: Path
) -> None:
    ns = users["namespace"]
    _session_kubectl.apply(run("plain", [PNG_CELL, HOSTILE_CELL]), namespace=ns)
    finished = wait_run_finished(_session_kubectl, ns, "plain")
    assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"])
    result = finished["status"]["result"]
    viewer: ApiUser = users["viewer"]

    with viewer.open(paths.html_path(ns, result["path"]), {"ref": result["commit"]}) as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.read().decode()
    assert png_images(page) == [IMAGE]
    assert "script" not in {tag for tag, _ in parse(page).elements}
    with viewer.open(paths.ui_path(ns)) as response:
        assert response.status == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert b'<script src="app.js">' in response.read()
    assert viewer.get(paths.ui_path(ns) + "app.js")[0] == 200

    # A viewer of another namespace is refused both, whether the notebook exists or not.
    outsider: ApiUser = users["outsider"]
    for path, query in (
        (paths.html_path(ns, result["path"]), {"ref": result["commit"]}),
        (paths.html_path(ns, f"{ns}/no-such-run/x.ipynb"), None),
        (paths.ui_path(ns), None),
        (paths.ui_path(ns) + "app.js", None),
    ):
        status, body = outsider.get(path, query)
        assert status == 403, (path, status, body[:200])
        assert IMAGE not in body and base64.b64encode(IMAGE) not in body
    assert outsider.get(paths.ui_path(users["other"]))[0] == 200  # its own namespace's page it gets

    # Nobody: the API server refuses an anonymous caller (403: anonymous auth on, RBAC says no), and the
    # operator itself refuses a caller it cannot name (401), even from the front proxy's certificate.
    status, body = ApiUser.anonymous(cluster).get(
        paths.html_path(ns, result["path"]), {"ref": result["commit"]}
    )
    assert status in (401, 403) and base64.b64encode(IMAGE) not in body
    pki = pki_mod.Pki(cluster.dir / "pki")
    context = ssl.create_default_context(cafile=str(operator.data_dir / "tls" / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(pki.front_proxy_client_crt), str(pki.front_proxy_client_key))
    connection = http.client.HTTPSConnection("127.0.0.1", operator.api_port, context=context, timeout=30)
    try:
        connection.request("GET", paths.html_path(ns, result["path"]))
        answer = connection.getresponse()
        assert answer.status == 401 and json.loads(answer.read())["reason"] == "Unauthorized"
    finally:
        connection.close()

    # `nbkube fetch --html`, as the viewer: the final result, the same at a commit given by id, and a
    # revision expression refused with the reason.
    out = tmp_path / "at-commit.html"
    (code, stdout, stderr), (code_at, _, stderr_at), (code_bad, _, stderr_bad) = cli(
        users["kubeconfigs"]["viewer"],
        tmp_path,
        ["fetch", "plain", "--html", "-n", ns],
        ["fetch", "plain", "--html", "--ref", result["commit"], "-o", str(out), "-n", ns],
        ["fetch", "plain", "--html", "--ref", "HEAD~1", "-n", ns],
    )
    assert code == 0, stderr
    assert "wrote plain.html" in stdout and result["commit"] in stdout
    assert png_images((tmp_path / "plain.html").read_text()) == [IMAGE]
    assert code_at == 0, stderr_at
    assert out.read_text() == (tmp_path / "plain.html").read_text()
    assert code_bad == 1 and "full commit id or a branch name" in stderr_bad, stderr_bad


class UiProcess:
    """`nbkube ui` as a user runs it, on a free loopback port."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nbkube.cli", "ui", "--port", "0", "-n", namespace],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until it listens (or exits)
        if not line.startswith("nbkube ui: http://127.0.0.1:"):
            self.proc.kill()
            raise AssertionError(
                f"nbkube ui printed {line!r}: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.url = line.split(": ", 1)[1].strip()
        self.port = int(self.url.split(":")[2].split("/")[0])

    def request(self, method: str, path: str, host: str | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def chromium() -> str:
    try:
        return browser.chromium_path()
    except browser.NoBrowser as exc:
        pytest.skip(f"no Chromium for the browser test, and it could not be installed: {exc}")


CELL_STATE = (
    "(document.querySelector('#cells tr[data-cell-index=\"{i}\"]') || {{dataset: {{}}}}).dataset.state"
)


async def test_the_page_shows_a_running_runs_progress_change_and_its_finished_notebooks_png(
    _session_kubectl: Any, users: dict[str, Any], chromium: str, tmp_path: Path
) -> None:
    kubectl = _session_kubectl
    ns = users["namespace"]
    gate = Gate()
    ui = UiProcess(users["kubeconfigs"]["viewer"], ns)
    try:
        kubectl.apply(run("plot", ["print('first cell')", gate.cell, PNG_CELL, HOSTILE_CELL]), namespace=ns)
        kubectl.apply(
            run("sweep", [RECORD_SCORE], parameters={"alpha": 0.5}, matrix={"seed": [1, 2]}),
            namespace=ns,
        )
        # The proxy forwards reads of nbkube only, for its own loopback host name only.
        assert ui.request("GET", paths.ui_path(ns), host=f"rebound.example:{ui.port}")[0] == 403
        assert ui.request("POST", paths.ui_path(ns))[0] == 405
        assert ui.request("GET", "/api/v1/namespaces/kube-system/secrets")[0] == 404
        assert ui.request("GET", "/")[0] == 302

        async with browser.headless_chromium(tmp_path / "chromium") as tab:
            await tab.navigate(ui.url)
            row = "document.querySelector('#runs tr[data-run=\"plot\"]')"
            running = await tab.wait_for(
                f"{row} && {row}.dataset.state === 'Running' && "
                f"{row}.querySelector('.progress').dataset.progress",
                "the run listed as running",
            )
            assert running == "1/4"  # the first cell done, the second waiting on the gate
            sweep = "document.querySelector('#runs tr[data-run=\"sweep\"]')"
            await tab.wait_for(f"{sweep} && {sweep}.dataset.state === 'Succeeded'", "the sweep listed, done")
            assert await tab.evaluate(f"{sweep}.querySelector('.progress').dataset.progress") == "2/2 runs"
            assert (
                await tab.evaluate("document.querySelectorAll('#runs tr[data-run^=\"sweep-\"]').length") == 0
            )
            await _screenshot(tab, "ui-runs.png", tmp_path)

            # A sweep's page lists its children with their parameters and states.
            await tab.evaluate("location.hash = '#run/sweep'")
            children = await tab.wait_for(
                "document.querySelectorAll('#children tr[data-state=\"Succeeded\"]').length === 2 && "
                "[...document.querySelectorAll('#children tbody tr')]"
                ".map(r => r.cells[1].textContent).join(';')",
                "the sweep's two children, succeeded",
            )
            assert children == "seed=1;seed=2"
            # ... and its table of recorded values, and their plot against the parameter
            table = await tab.wait_for(
                "document.querySelectorAll('#sweep-table tbody tr').length === 2 && "
                "[...document.querySelectorAll('#sweep-table tbody tr')]"
                ".map(r => [...r.cells].slice(1).map(c => c.textContent).join(',')).join(';')",
                "the sweep's table",
            )
            assert [row.split(",")[:2] + row.split(",")[3:] for row in table.split(";")] == [
                ["1", "Succeeded", "0.5"],
                ["2", "Succeeded", "1"],
            ], table
            dots = await tab.evaluate(
                "[...document.querySelectorAll('#sweep-plot circle')]"
                ".map(c => c.dataset.x + ':' + c.dataset.y).join(';')"
            )
            assert dots == "1:0.5;2:1"
            await _screenshot(tab, "ui-sweep.png", tmp_path)
            assert await tab.evaluate("document.querySelector('#cells-section').hidden") is True

            await tab.evaluate("location.hash = '#run/plot'")
            await tab.wait_for(
                f"{CELL_STATE.format(i=0)} === 'succeeded' && {CELL_STATE.format(i=1)} === 'running'",
                "cell 1 running in the cell table",
            )
            assert await tab.evaluate("document.querySelector('#run-progress').dataset.progress") == "1/4"
            assert await tab.evaluate("document.querySelector('#sweep').hidden") is True
            await asyncio.to_thread(gate.open)
            await tab.wait_for(
                "document.querySelector('#run-view').dataset.state === 'Succeeded' && "
                "document.querySelector('#run-progress').dataset.progress === '4/4' && "
                f"{CELL_STATE.format(i=3)} === 'succeeded'",
                "the run shown finished, all four cells done",
                timeout=120,
            )
            final = wait_run_finished(kubectl, ns, "plot")
            result = final["status"]["result"]
            loaded = await tab.wait_for(
                "document.querySelector('#notebook').dataset.loaded",
                "the rendered notebook loaded in its frame",
            )
            assert loaded == result["commit"]
            assert await tab.evaluate("document.querySelector('#notebook').getAttribute('sandbox')") == ""
            await tab.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": False},
            )
            await _screenshot(tab, "ui-notebook.png", tmp_path)

            # The rendered notebook itself, opened as its link opens it: the PNG is an <img> whose data:
            # URI decodes to the very bytes the cell displayed, and the cell's <script> did not run.
            html_url = await tab.evaluate("document.querySelector('#notebook-open').href")
            assert html_url.startswith(
                f"http://127.0.0.1:{ui.port}{paths.html_path(ns, result['path'])}?ref="
            )
            await tab.navigate(html_url)
            document = await tab.document()
            images = [
                a["src"] for a in browser.elements(document, "img") if a.get("src", "").startswith("data:")
            ]
            assert [base64.b64decode(src.split(",", 1)[1]) for src in images] == [IMAGE]
            titles = [browser.text_of(t) for t in _nodes(document, "title")]
            assert titles == [f"{result['path']} at {result['commit'][:12]}"]  # not the script's MARKER
            assert not [e for e in browser.elements(document, "p") if e.get("id") == MARKER]
            assert browser.elements(document, "script") == []
            assert "bold survives" in json.dumps(document)
    finally:
        gate.close()
        ui.stop()
        kubectl("delete", "nbrun", "plot", "sweep", "--wait=false", namespace=ns, check=False)


def _nodes(node: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found = [node] if node.get("nodeName", "").lower() == name else []
    for child in node.get("children") or []:
        found += _nodes(child, name)
    return found


async def _screenshot(tab: browser.Tab, name: str, tmp_path: Path) -> None:
    data = await tab.screenshot()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    for directory in (tmp_path, *([Path(SCREENSHOTS)] if SCREENSHOTS else [])):
        await asyncio.to_thread(_write, directory / name, data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol (CDP) on its websocket.

The browser comes from the machine's Debian packages (`hack/install-chromium.sh`); no browser download,
no driver: CDP is JSON over one websocket (aiohttp's client). Waits are on conditions the page reaches
(a MutationObserver in the page resolves a promise; CDP events), never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "hack" / "install-chromium.sh"


class NoBrowser(RuntimeError):
    """Chromium is not installed and could not be installed here (the message says why)."""


def chromium_path() -> str:
    """The browser's path, installing it from the Debian packages first if it is missing."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        if not os.access(configured, os.X_OK):
            raise NoBrowser(f"CHROMIUM={configured} is not an executable")
        return configured
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    done = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise NoBrowser(f"hack/install-chromium.sh failed: {done.stderr.strip()[-600:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Tab:
    """One page target of the browser, over its own websocket."""

    ws: aiohttp.ClientWebSocketResponse
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _listeners: list[tuple[str, asyncio.Queue[dict[str, Any]]]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                for method, queue in self._listeners:
                    if method == data.get("method"):
                        queue.put_nowait(data.get("params") or {})
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed the DevTools connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params or {}}))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result") or {}

    def listen(self, method: str) -> asyncio.Queue[dict[str, Any]]:
        """Events of `method` from now on (register before what causes them)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.append((method, queue))
        return queue

    async def navigate(self, url: str, timeout: float = 60) -> None:
        """Goes to `url` and returns once its load event fired."""
        loaded = self.listen("Page.loadEventFired")
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {answer['errorText']}")
        await asyncio.wait_for(loaded.get(), timeout)

    async def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout + 5,
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise AssertionError(f"{(details.get('exception') or {}).get('description') or details}")
        return (answer.get("result") or {}).get("value")

    async def wait_for(self, condition: str, what: str, timeout: float = 60) -> Any:
        """Waits until the JavaScript expression `condition` is truthy in the page, checking it at each
        change of the DOM (a MutationObserver), and returns its value."""
        script = f"""new Promise((resolve, reject) => {{
  const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }};
  const now = check();
  if (now) {{ resolve(now); return; }}
  const observer = new MutationObserver(() => {{
    const value = check();
    if (value) {{ observer.disconnect(); clearTimeout(timer); resolve(value); }}
  }});
  const timer = setTimeout(
    () => {{ observer.disconnect(); reject(new Error("timed out")); }}, {timeout * 1000});
  observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
}})"""
        try:
            return await self.evaluate(script, timeout=timeout)
        except AssertionError as exc:
            text = await self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
            raise AssertionError(f"{what}: {exc}; the page shows:\n{text}") from None

    async def screenshot(self) -> bytes:
        """The page as the viewport shows it, as PNG bytes."""
        return base64.b64decode((await self.send("Page.captureScreenshot", {"format": "png"}))["data"])

    async def document(self) -> dict[str, Any]:
        """The whole DOM tree of the page (the DOM domain: needs no script in the page)."""
        return (await self.send("DOM.getDocument", {"depth": -1, "pierce": True}))["root"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.ws.close()


def elements(node: dict[str, Any], name: str) -> list[dict[str, str]]:
    """The attributes of every element called `name` in a DOM.getDocument tree (frames included)."""
    found = []
    if node.get("nodeName", "").lower() == name:
        values = node.get("attributes") or []
        found.append(dict(zip(values[::2], values[1::2], strict=True)))
    for child in [
        *(node.get("children") or []),
        *([node["contentDocument"]] if "contentDocument" in node else []),
    ]:
        found += elements(child, name)
    return found


def text_of(node: dict[str, Any]) -> str:
    out = [node.get("nodeValue", "")] if node.get("nodeType") == 3 else []
    for child in node.get("children") or []:
        out.append(text_of(child))
    return "".join(out)


@contextlib.asynccontextmanager
async def headless_chromium(workdir: Path, width: int = 1280, height: int = 900) -> AsyncIterator[Tab]:
    """A fresh headless Chromium (its own profile under `workdir`) and its first tab."""
    binary = await asyncio.to_thread(chromium_path)
    argv = [
        binary,
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers; the page under test is ours
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={workdir / 'profile'}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert proc.stderr is not None
    said: list[bytes] = []
    try:
        port = await asyncio.wait_for(_devtools_port(proc.stderr, said), 60)
        drain = asyncio.create_task(_drain(proc.stderr, said))  # a full pipe would stall the browser
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t.get("type") == "page")
            ws = await http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=256 * 1024 * 1024)
            tab = Tab(ws)
            tab.start()
            try:
                for domain in ("Page", "Runtime", "DOM"):
                    await tab.send(f"{domain}.enable")
                await tab.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
                yield tab
            finally:
                await tab.close()
                drain.cancel()
    except (TimeoutError, EOFError) as exc:
        tail = b"".join(said)[-800:].decode(errors="replace")
        raise NoBrowser(f"chromium gave no DevTools address ({type(exc).__name__}): {tail}") from None
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _devtools_port(stderr: asyncio.StreamReader, said: list[bytes]) -> int:
    """The DevTools port Chromium chose, from the line it prints once it listens."""
    pattern = re.compile(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/")
    while line := await stderr.readline():
        said.append(line)
        found = pattern.search(line)
        if found:
            return int(found.group(1))
    raise EOFError("chromium exited")


async def _drain(stderr: asyncio.StreamReader, said: list[bytes]) -> None:
    while line := await stderr.readline():
        said.append(line)
        del said[:-50]

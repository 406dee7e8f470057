"""Start a Kernel Gateway as a local process (tests, benchmarks, demos). Stdlib only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalGateway:
    """A gateway subprocess in its own process group, on a free loopback port.

    `tuned=True` runs `python -m nbkube.gateway`; `tuned=False` runs the gateway as shipped
    (`python -m kernel_gateway`, with only listing enabled so kernels can be found).
    """

    def __init__(
        self,
        token: str,
        *,
        tuned: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.token = token
        self.tuned = tuned
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="kg-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        module = "nbkube.gateway" if self.tuned else "kernel_gateway"
        args = [sys.executable, "-m", module, f"--ip={self.host}", f"--port={self.port}"]
        if not self.tuned:
            args += ["--JupyterWebsocketPersonality.list_kernels=True", "--KernelGatewayApp.port_retries=0"]
        return args + self.extra_args

    def start(self, timeout: float = 60.0) -> LocalGateway:
        # Kernels started from a test run would see PYTEST_CURRENT_TEST and not capture fd 1 and 2, as no
        # real gateway pod does.
        inherited = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        env = {**inherited, "KG_AUTH_TOKEN": self.token, **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(f"{self.url}/api", headers={"Authorization": f"token {self.token}"})
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    json.load(response)
                    return
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway not ready after {timeout}s: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the gateway and its kernels)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Kernels live in the same group; make sure none outlives its gateway.
        self.kill(signal.SIGKILL)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

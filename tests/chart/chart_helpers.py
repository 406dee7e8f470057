"""Running helm against the chart, and reading what it renders."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nbkube"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"


def run_helm(
    helm: Path, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(
            f"`helm {' '.join(args)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def template(
    helm: Path,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    release: str = "nbkube",
    namespace: str = "nbkube",
) -> list[dict[str, Any]]:
    """`helm template` of the chart, as a list of objects."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args).stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def run_state(kubectl: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The NotebookRun once it has finished (Succeeded, Failed or Cancelled), else None."""
    done = kubectl("get", "nbrun", name, "-o", "json", namespace=namespace, check=False)
    if done.returncode != 0:
        return None
    obj = json.loads(done.stdout)
    state = (obj.get("status") or {}).get("state")
    return obj if state in ("Succeeded", "Failed", "Cancelled") else None


def environment_ready(kubectl: Any, namespace: str, name: str) -> bool:
    done = kubectl("get", "nbenv", name, "-o", "json", namespace=namespace, check=False)
    if done.returncode != 0:
        return False
    conditions = (json.loads(done.stdout).get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

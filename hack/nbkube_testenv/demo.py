"""`make demo`: a real control plane, the operator, a NotebookRun executed, its results shown.

    python -m nbkube_testenv.demo [--dir .demo] [--keep]

Starts the local cluster, installs the CRDs and the operator's RBAC, runs the operator under its
ServiceAccount, applies examples/environment.yaml, the analysis notebook as a ConfigMap and
examples/run.yaml, waits for the run, prints `kubectl get`/per-cell tables and fetches the executed
notebook from the results repository. Everything it started is stopped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nbformat

from nbkube_testenv import operator_process
from nbkube_testenv.cluster import ClusterError, LocalCluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NAMESPACE = "demo"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def kubectl(info: Any, *args: str, input: str | None = None, check: bool = True) -> str:
    return operator_process.kubectl(info, *args, input=input, check=check)


def wait_for_run(info: Any, name: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = json.loads(kubectl(info, "get", "nbrun", name, "-n", NAMESPACE, "-o", "json"))
        status = obj.get("status") or {}
        state, progress = status.get("state", "Pending"), status.get("progress") or ""
        line = f"   {state:10} {progress:8} {status.get('message') or ''}"
        if line != last:
            print(line, flush=True)
            last = line
        if status.get("state") in ("Succeeded", "Failed", "Cancelled"):
            return obj
        time.sleep(0.5)
    raise TimeoutError(f"NotebookRun {name} did not finish in {timeout}s")


def cell_table(status: dict[str, Any]) -> str:
    rows = [("CELL", "ID", "STATE", "EXEC", "MS", "OUTPUT")]
    for cell in status.get("cells", []):
        rows.append(
            (
                str(cell["index"]),
                cell["id"][:12],
                cell["state"],
                str(cell.get("executionCount") or ""),
                str(cell.get("durationMs") or ""),
                (cell.get("summary") or "")[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=REPO / ".demo")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and operator running")
    args = parser.parse_args(argv)
    workdir: Path = args.dir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(workdir / "cluster")
    operator = None
    try:
        say(
            "Starting the local control plane "
            "(etcd, kube-apiserver, controller-manager, scheduler, node agent)"
        )
        info = cluster.up()
        say(
            "Installing the CRDs and the operator's RBAC; "
            f"starting the operator as {operator_process.SERVICE_ACCOUNT}"
        )
        operator_process.install(info)
        operator = operator_process.OperatorProcess(info, workdir / "operator")
        operator.start()
        print(f"   operator log: {operator.log_path}")

        say("Applying examples/environment.yaml and waiting for its gateway pod")
        kubectl(info, "create", "namespace", NAMESPACE, check=False)
        kubectl(info, "apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "environment.yaml"))
        kubectl(info, "wait", "-n", NAMESPACE, "nbenv/py", "--for=condition=Ready", "--timeout=120s")
        print(kubectl(info, "get", "nbenv,pods", "-n", NAMESPACE))

        say("Creating the notebook ConfigMap and applying examples/run.yaml")
        manifest = kubectl(
            info,
            "create",
            "configmap",
            "analysis",
            "-n",
            NAMESPACE,
            "--dry-run=client",
            "-o",
            "json",
            f"--from-file={EXAMPLES / 'analysis.ipynb'}",
        )
        kubectl(info, "apply", "-n", NAMESPACE, "-f", "-", input=manifest)
        kubectl(info, "apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "run.yaml"))
        name = json.loads(
            kubectl(info, "get", "-f", str(EXAMPLES / "run.yaml"), "-n", NAMESPACE, "-o", "json")
        )
        name = name["metadata"]["name"] if "metadata" in name else name["items"][0]["metadata"]["name"]
        obj = wait_for_run(info, name)
        status = obj["status"]

        say("kubectl get nbrun")
        print(kubectl(info, "get", "nbrun", "-n", NAMESPACE, "-o", "wide"))
        say(f"Cells of {name}")
        print(cell_table(status))
        say(f"kubectl describe nbrun {name} (events)")
        describe = kubectl(info, "describe", "nbrun", name, "-n", NAMESPACE)
        print(describe[describe.find("Events:") :])

        result = status.get("result")
        if result:
            out = workdir / f"{name}.ipynb"
            url = f"{operator.results_url}/files/{result['path']}?ref={result['commit']}"
            with urllib.request.urlopen(url, timeout=30) as response:
                out.write_bytes(response.read())
            nb = nbformat.read(out, as_version=4)
            say("Results")
            print(f"   commit {result['commit']} path {result['path']}")
            print(f"   executed notebook ({len(nb.cells)} cells) saved to {out}")
            repo = operator.data_dir / "results" / f"{result['path'].split('/', 1)[0]}.git"
            print(f"   results repository of the namespace: {repo} (git log / git clone it)")
        if status.get("state") != "Succeeded":
            print(f"\nthe run ended {status.get('state')}: {status.get('message')}", file=sys.stderr)
            return 1
        if args.keep:
            say("Left running (--keep)")
            print(f"   export KUBECONFIG={info.kubeconfig}")
            print(
                f"   stop with: kill {operator.process.pid if operator.process else ''}; "
                f"python -m nbkube_testenv.cluster down --dir {cluster.dir}"
            )
        return 0
    except (ClusterError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if operator is not None:
            print(f"--- operator log tail ---\n{operator.log_tail(40)}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            say("Stopping the operator and the local control plane")
            if operator is not None:
                operator.stop()
            cluster.down(quiet=True)


if __name__ == "__main__":
    raise SystemExit(main())

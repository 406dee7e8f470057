"""Per-cell overhead of five ways to execute a notebook, side by side in one run (`make bench-engine`).

Paths: raw jupyter_client over ZMQ (the floor), nbclient, papermill, the Kernel Gateway as shipped
(driven by nbkube's engine), and nbkube's engine through nbkube's tuned gateway. The tuned gateway
also starts IPython kernels with batch options (nbkube.gateway.kernels: IPYKERNEL_BATCH_ARGUMENTS and
NBKUBE_KERNEL_ARGUMENTS), so one more path runs raw ZMQ on a kernel with those same options: nbkube
against it is the cost of the engine and gateway alone, with the kernel's own speed-up taken out.
Notebooks: 100 trivial cells, and 100 cells with real outputs (text every cell, a matplotlib PNG every 10th).

Each cell is timed by what it adds to the notebook: from the previous cell's completion (reply and
idle; for the first cell, from its request) to its own completion, so an executor's work between cells
counts, and so does nbkube's overlap of one cell's request with the previous cell's last messages. A
run reports its median cell (and mean); kernel start is outside. papermill cannot be timed per cell
(saving the notebook after every cell is part of its cost), so its figure is the marginal mean
(T(notebook) - T(one trivial cell)) / (cells - 1).
Each path runs on a fresh kernel per repetition; the table shows medians over repetitions. The last line
is one JSON object with the trivial notebook's per-cell medians in ms.

Environment: BENCH_REPEATS (default 5), BENCH_CELLS (default 100).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from nbkube.engine import CellState, GatewayClient, NotebookExecutor
from nbkube.gateway.kernels import IPYKERNEL_BATCH_ARGUMENTS, NBKUBE_KERNEL_ARGUMENTS
from nbkube.gateway.local import LocalGateway

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
CELLS = int(os.environ.get("BENCH_CELLS", "100"))
KERNEL = "python3"
# what the tuned gateway adds for IPython kernels run by its own Python (this one)
BATCH_KERNEL_ARGUMENTS = IPYKERNEL_BATCH_ARGUMENTS + NBKUBE_KERNEL_ARGUMENTS


def trivial_notebook(cells: int = CELLS) -> nbformat.NotebookNode:
    return kernel_notebook([f"x{i} = {i}" for i in range(cells)])


def outputs_notebook(cells: int = CELLS) -> nbformat.NotebookNode:
    sources = ["%matplotlib inline\nimport matplotlib.pyplot as plt\nprint('setup')"]
    for i in range(1, cells):
        if i % 10 == 0:
            sources.append(f"fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([0, {i}], [{i}, 0])\nplt.show()")
        else:
            sources.append(f"print('cell {i}', list(range({i % 7})))")
    return kernel_notebook(sources)


def kernel_notebook(sources: list[str]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def check_outputs(nb: nbformat.NotebookNode, path: str) -> None:
    """Every path must really produce the outputs (PNG included) for its number to count."""
    pngs = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    expected = sum(1 for c in nb.cells if "plt.show()" in c.source)
    if pngs != expected:
        raise RuntimeError(f"{path}: {pngs} PNG outputs, expected {expected}")


# -- the paths: each returns seconds spent executing the notebook's cells ---------------------------------


def run_raw_zmq(nb: nbformat.NotebookNode, kernel_arguments: tuple[str, ...] = ()) -> list[float]:
    """The floor: a BlockingKernelClient sending execute_request and reading iopub until idle and the
    shell reply (no event loop, no polling helpers)."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=KERNEL, extra_arguments=list(kernel_arguments))
    times: list[float] = []
    previous: float | None = None
    try:
        for cell in nb.cells:
            started = previous if previous is not None else time.perf_counter()
            msg_id = kc.execute(cell.source, stop_on_error=False)
            outputs: list[dict] = []
            while True:
                msg = kc.get_iopub_msg(timeout=600)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] in ("display_data", "execute_result"):
                    outputs.append({"output_type": msg["msg_type"], **msg["content"]})
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            while True:
                reply = kc.get_shell_msg(timeout=600)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"raw zmq: cell failed: {reply['content']}")
            cell.outputs = outputs
            previous = time.perf_counter()
            times.append(previous - started)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    check_outputs(nb, "raw zmq")
    return times


def run_nbclient(nb: nbformat.NotebookNode) -> float:
    from nbclient import NotebookClient

    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600)
    times: list[float] = []
    previous: float | None = None
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            started = previous if previous is not None else time.perf_counter()
            client.execute_cell(cell, index)
            previous = time.perf_counter()
            times.append(previous - started)
    check_outputs(nb, "nbclient")
    return times


def run_papermill(nb: nbformat.NotebookNode, tmp: Path) -> float:
    import papermill

    def once(notebook: nbformat.NotebookNode, name: str) -> float:
        source, target = tmp / f"{name}.ipynb", tmp / f"{name}.out.ipynb"
        nbformat.write(notebook, source)
        started = time.perf_counter()
        papermill.execute_notebook(
            str(source), str(target), kernel_name=KERNEL, progress_bar=False, log_output=False
        )
        elapsed = time.perf_counter() - started
        if name == "full":
            check_outputs(nbformat.read(target, as_version=4), "papermill")
        return elapsed

    before = once(trivial_notebook(1), "one")
    full = once(nb, "full")
    after = once(trivial_notebook(1), "one")
    # papermill cannot be timed per cell (its cost includes saving the notebook after each cell):
    # every cell gets the marginal mean. The one-cell base is the faster of a run before and after the
    # notebook: a first run can carry one-time costs (a fresh venv's bytecode) that made the marginal
    # mean of one repetition 0.55 ms.
    return [(full - min(before, after)) / (len(nb.cells) - 1)] * len(nb.cells)


async def run_gateway(url: str, token: str, nb: nbformat.NotebookNode) -> float:
    async with GatewayClient(url, token) as client:
        model = await client.start_kernel(KERNEL)
        connection = await client.connect(model["id"])
        try:
            await connection.kernel_info()
            times: list[float] = []
            first_start: list[float] = []
            ends: list[float] = []

            def on_cell_start(index: int, cell: object, msg_id: str) -> None:
                if not first_start:
                    first_start.append(time.perf_counter())

            def on_cell_end(index: int, cell_result: object) -> None:
                ends.append(time.perf_counter())
                times.append(ends[-1] - (ends[-2] if len(ends) > 1 else first_start[0]))

            executor = NotebookExecutor(connection, on_cell_start=on_cell_start, on_cell_end=on_cell_end)
            result = await executor.execute_notebook(nb)
        finally:
            await connection.close()
            await client.delete_kernel(model["id"])
    if result.state is not CellState.SUCCEEDED:
        raise RuntimeError(f"gateway run {result.state}: {result.cells[result.failed_index or 0]}")
    check_outputs(nb, "gateway")
    return times


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    token = secrets.token_hex(16)
    tmp = Path(tempfile.mkdtemp(prefix="nbkube-bench-"))
    print(f"bench-engine: {CELLS}-cell notebooks, {REPEATS} repetitions, fresh kernel per run", flush=True)
    stock = LocalGateway(token, tuned=False, log_path=tmp / "stock.log").start()
    tuned = LocalGateway(token, tuned=True, log_path=tmp / "tuned.log").start()
    paths: dict[str, Callable[[nbformat.NotebookNode], list[float]]] = {
        "raw_zmq": run_raw_zmq,
        "raw_zmq_batch_kernel": lambda nb: run_raw_zmq(nb, BATCH_KERNEL_ARGUMENTS),
        "nbclient": run_nbclient,
        "papermill": lambda nb: run_papermill(nb, tmp),
        "stock_gateway": lambda nb: asyncio.run(run_gateway(stock.url, token, nb)),
        "nbkube": lambda nb: asyncio.run(run_gateway(tuned.url, token, nb)),
    }
    labels = {
        "raw_zmq": "jupyter_client over ZMQ",
        "raw_zmq_batch_kernel": "  same, kernel with batch options",
        "nbclient": "nbclient",
        "papermill": "papermill (marginal)",
        "stock_gateway": "Kernel Gateway as shipped",
        "nbkube": "nbkube engine + tuned gateway",
    }
    notebooks = {"trivial": trivial_notebook, "outputs": outputs_notebook}
    medians_per_run: dict[tuple[str, str], list[float]] = {(p, n): [] for p in paths for n in notebooks}
    means_per_run: dict[tuple[str, str], list[float]] = {(p, n): [] for p in paths for n in notebooks}
    try:
        for repeat in range(REPEATS):
            for name, make in notebooks.items():
                for path, run in paths.items():
                    times = run(make())
                    median_ms = statistics.median(times) * 1000
                    mean_ms = statistics.fmean(times) * 1000
                    medians_per_run[(path, name)].append(median_ms)
                    means_per_run[(path, name)].append(mean_ms)
                    run_label = f"run {repeat + 1}/{REPEATS} {name:8s} {path:14s}"
                    print(f"  {run_label} median {median_ms:8.2f}  mean {mean_ms:8.2f} ms/cell", flush=True)
    finally:
        stock.stop()
        tuned.stop()

    medians = {key: statistics.median(values) for key, values in medians_per_run.items()}
    means = {key: statistics.median(values) for key, values in means_per_run.items()}
    floor = {n: medians[("raw_zmq", n)] for n in notebooks}
    print()
    print("per-cell milliseconds: median cell of a run (mean cell in brackets), median over runs")
    header = f"{'path':32s}"
    for n in notebooks:
        header += f" {n + ' median':>15s} {'(mean)':>9s} {'x raw':>6s}"
    print(header)
    for path in paths:
        row = f"{labels[path]:32s}"
        for n in notebooks:
            median, mean = medians[(path, n)], means[(path, n)]
            row += f" {median:15.2f} {f'({mean:.2f})':>9s} {median / floor[n]:6.2f}"
        print(row)
    nbkube = medians[("nbkube", "trivial")]
    print()
    print(
        f"trivial notebook: nbkube/raw = {nbkube / floor['trivial']:.2f} (target <= 1.5), "
        f"papermill/nbkube = {medians[('papermill', 'trivial')] / nbkube:.1f} (target >= 3), "
        f"stock/nbkube = {medians[('stock_gateway', 'trivial')] / nbkube:.1f} (target >= 8)"
    )
    same_kernel = medians[("raw_zmq_batch_kernel", "trivial")]
    print(
        f"engine + gateway alone (against raw ZMQ on a kernel with the same options): "
        f"{nbkube - same_kernel:+.2f} ms per cell, {nbkube / same_kernel:.2f}x"
    )
    print(json.dumps({f"{path}_ms": round(medians[(path, "trivial")], 3) for path in paths}))


if __name__ == "__main__":
    main()

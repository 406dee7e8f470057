"""The operator dies mid-run (SIGKILL) and the next one picks the run up where it was."""

import json
import time
import urllib.request

import nbformat
from helpers import events, get, run, wait_for, wait_run_finished


def test_a_run_survives_the_operator_being_killed_mid_cell_with_no_cell_run_twice(
    kubectl, env_namespace, operator, tmp_path
):
    marker = tmp_path / "executions.log"
    write = f"open({str(marker)!r}, 'a').write"
    cells = [
        f"{write}('cell 0\\n')",
        f"{write}('cell 1\\n')",
        "import time\nfor i in range(10):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
        f"{write}('cell 2\\n')",
        f"{write}('cell 3\\n')\nprint('done')",
    ]
    kubectl.apply(run("survivor", cells), namespace=env_namespace)

    def long_cell_running():
        obj = get(kubectl, "nbrun", "survivor", env_namespace)
        cells = ((obj or {}).get("status") or {}).get("cells", [])
        return len(cells) == 4 and cells[2]["state"] == "running"

    wait_for("the long cell to run", long_cell_running, 60, 0.1)
    time.sleep(0.8)
    operator.kill()
    time.sleep(2.0)  # the kernel keeps printing while no operator listens
    operator.start()

    obj = wait_run_finished(kubectl, env_namespace, "survivor", 120)
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["attempt"] == 1
    assert marker.read_text().splitlines() == ["cell 0", "cell 1", "cell 2", "cell 3"]
    assert "Reattached" in [e["reason"] for e in events(kubectl, env_namespace, "survivor")]

    result = status["result"]
    url = f"{operator.results_url}/files/{result['path']}?ref={result['commit']}"
    with urllib.request.urlopen(url, timeout=10) as response:
        nb = nbformat.reads(response.read().decode(), as_version=4)
    ticks = "".join(o.get("text", "") for o in nb.cells[2].outputs if o["output_type"] == "stream")
    assert ticks.splitlines() == [f"tick {i}" for i in range(10)]
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]

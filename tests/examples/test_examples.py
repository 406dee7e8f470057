"""Every file in examples/ is applied as its comments say, and does what they promise."""

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbkube.api import NotebookEnvironmentSpec, NotebookRunSpec
from nbkube_testenv.wait import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))
SPECS = {"NotebookEnvironment": NotebookEnvironmentSpec, "NotebookRun": NotebookRunSpec}


def finished(kubectl, namespace, name):
    done = kubectl("get", "nbrun", name, "-o", "json", namespace=namespace, check=False)
    if done.returncode != 0:
        return None
    obj = json.loads(done.stdout)
    return obj if (obj.get("status") or {}).get("state") in ("Succeeded", "Failed", "Cancelled") else None


def ready(kubectl, namespace, name):
    conditions = (kubectl.json("get", "nbenv", name, namespace=namespace).get("status") or {}).get(
        "conditions", []
    )
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_examples_are_all_there():
    names = {p.name for p in MANIFESTS}
    assert names == {"environment.yaml", "run.yaml", "sweep.yaml", "failing-run.yaml"}
    nbformat.validate(nbformat.read(EXAMPLES / "analysis.ipynb", as_version=nbformat.NO_CONVERT))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_each_example_says_how_to_apply_it_and_satisfies_the_models(manifest):
    text = manifest.read_text()
    assert f"kubectl apply -f examples/{manifest.name}" in text
    for command in re.findall(r"kubectl create configmap .*", text):
        assert command.startswith("kubectl create configmap analysis --from-file=examples/analysis.ipynb")
    (obj,) = list(yaml.safe_load_all(text))
    SPECS[obj["kind"]].model_validate(obj["spec"])


def test_every_example_is_accepted_by_the_api_server(kubectl, namespace, operator):
    kubectl(
        "create",
        "configmap",
        "analysis",
        f"--from-file={EXAMPLES / 'analysis.ipynb'}",
        "--dry-run=server",
        namespace=namespace,
    )
    for manifest in MANIFESTS:
        kubectl("apply", "--dry-run=server", "-f", str(manifest), namespace=namespace)


def test_the_examples_run_as_documented(kubectl, namespace, operator):
    kubectl("apply", "-f", str(EXAMPLES / "environment.yaml"), namespace=namespace)
    kubectl(
        "create", "configmap", "analysis", f"--from-file={EXAMPLES / 'analysis.ipynb'}", namespace=namespace
    )
    for manifest in ("run.yaml", "failing-run.yaml", "sweep.yaml"):
        kubectl("apply", "-f", str(EXAMPLES / manifest), namespace=namespace)
    wait_for(lambda: ready(kubectl, namespace, "py"), "environment py Ready", timeout=180)

    run = wait_for(lambda: finished(kubectl, namespace, "analysis-1"), "analysis-1 finished", timeout=300)
    assert run["status"]["state"] == "Succeeded", json.dumps(run["status"], indent=1)
    cells = {c["id"]: c for c in run["status"]["cells"]}
    assert cells["fit"]["summary"].startswith("alpha=0.3 seed=7: fitted slope 0.3")
    assert cells["check"]["summary"] == "0.3"

    failing = wait_for(lambda: finished(kubectl, namespace, "failing-1"), "failing-1 finished", timeout=300)
    status = failing["status"]
    assert (status["state"], status["reason"]) == ("Failed", "CellError"), json.dumps(status, indent=1)
    cells = {c["id"]: c for c in status["cells"]}
    assert cells["setup"]["state"] == "succeeded"
    assert cells["boom"]["state"] == "failed"
    assert cells["boom"]["summary"].startswith("ZeroDivisionError")
    assert cells["never"]["state"] == "pending"
    assert status["result"]["path"].endswith("/failing-1/failing.ipynb")

    sweep = wait_for(
        lambda: finished(kubectl, namespace, "analysis-sweep"), "the sweep finished", timeout=600
    )
    assert sweep["status"]["state"] == "Succeeded", json.dumps(sweep["status"], indent=1)
    counts = sweep["status"]["sweep"]
    assert (counts["total"], counts["succeeded"], counts["failed"]) == (4, 4, 0)
    children = kubectl.json("get", "nbrun", "-l", "nbkube.io/sweep=analysis-sweep", namespace=namespace)[
        "items"
    ]
    assert sorted(c["metadata"]["name"] for c in children) == sorted(counts["children"])
    seen = set()
    for child in children:
        assert child["status"]["state"] == "Succeeded"
        params = child["spec"]["parameters"]
        assert params["size"] == 500
        seen.add((params["alpha"], params["seed"]))
        fit = next(c for c in child["status"]["cells"] if c["id"] == "fit")
        assert fit["summary"].startswith(f"alpha={params['alpha']} seed={params['seed']}: fitted slope")
    assert seen == {(0.1, 1), (0.1, 2), (0.5, 1), (0.5, 2)}

    # Delete while the operator runs, so that it releases its finalizers before the namespace goes.
    kubectl("delete", "nbrun,nbenv", "--all", "--timeout=120s", namespace=namespace)

"""Any name the API server accepts works: for a run, a sweep, a ConfigMap key, and the repository
stays clonable for everyone; an environment's name is a label value of its pods, so one too long for
that is refused with a reason and nothing made."""

import json

import nbformat
from helpers import (
    condition,
    environment,
    events,
    get,
    run,
    wait_env_ready,
    wait_env_reason,
    wait_run_finished,
)
from nbkube.names import label_value
from nbkube_testenv.userapi import ApiUser


def test_a_run_named_like_a_lock_file_checkpoints_succeeds_and_its_result_is_fetched(
    kubectl, env_namespace, operator
):
    cells = [f"c{i} = {i}" for i in range(24)] + ["print(c23)"]  # a checkpoint after 20 cells
    kubectl.apply(run("nightly.lock", cells), namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "nightly.lock", 180)["status"]

    assert (status["state"], status["reason"], status["attempt"]) == ("Succeeded", "Succeeded", 1), (
        json.dumps(status, indent=1)
    )
    result = status["result"]
    assert result["final"] is True
    assert result["path"].startswith(f"{env_namespace}/nightly.lock_")
    nb = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    assert nb.metadata["nbkube"]["run"] == "nightly.lock"
    assert nb.cells[-1].outputs[0]["text"] == "23\n"
    reasons = [e["reason"] for e in events(kubectl, env_namespace, "nightly.lock")]
    assert "ResultsCommitted" in reasons
    assert not {"KernelDied", "Retrying", "ResultsNotCommitted"} & set(reasons), reasons


def test_sweeps_named_with_63_64_and_253_characters_run_every_child(kubectl, env_namespace):
    names = [f"sweep-{'n' * (length - 6)}" for length in (63, 64, 253)]
    for name in names:
        kubectl.apply(run(name, ["print(x)"], matrix={"x": [1, 2]}, parallelism=2), namespace=env_namespace)
    for name in names:
        parent = wait_run_finished(kubectl, env_namespace, name, 240)
        status = parent["status"]
        assert (status["state"], status["reason"]) == ("Succeeded", "Succeeded"), json.dumps(status, indent=1)
        assert (status["sweep"]["total"], status["sweep"]["succeeded"]) == (2, 2)
        selector = f"nbkube.io/sweep={label_value(name)}"
        children = kubectl.json("get", "nbrun", "-l", selector, namespace=env_namespace)["items"]
        assert sorted(c["metadata"]["name"] for c in children) == sorted(status["sweep"]["children"])
        for child in children:
            assert child["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]
            assert len(child["metadata"]["name"]) <= 63


def test_a_253_character_configmap_key_runs_and_the_repository_still_clones(
    kubectl, env_namespace, operator, tmp_path
):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('from a long key')")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    key = "k" * 253  # with ".ipynb" appended: 259 bytes, more than a file name may have
    kubectl("create", "configmap", "long-key", f"--from-file={key}={path}", namespace=env_namespace)
    manifest = run("long-key", None)
    manifest["spec"]["notebook"] = {"configMapRef": {"name": "long-key", "key": key}}
    kubectl.apply(manifest, namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "long-key", 180)["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    result = status["result"]
    file_name = result["path"].rsplit("/", 1)[-1]
    assert file_name.startswith("k" * 200) and file_name.endswith(".ipynb")
    assert len(file_name.encode()) <= 255
    fetched = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    assert fetched.cells[0].outputs[0]["text"] == "from a long key\n"

    dest = tmp_path / "clone"
    clone = ApiUser.admin(operator.info).clone(env_namespace, dest)
    assert clone.returncode == 0, clone.stderr
    assert (dest / result["path"]).is_file()
    assert (
        nbformat.read(dest / result["path"], as_version=4).cells[0].outputs[0]["text"] == "from a long key\n"
    )


def test_a_sweep_whose_children_the_api_server_would_refuse_fails_invalid_spec_at_once(
    kubectl, env_namespace
):
    parameters = {f"p{i}": i for i in range(120)}
    matrix = {f"m{i}": [1, 2] if i == 0 else [1] for i in range(10)}  # children would take 130 parameters
    kubectl.apply(run("too-many", ["x"], parameters=parameters, matrix=matrix), namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "too-many", 60)["status"]

    assert (status["state"], status["reason"]) == ("Failed", "InvalidSpec"), json.dumps(status, indent=1)
    assert "more than 128 parameters" in status["message"]
    children = kubectl.json("get", "nbrun", "-l", "nbkube.io/sweep=too-many", namespace=env_namespace)[
        "items"
    ]
    assert children == []
    assert "InvalidSpec" in [e["reason"] for e in events(kubectl, env_namespace, "too-many")]


def test_a_63_character_environment_serves_runs_and_longer_names_are_invalid_with_nothing_created(
    kubectl, namespace, operator
):
    fits = "n" * 30 + "." + "n" * 32  # 63 characters, a dot among them
    too_long = ["l" * 253, ("x." * 50)[:99] + "y"]  # the longest name Kubernetes takes; one of 100
    for name in [*too_long, fits]:
        kubectl.apply(environment(name), namespace=namespace)
    for name in too_long:
        env = wait_env_reason(kubectl, namespace, "InvalidSpec", name=name)
        ready = condition(env, "Ready")
        assert ready["status"] == "False", ready
        assert (
            f"{len(name)} characters long; at most 63 fit in the nbkube.io/environment label"
            in ready["message"]
        )
    env = wait_env_ready(kubectl, namespace, name=fits)
    uid = env["metadata"]["uid"]
    kubectl.apply(run("on-a-long-env", ["print('served')"], env=fits), namespace=namespace)
    status = wait_run_finished(kubectl, namespace, "on-a-long-env", 180)["status"]
    assert (status["state"], status["reason"]) == ("Succeeded", "Succeeded"), json.dumps(status, indent=1)

    # Every child there is belongs to the environment that fits (owner, label, name).
    for kind in ("deployments", "networkpolicies", "secrets"):
        items = kubectl.json("get", kind, namespace=namespace)["items"]
        assert len(items) == 1, (kind, [i["metadata"]["name"] for i in items])
        for item in items:
            assert item["metadata"]["ownerReferences"][0]["uid"] == uid, (kind, item["metadata"]["name"])
            assert item["metadata"]["labels"]["nbkube.io/environment"] == fits
    assert get(kubectl, "deployment", f"{fits}-gateway", namespace) is not None
    pods = kubectl.json("get", "pods", namespace=namespace)["items"]
    assert pods and {p["metadata"]["labels"]["nbkube.io/environment"] for p in pods} == {fits}
    # Refused once, not retried: one warning each after the environment that fits got ready and served
    # a run (many rounds of the 5 s status timer), and the refused generation stays the one observed.
    for name in too_long:
        warnings = [e for e in events(kubectl, namespace, name) if e["type"] == "Warning"]
        assert [(e["reason"], e.get("count", 1)) for e in warnings] == [("InvalidSpec", 1)], warnings
        assert get(kubectl, "nbenv", name, namespace)["status"]["observedGeneration"] == 1

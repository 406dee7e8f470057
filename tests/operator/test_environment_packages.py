"""NotebookEnvironment packages, for real: pip installs from PyPI into each gateway pod's own volume
before the pod is Ready and kernels import what it installed; an install that fails is Ready=False,
PackagesFailed, with pip's error line, and the environment recovers once its spec is fixed."""

import base64
import hashlib
import importlib.util
import io
import json
import zipfile

import pytest
from helpers import (
    condition,
    environment,
    events,
    get,
    run,
    wait_env_ready,
    wait_env_reason,
    wait_for,
    wait_run_finished,
)
from nbkube_testenv.pytest_plugin import KubectlError

# Small pure-Python packages the project's virtualenv (which gateway pods run from) does not have.
TABULATE = "tabulate==0.9.0"
MISSING = "nbkube-no-such-package-0d5c==1.0"
PIP_LINE = f"ERROR: No matching distribution found for {MISSING}"
INSTALL_TIMEOUT = 240
# A package built here, on no index: a requirements ConfigMap carries its wheel beside the requirements.
LOCAL = "nbkube_local_pkg"


@pytest.fixture(autouse=True)
def _not_in_the_venv():
    for name in ("tabulate", "pyjokes", LOCAL):
        assert importlib.util.find_spec(name) is None, f"{name} is installed here: this would prove nothing"


def _pods(kubectl, namespace, env="py"):
    pods = kubectl.json("get", "pods", "-l", f"nbkube.io/environment={env}", namespace=namespace)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _wheel(version):
    """A pure-Python wheel of LOCAL at this version: (file name, bytes)."""
    dist_info = f"{LOCAL}-{version}.dist-info"
    files = {
        f"{LOCAL}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {LOCAL}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: nbkube-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }

    def digest(data):
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")

    record = "".join(f"{path},sha256={digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return f"{LOCAL}-{version}-py3-none-any.whl", buffer.getvalue()


def _local_requirements(version):
    """A requirements ConfigMap installing LOCAL==version from the wheel beside it (pip reads
    --find-links relative to the requirements file), from no index at all."""
    wheel_name, wheel = _wheel(version)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "local-reqs"},
        "data": {"requirements.txt": f"--no-index\n--find-links .\n{LOCAL}=={version}\n"},
        "binaryData": {wheel_name: base64.b64encode(wheel).decode()},
    }


def _run_cells(kubectl, namespace, name, cells):
    kubectl.apply(run(name, cells), namespace=namespace)
    obj = wait_run_finished(kubectl, namespace, name, INSTALL_TIMEOUT)
    assert obj["status"]["state"] == "Succeeded", json.dumps(obj["status"], indent=1)
    return {c["index"]: c.get("summary", "") for c in obj["status"]["cells"]}


def test_a_package_from_pypi_is_installed_into_the_pods_volume_and_imported_in_a_cell(
    kubectl, cluster, namespace, operator
):
    kubectl.apply(environment(packages={"requirements": [TABULATE]}), namespace=namespace)
    wait_env_ready(kubectl, namespace, timeout=INSTALL_TIMEOUT)
    (pod,) = _pods(kubectl, namespace)
    name = pod["metadata"]["name"]
    (installer,) = pod["status"]["initContainerStatuses"]
    assert installer["name"] == "nbkube-packages"
    assert installer["state"]["terminated"]["exitCode"] == 0

    summaries = _run_cells(
        kubectl,
        namespace,
        "tables",
        [
            "import tabulate\nprint(tabulate.__version__, tabulate.__file__)",
            "print(tabulate.tabulate([[1, 2]], headers=['a', 'b'], tablefmt='plain').split())",
            "print(open('/opt/nbkube/packages/install.log').read().splitlines()[-1])",
        ],
    )
    assert summaries[0] == "0.9.0 /opt/nbkube/packages/site-packages/tabulate/__init__.py"
    assert summaries[1] == "['a', 'b', '1', '2']"
    assert summaries[2].endswith("installed into /opt/nbkube/packages/site-packages: tabulate==0.9.0")

    # the install log is the init container's own log too, and the packages are in this pod's emptyDir
    log = cluster.container_log(namespace, name, "nbkube-packages").read_text()
    assert "Successfully installed tabulate-0.9.0" in log
    volume = cluster.pod_dir(namespace, name) / "volumes" / "nbkube-packages"
    assert (volume / "site-packages" / "tabulate" / "__init__.py").is_file()
    assert (volume / "install.log").read_text() == log


def test_a_requirements_config_map_is_read_by_pip_in_the_pod_with_its_sibling_keys(
    kubectl, namespace, operator
):
    spec = {"configMapRef": {"name": "reqs", "key": "requirements.txt"}}
    kubectl.apply(environment(packages=spec), namespace=namespace)
    env = wait_env_reason(kubectl, namespace, "PackagesFailed", timeout=INSTALL_TIMEOUT)
    message = condition(env, "Ready")["message"]
    assert "ERROR: ConfigMap reqs has no key requirements.txt (or does not exist)" in message, message

    (failed,) = _pods(kubectl, namespace)
    kubectl(
        "create",
        "configmap",
        "reqs",
        "--from-literal=requirements.txt=-c constraints.txt\npyjokes\n",
        "--from-literal=constraints.txt=pyjokes==0.8.2\n",
        namespace=namespace,
    )
    # the ConfigMap's creation rolls the pods: the new one reads it at once (no kubelet refresh waited for)
    wait_env_ready(kubectl, namespace, timeout=INSTALL_TIMEOUT)
    assert [p["metadata"]["name"] for p in _pods(kubectl, namespace)] != [failed["metadata"]["name"]]
    summaries = _run_cells(
        kubectl,
        namespace,
        "jokes",
        ["import pyjokes, importlib.metadata as m\nprint(m.version('pyjokes'), pyjokes.__file__)"],
    )
    assert summaries[0] == "0.8.2 /opt/nbkube/packages/site-packages/pyjokes/__init__.py"


def test_editing_the_requirements_config_map_rolls_the_pods_and_kernels_import_the_new_version(
    kubectl, namespace, operator
):
    kubectl.apply(_local_requirements("1.0"), namespace=namespace)
    spec = {"configMapRef": {"name": "local-reqs", "key": "requirements.txt"}}
    kubectl.apply(environment(packages=spec), namespace=namespace)
    wait_env_ready(kubectl, namespace, timeout=INSTALL_TIMEOUT)
    (old,) = _pods(kubectl, namespace)
    old_name, old_hash = old["metadata"]["name"], old["metadata"]["annotations"]["nbkube.io/spec-hash"]
    cell = f"import {LOCAL}\nprint({LOCAL}.VERSION, {LOCAL}.__file__)"
    assert _run_cells(kubectl, namespace, "v1", [cell])[0] == (
        f"1.0 /opt/nbkube/packages/site-packages/{LOCAL}/__init__.py"
    )

    kubectl.apply(_local_requirements("2.0"), namespace=namespace)  # the environment is not touched

    def rolled():
        # the old pod gone and a pod of the new template ready: a state that lasts, so it cannot be missed
        if get(kubectl, "pod", old_name, namespace) is not None:
            return None
        pods = _pods(kubectl, namespace)
        ready = [
            p
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return pods if len(pods) == 1 and ready else None

    (new,) = wait_for("the gateway pods rolled to the edited requirements", rolled, INSTALL_TIMEOUT, 1.0)
    new_hash = new["metadata"]["annotations"]["nbkube.io/spec-hash"]
    assert new_hash != old_hash
    env = wait_env_ready(kubectl, namespace, timeout=INSTALL_TIMEOUT)
    assert env["status"]["specHash"] == new_hash and env["metadata"]["generation"] == 1
    changed = [e for e in events(kubectl, namespace, "py") if e["reason"] == "RequirementsChanged"]
    assert changed and "requirements ConfigMap local-reqs changed" in changed[-1]["message"], changed
    summaries = _run_cells(
        kubectl,
        namespace,
        "v2",
        [cell, "print(open('/opt/nbkube/packages/install.log').read().splitlines()[-1])"],
    )
    assert summaries[0] == f"2.0 /opt/nbkube/packages/site-packages/{LOCAL}/__init__.py"
    assert summaries[1].endswith(f"installed into /opt/nbkube/packages/site-packages: {LOCAL}==2.0")
    assert operator.running


def test_a_package_that_does_not_exist_is_packages_failed_with_pips_line_until_the_spec_is_fixed(
    kubectl, namespace, operator
):
    kubectl.apply(environment(packages={"requirements": [MISSING]}), namespace=namespace)
    env = wait_env_reason(kubectl, namespace, "PackagesFailed", timeout=INSTALL_TIMEOUT)
    ready = condition(env, "Ready")
    assert ready["status"] == "False"
    assert PIP_LINE in ready["message"], ready["message"]
    (pod,) = _pods(kubectl, namespace)
    assert f"kubectl logs {pod['metadata']['name']} -c nbkube-packages" in ready["message"]
    warnings = [e for e in events(kubectl, namespace, "py") if e["type"] == "Warning"]
    assert any(e["reason"] == "PackagesFailed" and PIP_LINE in e["message"] for e in warnings), warnings
    (installer,) = get(kubectl, "pod", pod["metadata"]["name"], namespace)["status"]["initContainerStatuses"]
    failed = installer["state"].get("terminated") or installer["lastState"]["terminated"]
    assert failed["exitCode"] != 0 and failed["message"].strip().splitlines()[-1] == PIP_LINE

    # a run waits for the environment rather than failing, and the operator keeps running
    kubectl.apply(run("waits", ["import tabulate\nprint(tabulate.__version__)"]), namespace=namespace)
    wait_for(
        "the run to wait for the environment",
        lambda: (
            ((get(kubectl, "nbrun", "waits", namespace) or {}).get("status") or {}).get("reason")
            == "WaitingForEnvironment"
        ),
        60,
    )
    assert operator.running

    kubectl.apply(environment(packages={"requirements": [TABULATE]}), namespace=namespace)
    env = wait_env_ready(kubectl, namespace, timeout=INSTALL_TIMEOUT)
    assert condition(env, "Ready")["reason"] == "GatewaysReady"
    obj = wait_run_finished(kubectl, namespace, "waits", INSTALL_TIMEOUT)
    assert obj["status"]["state"] == "Succeeded", json.dumps(obj["status"], indent=1)
    assert obj["status"]["cells"][0]["summary"] == "0.9.0"
    assert operator.running


@pytest.mark.parametrize(
    ("requirement", "refusal"),
    [
        ("-e .", "should match"),
        ("--index-url=https://pypi.example.com/simple", "should match"),
        ("foo @ https://example.com/foo-1.0-py3-none-any.whl", "should match"),
        ("./pkg", "should match"),
        ("tool.whl", "must not look like file names"),
    ],
)
def test_the_api_server_refuses_what_is_not_a_plain_requirement(
    kubectl, namespace, operator, requirement, refusal
):
    with pytest.raises(KubectlError, match=refusal):
        kubectl.apply(environment(packages={"requirements": [requirement]}), namespace=namespace)
    assert get(kubectl, "nbenv", "py", namespace) is None

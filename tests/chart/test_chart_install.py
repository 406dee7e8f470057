"""The chart on a real API server: `helm install` is accepted whole, the operator running under the
ServiceAccount and RBAC the chart created completes a NotebookRun from examples/, `helm upgrade`
upgrades the CRDs, and `helm uninstall` keeps the CRDs and the results claim."""

import json
import shutil
import subprocess

import nbformat
import yaml
from chart_helpers import ALL_OPTIONS, CHART, REPO, env_of, environment_ready, run_helm, run_state, template
from nbkube_testenv.operator_process import OperatorProcess
from nbkube_testenv.userapi import ApiUser
from nbkube_testenv.wait import wait_for

RELEASE = "nbkube"
EXAMPLES = REPO / "examples"
# The chart's operator pod must not run here: the local node agent would start a second operator.
# It stays Pending on a node nobody has; the operator runs as a local process with the chart's identity.
NO_NODE = "nodeSelector.nbkube\\.io/no-such-node=true"


def helm_args(cluster, namespace):
    return ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]


def install(helm, cluster, namespace, chart=CHART, verb="install"):
    # --take-ownership: other tests in this session may have applied the CRDs with kubectl already.
    return run_helm(
        helm,
        verb,
        RELEASE,
        str(chart),
        *helm_args(cluster, namespace),
        "--take-ownership",
        "--force-conflicts",
        "--set-string",
        NO_NODE,
    )


def test_the_chart_installs_and_its_identity_runs_a_notebook_from_the_examples(
    cluster, kubectl, namespace, helm, tmp_path
):
    install(helm, cluster, namespace)
    manifest = run_helm(helm, "get", "manifest", RELEASE, *helm_args(cluster, namespace)).stdout
    objects = [o for o in yaml.safe_load_all(manifest) if o]
    assert len(objects) == 19  # test_chart_render lists them: four CRDs among them
    for obj in objects:
        scope = (
            []
            if obj["kind"] in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "APIService")
            else [f"--namespace={obj['metadata'].get('namespace') or namespace}"]
        )
        live = json.loads(kubectl("get", obj["kind"], obj["metadata"]["name"], "-o", "json", *scope).stdout)
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    deployment = kubectl.json("get", "deployment", "nbkube", namespace=namespace)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ]
    role = kubectl.json("get", "clusterrole", "nbkube")
    assert role["rules"] == [
        rule
        for f in ("clusterrole-rules.yaml", "secret-reader-rules.yaml")
        for rule in yaml.safe_load((CHART / "files" / f).read_text())
    ]
    cluster_role = kubectl.json("get", "clusterrole", "nbkube-cluster")
    assert cluster_role["rules"] == yaml.safe_load(
        (CHART / "files" / "cluster-scoped-rules.yaml").read_text()
    )
    key_secret = env_of(deployment["spec"]["template"]["spec"]["containers"][0])[
        "NBKUBE_GATEWAY_TOKEN_KEY_SECRET"
    ]

    # Every option flipped is valid for the API server too (the ServiceMonitor needs prometheus-operator).
    flipped = [o for o in template(helm, [ALL_OPTIONS], namespace=namespace) if o["kind"] != "ServiceMonitor"]
    kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": flipped}),
    )

    workloads = f"{namespace}-work"
    kubectl("create", "namespace", workloads)
    operator = OperatorProcess(
        cluster,
        tmp_path / "operator",
        namespace=namespace,
        service_account=RELEASE,
        extra_env={"NBKUBE_GATEWAY_TOKEN_KEY_SECRET": key_secret},
    )
    try:
        operator.start()
        kubectl("apply", "-f", str(EXAMPLES / "environment.yaml"), namespace=workloads)
        kubectl(
            "create",
            "configmap",
            "analysis",
            f"--from-file={EXAMPLES / 'analysis.ipynb'}",
            namespace=workloads,
        )
        kubectl("apply", "-f", str(EXAMPLES / "run.yaml"), namespace=workloads)
        wait_for(lambda: environment_ready(kubectl, workloads, "py"), "environment py Ready", timeout=180)
        run = wait_for(
            lambda: run_state(kubectl, workloads, "analysis-1"), "analysis-1 finished", timeout=300
        )
        status = run["status"]
        assert status["state"] == "Succeeded", json.dumps(status, indent=1)

        result = status["result"]
        notebook = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
        injected = next(c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert "alpha = 0.3" in injected.source
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        assert any("image/png" in o.get("data", {}) for o in outputs)
        assert any("alpha=0.3 seed=7: fitted slope 0.3" in o.get("text", "") for o in outputs)

        clone = tmp_path / "results"
        cloned = ApiUser.admin(cluster).clone(workloads, clone)
        assert cloned.returncode == 0, cloned.stderr
        shown = subprocess.run(
            ["git", "-C", str(clone), "show", f"{result['commit']}:{result['path']}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert nbformat.reads(shown.stdout, as_version=4) == notebook
    finally:
        # While the operator still runs, so that it removes its finalizers from the namespace's objects.
        kubectl("delete", "namespace", workloads, "--timeout=120s", check=False)
        operator.stop()
        print(f"--- operator log tail ---\n{operator.log_tail(40)}")

    # helm upgrade upgrades CRDs kept in templates/ (a chart's crds/ directory would be left alone).
    changed = tmp_path / "chart"
    shutil.copytree(CHART, changed)
    crd_file = changed / "templates" / "crds" / "nbkube.io_notebookruns.yaml"
    marker = "One execution of a notebook, or a sweep of them"
    assert marker in crd_file.read_text()
    crd_file.write_text(crd_file.read_text().replace(marker, marker + " (upgraded)"))
    install(helm, cluster, namespace, chart=changed, verb="upgrade")
    crd_description = "{.spec.versions[0].schema.openAPIV3Schema.description}"
    live = kubectl("get", "crd", "notebookruns.nbkube.io", f"-o=jsonpath={crd_description}").stdout
    assert "a sweep of them (upgraded)" in live
    install(helm, cluster, namespace, verb="upgrade")
    live = kubectl("get", "crd", "notebookruns.nbkube.io", f"-o=jsonpath={crd_description}").stdout
    assert "(upgraded)" not in live

    run_helm(helm, "uninstall", RELEASE, *helm_args(cluster, namespace), "--wait")
    assert kubectl("get", "deployment", "nbkube", namespace=namespace, check=False).returncode != 0
    assert kubectl("get", "clusterrole", "nbkube", check=False).returncode != 0
    for kept in (
        ["crd", "notebookruns.nbkube.io"],
        ["crd", "notebookenvironments.nbkube.io"],
        ["crd", "notebooksessions.nbkube.io"],
        ["crd", "notebookschedules.nbkube.io"],
    ):
        kubectl("get", *kept)
    kubectl("get", "pvc", "nbkube-results", namespace=namespace)
    # the operator created its key Secret under the chart's Role; like the results, it outlives the release
    kubectl("get", "secret", key_secret, namespace=namespace)

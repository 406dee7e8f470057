"""`helm lint --strict` and `helm template` of charts/nbkube, and what the rendered objects promise."""

import pytest
import yaml
from chart_helpers import ALL_OPTIONS, CHART, REPO, by_kind, env_of, one, run_helm, template
from nbkube.config import Settings
from nbkube.userapi.paths import APISERVICE
from nbkube_testenv.operator_process import rbac_manifests
from nbkube_testenv.operator_rbac import operator_namespace_rbac_manifests


def operator_role(objects):
    """The operator's own ClusterRole (the others are the users' roles, aggregated into view and edit)."""
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == "nbkube"]
    return role


def operator_container(objects):
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_helm_lint_strict_passes_with_defaults_and_with_every_option_flipped(helm):
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "--values", str(ALL_OPTIONS))


def test_default_render_holds_every_object_the_chart_promises(helm):
    objects = template(helm)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "APIService",
            "ClusterRole",  # the operator's rights on namespaced resources
            "ClusterRole",  # its cluster-scoped rights
            "ClusterRole",  # nbkube-view and nbkube-edit, aggregated into view, edit and admin
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",  # NotebookEnvironment
            "CustomResourceDefinition",  # NotebookRun
            "CustomResourceDefinition",  # NotebookSession
            "CustomResourceDefinition",  # NotebookSchedule
            "Deployment",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",  # the key Secret's Role
            "RoleBinding",  # kube-system's extension-apiserver-authentication-reader
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    for obj in objects:
        labels = obj["metadata"]["labels"]
        if obj["kind"] != "CustomResourceDefinition":
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/instance"] == "nbkube"
            assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/name"] == "nbkube"
        assert labels["app.kubernetes.io/part-of"] == "nbkube"


def test_watching_chosen_namespaces_binds_namespaced_rights_there_only(helm):
    files = CHART / "files"
    everywhere = template(helm)
    assert [b["roleRef"]["name"] for b in by_kind(everywhere, "ClusterRoleBinding")] == [
        "nbkube",
        "nbkube-cluster",
    ]
    assert "--all-namespaces" in operator_container(everywhere)["command"]
    scoped = template(helm, sets=["watchNamespaces={team-a,team-b}"])
    (cluster_binding,) = by_kind(scoped, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == "nbkube-cluster"
    watch = [b for b in by_kind(scoped, "RoleBinding") if b["metadata"]["name"] == "nbkube-watch"]
    assert sorted(b["metadata"]["namespace"] for b in watch) == ["team-a", "team-b"]
    assert all(
        b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nbkube"}
        for b in watch
    )
    command = operator_container(scoped)["command"]
    assert "--all-namespaces" not in command
    assert "--namespace=team-a" in command and "--namespace=team-b" in command
    cluster_rules = yaml.safe_load((files / "cluster-scoped-rules.yaml").read_text())
    (cluster_role,) = [r for r in by_kind(scoped, "ClusterRole") if r["metadata"]["name"] == "nbkube-cluster"]
    assert cluster_role["rules"] == cluster_rules
    # Nothing namespaced is granted cluster-wide: every cluster-scoped rule names a cluster-scoped kind.
    cluster_scoped = {"customresourcedefinitions", "namespaces", "subjectaccessreviews", "apiservices"}
    assert {r for rule in cluster_rules for r in rule["resources"]} <= cluster_scoped


def operator_rules(read_secrets: bool = True) -> list:
    """The operator's namespaced rules as the chart renders them: the rules file, and the Secret reader
    rules unless rbac.readSecrets is false."""
    files = ["clusterrole-rules.yaml", *(["secret-reader-rules.yaml"] if read_secrets else [])]
    return [rule for f in files for rule in yaml.safe_load((CHART / "files" / f).read_text())]


def test_rendered_cluster_role_rules_are_exactly_the_rules_files(helm):
    objects = template(helm)
    role = operator_role(objects)
    assert role["rules"] == operator_rules()
    (binding,) = [b for b in by_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"] == "nbkube"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": "nbkube"}]


def _secret_rules(objects):
    return [
        rule
        for rule in operator_role(objects)["rules"]
        if "" in rule["apiGroups"] and ("secrets" in rule["resources"] or "*" in rule["resources"])
    ]


def test_the_operator_may_get_but_never_list_or_watch_secrets_in_the_namespaces_it_watches(helm):
    objects = template(helm)
    assert [rule["verbs"] for rule in _secret_rules(objects)] == [["create"], ["get"]]
    assert env_of(operator_container(objects))["NBKUBE_READ_SECRETS"] == "true"
    off = template(helm, sets=["rbac.readSecrets=false"])
    assert [rule["verbs"] for rule in _secret_rules(off)] == [["create"]]
    assert operator_role(off)["rules"] == operator_rules(read_secrets=False)
    assert env_of(operator_container(off))["NBKUBE_READ_SECRETS"] == "false"
    assert Settings.from_env({"NBKUBE_READ_SECRETS": "false"}).read_secrets is False
    # the test harness runs the operator under the same rules
    for read_secrets in (True, False):
        harness = next(m for m in rbac_manifests(read_secrets=read_secrets) if m["kind"] == "ClusterRole")
        assert harness["rules"] == operator_rules(read_secrets=read_secrets)


def test_the_operator_may_create_secrets_anywhere_but_read_by_name_only_its_key_secret(helm):
    objects = template(helm)
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "nbkube"
    key_secret = env_of(operator_container(objects))["NBKUBE_GATEWAY_TOKEN_KEY_SECRET"]
    assert key_secret == "nbkube-gateway-token-key" == Settings().gateway_token_key_secret
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [key_secret], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    (binding,) = [b for b in by_kind(objects, "RoleBinding") if b["metadata"]["namespace"] == "nbkube"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "nbkube"}]
    for rule in operator_role(objects)["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    # the test harness runs the operator under the same Role
    (harness_role, _) = operator_namespace_rbac_manifests("nbkube", account, key_secret)
    assert harness_role["rules"] == role["rules"]


def test_the_user_facing_api_port_admits_only_the_api_server_configured(helm):
    def results_rules(objects):
        policy = one(objects, "NetworkPolicy")["spec"]
        return [r for r in policy["ingress"] if r["ports"][0]["port"] == 8443]

    assert results_rules(template(helm, sets=["networkPolicy.enabled=true"])) == []
    api_server = ["networkPolicy.enabled=true", "networkPolicy.apiServerFrom[0].ipBlock.cidr=172.18.0.2/32"]
    (rule,) = results_rules(template(helm, sets=api_server))
    assert rule["from"] == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]
    policy = one(template(helm, [ALL_OPTIONS]), "NetworkPolicy")["spec"]
    (rule,) = [r for r in policy["ingress"] if r["ports"][0]["port"] == 9443]
    assert rule["from"] == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]
    for rule in policy["ingress"]:
        if rule["ports"][0]["port"] != 9091:  # the health port: kubelet probes
            assert rule.get("from"), rule


def test_gateway_egress_values_reach_the_operator_settings(helm):
    def settings(values=(), sets=()):
        env = env_of(operator_container(template(helm, values, sets)))
        return Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})

    default = settings()
    assert default.gateway_egress_allow_all is False
    assert default.gateway_egress_denied_cidrs == [] and default.gateway_egress_extra_rules == []
    flipped = settings([ALL_OPTIONS])
    assert flipped.gateway_egress_allow_all is True
    assert flipped.gateway_egress_denied_cidrs == ["172.18.0.2/32", "10.96.0.0/12"]
    assert flipped.gateway_egress_extra_rules == [
        {"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}], "ports": [{"port": 53, "protocol": "UDP"}]}
    ]
    assert flipped.gateway_token_key_secret == "nb-operator-gateway-token-key"


def test_operator_deployment_is_one_hardened_replica_recreated_never_rolled(helm):
    objects = template(helm)
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(objects)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081, "api": 8443}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["command"]
    assert container["command"][:4] == ["kopf", "run", "-m", "nbkube.handlers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
    claim = one(objects, "PersistentVolumeClaim")
    assert volumes[mounts[str(Settings().data_dir)]]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_operator_pod_carries_the_labels_the_gateway_network_policy_admits(helm):
    for values in ((), (ALL_OPTIONS,)):
        deployment = one(template(helm, values), "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert Settings().operator_labels.items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_operator_environment_configures_what_the_services_and_probes_expect(helm):
    for values in ((), (ALL_OPTIONS,)):
        objects = template(helm, values)
        container = operator_container(objects)
        env = env_of(container)
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        settings = Settings.from_env(
            {k: v for k, v in env.items() if isinstance(v, str)} | {"POD_NAMESPACE": "nbkube"}
        )
        assert settings.namespace == "nbkube"
        assert str(settings.data_dir) == "/var/lib/nbkube"
        assert settings.api_host == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == settings.metrics_port and ports["api"] == settings.api_port
        assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["command"]
        services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
        selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
        for service in services.values():
            assert service["spec"]["selector"] == selector
            (port,) = service["spec"]["ports"]
            assert port["targetPort"] in ports
        assert sorted(p["targetPort"] for s in services.values() for p in s["spec"]["ports"]) == [
            "api",
            "metrics",
        ]
        # The APIService routes to the API Service, whose name the serving certificate carries.
        (apiservice,) = by_kind(objects, "APIService")
        assert apiservice["metadata"]["name"] == APISERVICE
        routed = services[apiservice["spec"]["service"]["name"]]
        assert routed["spec"]["ports"][0] == {
            "name": "api",
            "port": 443,
            "targetPort": "api",
            "protocol": "TCP",
        }
        assert apiservice["spec"]["service"]["name"] == settings.api_service


def test_every_option_flipped_renders_the_optional_objects_and_drops_the_disabled_ones(helm):
    objects = template(helm, [ALL_OPTIONS])
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "APIService",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "Service",
        "ServiceMonitor",
    ]
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["metadata"]["name"] == "nb-operator"
    assert pod["serviceAccountName"] == "existing-operator-sa"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-results"}} in pod["volumes"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["value"] == "notebooks"
    assert "nodeAffinity" in pod["affinity"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/nbkube/operator:1.2.3"
    assert container["command"][-1] == "--debug"
    env = env_of(container)
    assert env["NBKUBE_CHECKPOINT_EVERY_CELLS"] == "10"
    assert env["NBKUBE_STATUS_INTERVAL_SECONDS"] == "2.5"
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = sorted(rule["ports"][0]["port"] for rule in policy["ingress"])
    assert ingress_ports == [9090, 9091, 9443]
    gateway_rule = policy["egress"][-1]
    assert gateway_rule["ports"] == [{"port": 8888, "protocol": "TCP"}]
    assert gateway_rule["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nbkube-gateway"}


def test_disabling_persistence_uses_an_empty_dir_and_a_storage_class_dash_disables_provisioning(helm):
    pod = one(template(helm, sets=["persistence.enabled=false"]), "Deployment")["spec"]["template"]["spec"]
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert not by_kind(template(helm, sets=["persistence.enabled=false"]), "PersistentVolumeClaim")
    claim = one(template(helm, sets=["persistence.storageClass=-"]), "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == ""


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("operater.logLevel=debug", "operater"),
        ("ports.metrics=0", "metrics"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("persistence.size=lots", "size"),
        ("gateway.egress.deniedCIDRs={apiserver.example.com}", "deniedCIDRs"),
        ("gateway.egress.allowAll=yes", "allowAll"),
    ],
)
def test_values_schema_rejects_misspelt_or_invalid_values(helm, setting, complaint):
    args = ["template", "nbkube", str(CHART), "--set", setting]
    done = run_helm(helm, *args, check=False)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_an_existing_service_account_must_be_named(helm):
    done = run_helm(
        helm, "template", "nbkube", str(CHART), "--set", "serviceAccount.create=false", check=False
    )
    assert done.returncode != 0
    assert "serviceAccount.name is required" in done.stderr


def test_notes_tell_the_next_commands(helm):
    done = run_helm(helm, "install", "nbkube", str(CHART), "--dry-run=client", "--namespace", "nbkube")
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply -f examples/run.yaml" in notes
    assert "kubectl get nbrun -w" in notes
    assert "port-forward" not in notes  # results come through the API server with the user's rights
    assert "nbkube fetch analysis-1" in notes and "nbkube logs analysis-1 -f" in notes
    assert "kubectl get apiservice v1alpha1.subresources.nbkube.io" in notes
    for path in ("examples/environment.yaml", "examples/analysis.ipynb", "examples/run.yaml"):
        assert (REPO / path).is_file(), path

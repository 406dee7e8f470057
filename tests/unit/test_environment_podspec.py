"""The gateway pod spec built from a NotebookEnvironment: data volumes, env by reference, placement,
the ServiceAccount opt-in, and the pod-template overlay merged on top without touching what nbkube
owns."""

import pytest
from nbkube.api import NotebookEnvironmentSpec
from nbkube.api.pod import NBKUBE_LABEL_KEYS, env_name_problem, nbkube_key_problem
from nbkube.environment import controller, objects, podspec

TOKEN_SECRET = "py-gateway-token-0123456789"


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "nbkube/kernel-python:dev", **extra})


def _pod(spec):
    deployment = objects.gateway_deployment("py", "team", "uid-1", spec, TOKEN_SECRET)
    return deployment["spec"]["template"]


def _gateway(template):
    (gateway,) = [c for c in template["spec"]["containers"] if c["name"] == "gateway"]
    return gateway


def test_nbkubes_own_volumes_carry_the_reserved_prefix():
    template = _pod(_spec())
    assert template["spec"]["volumes"] == [
        {"name": "nbkube-tmp", "emptyDir": {}},
        {"name": "nbkube-home", "emptyDir": {}},
    ]
    assert _gateway(template)["volumeMounts"] == [
        {"name": "nbkube-tmp", "mountPath": "/tmp"},
        {"name": "nbkube-home", "mountPath": "/home/nbkube"},
    ]


def test_data_volumes_and_mounts_are_passed_through_after_nbkubes():
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a.csv", "path": "in/a.csv"}]}},
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [
        {"name": "data", "mountPath": "/data", "readOnly": True, "subPath": "v1"},
        {"name": "conf", "mountPath": "/srv/conf"},
    ]
    template = _pod(_spec(volumes=volumes, volumeMounts=mounts))
    assert template["spec"]["volumes"][2:] == volumes
    assert _gateway(template)["volumeMounts"][2:] == mounts


def test_env_from_secrets_and_config_maps_is_referenced_never_resolved():
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode", "optional": True}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "PLAIN", "value": ""},
    ]
    env_from = [{"secretRef": {"name": "creds"}, "prefix": "CREDS_"}, {"configMapRef": {"name": "conf"}}]
    gateway = _gateway(_pod(_spec(env=env, envFrom=env_from)))
    assert gateway["env"][-4:] == env
    assert gateway["envFrom"] == env_from
    by_name = {e["name"]: e for e in gateway["env"]}
    assert by_name["KG_AUTH_TOKEN"] == {
        "name": "KG_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}},
    }


def test_every_variable_nbkube_sets_is_one_users_may_not():
    gateway = _gateway(_pod(_spec()))
    nbkube_names = [e["name"] for e in gateway["env"]]
    assert nbkube_names and all(env_name_problem(name) for name in nbkube_names)


def test_every_label_nbkube_sets_on_pods_is_one_the_overlay_may_not():
    template = _pod(_spec())
    for key in [*template["metadata"]["labels"], *template["metadata"]["annotations"]]:
        assert nbkube_key_problem(key), key
    assert set(NBKUBE_LABEL_KEYS) <= set(template["metadata"]["labels"])


def test_placement_fields_land_on_the_pod():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n"]}
                        ]
                    }
                ]
            }
        }
    }
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec = _spec(
        tolerations=tolerations,
        affinity=affinity,
        priorityClassName="notebooks",
        imagePullSecrets=[{"name": "registry"}],
        nodeSelector={"pool": "gpu"},
        resources={"limits": {"nvidia.com/gpu": 1, "cpu": "2"}, "requests": {"cpu": "500m"}},
    )
    pod = _pod(spec)["spec"]
    assert pod["tolerations"] == tolerations
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "notebooks"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert _gateway(_pod(spec))["resources"] == {
        "limits": {"nvidia.com/gpu": 1, "cpu": "2"},
        "requests": {"cpu": "500m"},
    }


def test_a_service_account_mounts_no_token_unless_asked():
    plain = _pod(_spec())["spec"]
    assert "serviceAccountName" not in plain and plain["automountServiceAccountToken"] is False
    named = _pod(_spec(serviceAccountName="reader"))["spec"]
    assert named["serviceAccountName"] == "reader" and named["automountServiceAccountToken"] is False
    opted = _pod(_spec(serviceAccountName="reader", automountServiceAccountToken=True))["spec"]
    assert opted["automountServiceAccountToken"] is True


def test_the_overlay_merges_by_name_appends_tolerations_and_adds_metadata():
    overlay = {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"example.com/cost-center": "42"}},
        "spec": {
            "containers": [
                {"name": "gateway", "env": [{"name": "EXTRA", "value": "1"}], "workingDir": "/home/nbkube"},
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["10.0.0.10"]},
            "enableServiceLinks": None,
        },
    }
    spec = _spec(tolerations=[{"key": "gpu", "operator": "Exists"}], podTemplate=overlay)
    assert podspec.overlay_problems(spec) == []
    template = _pod(spec)
    pod = template["spec"]
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["labels"]["nbkube.io/environment"] == "py"
    assert template["metadata"]["annotations"]["example.com/cost-center"] == "42"
    assert [c["name"] for c in pod["containers"]] == ["gateway", "sidecar"]
    gateway = _gateway(template)
    assert gateway["env"][-1] == {"name": "EXTRA", "value": "1"}
    assert any(e["name"] == "KG_AUTH_TOKEN" for e in gateway["env"])
    assert gateway["workingDir"] == "/home/nbkube"
    assert [v["name"] for v in pod["volumes"]] == ["nbkube-tmp", "nbkube-home", "cache"]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}, {"key": "spot", "operator": "Exists"}]
    assert pod["dnsConfig"] == {"nameservers": ["10.0.0.10"]}
    assert "enableServiceLinks" not in pod  # a null removes a field nbkube does not own


GATEWAY = "gateway"

REFUSED_OVERLAYS = [
    ("a new gateway command", {"containers": [{"name": GATEWAY, "command": ["sh"]}]}, "command is nbkube's"),
    ("gateway args", {"containers": [{"name": GATEWAY, "args": ["--debug"]}]}, "args is nbkube's"),
    (
        "gateway ports",
        {"containers": [{"name": GATEWAY, "ports": [{"containerPort": 1}]}]},
        "ports is nbkube's",
    ),
    (
        "a gateway probe",
        {"containers": [{"name": GATEWAY, "readinessProbe": {"exec": {"command": ["true"]}}}]},
        "readinessProbe is nbkube's",
    ),
    (
        "a startup probe",
        {"containers": [{"name": GATEWAY, "startupProbe": {"tcpSocket": {"port": 1}}}]},
        "startupProbe",
    ),
    ("the gateway image", {"containers": [{"name": GATEWAY, "image": "other"}]}, "image is nbkube's"),
    (
        "the gateway token",
        {"containers": [{"name": GATEWAY, "env": [{"name": "KG_AUTH_TOKEN", "value": "mine"}]}]},
        "KG_\\*, POD_IP and JUPYTER_RUNTIME_DIR are nbkube's",
    ),
    (
        "a new KG_ variable",
        {"containers": [{"name": GATEWAY, "env": [{"name": "KG_BASE_URL", "value": "/x"}]}]},
        "are nbkube's",
    ),
    (
        "a KG_ envFrom prefix",
        {"containers": [{"name": GATEWAY, "envFrom": [{"prefix": "KG_", "configMapRef": {"name": "c"}}]}]},
        "envFrom prefix KG_",
    ),
    ("the gateway removed", {"containers": None}, "may not be removed"),
    ("runAsNonRoot off", {"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot is nbkube's"),
    ("root", {"securityContext": {"runAsUser": 0}}, "runAsUser is nbkube's"),
    (
        "no seccomp",
        {"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "seccompProfile is nbkube's",
    ),
    ("hostNetwork", {"hostNetwork": True}, "hostNetwork may not be set"),
    ("hostPID", {"hostPID": True}, "hostPID may not be set"),
    ("hostIPC", {"hostIPC": True}, "hostIPC may not be set"),
    ("a token mounted", {"automountServiceAccountToken": True}, "spec.serviceAccountName and"),
    ("a ServiceAccount by the back door", {"serviceAccountName": "admin"}, "use spec.serviceAccountName"),
    (
        "a privileged sidecar",
        {"containers": [{"name": "side", "image": "x", "securityContext": {"privileged": True}}]},
        "containers\\[side\\] may not be privileged",
    ),
    (
        "a root init container",
        {"initContainers": [{"name": "init", "image": "x", "securityContext": {"runAsUser": 0}}]},
        "initContainers\\[init\\] may not run as root",
    ),
    (
        "an escalating sidecar",
        {"containers": [{"name": "side", "securityContext": {"allowPrivilegeEscalation": True}}]},
        "privilege escalation",
    ),
    (
        "added capabilities",
        {"containers": [{"name": "side", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]},
        "may not add capabilities",
    ),
    (
        "a hostPath volume",
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "hostPath volumes are refused",
    ),
    (
        "a projected token",
        {"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]},
        "a ServiceAccount token needs",
    ),
    (
        "nbkube's volume changed",
        {"volumes": [{"name": "nbkube-tmp", "hostPath": {"path": "/tmp"}}]},
        "nbkube-\\* volumes",
    ),
    ("an nbkube- volume added", {"volumes": [{"name": "nbkube-x", "emptyDir": {}}]}, "nbkube-\\* volumes"),
    (
        "nbkube's mount replaced",
        {"containers": [{"name": GATEWAY, "volumeMounts": [{"mountPath": "/tmp", "name": "cache"}]}]},
        "/tmp \\(nbkube-tmp\\) is nbkube's",
    ),
    (
        "a mount hiding nbkube's",
        {"containers": [{"name": GATEWAY, "volumeMounts": [{"mountPath": "/home", "name": "cache"}]}]},
        "/home would hide nbkube's own",
    ),
    (
        "ephemeral containers",
        {"ephemeralContainers": [{"name": "debug"}]},
        "ephemeralContainers cannot be set",
    ),
]


@pytest.mark.parametrize(
    ("case", "overlay", "message"), REFUSED_OVERLAYS, ids=[c[0] for c in REFUSED_OVERLAYS]
)
def test_an_overlay_changing_what_nbkube_owns_is_refused_before_anything_is_built(case, overlay, message):
    spec = _spec(podTemplate={"spec": overlay})
    problems = podspec.overlay_problems(spec)
    assert problems, case
    with pytest.raises(controller.InvalidEnvironmentSpec, match=message):
        controller.parse_spec({"image": "nbkube/kernel-python:dev", "podTemplate": {"spec": overlay}})


def test_the_packages_installer_is_nbkubes_too():
    overlay = {"initContainers": [{"name": "nbkube-packages", "command": ["sh", "-c", "true"]}]}
    spec = _spec(packages={"requirements": ["tabulate==0.9.0"]}, podTemplate={"spec": overlay})
    assert podspec.overlay_problems(spec) == [
        "podTemplate.spec.initContainers[nbkube-packages]: nbkube-* containers are nbkube's"
    ]
    spec = _spec(
        packages={"requirements": ["tabulate==0.9.0"]}, podTemplate={"spec": {"dnsPolicy": "Default"}}
    )
    assert podspec.overlay_problems(spec) == []
    assert [c["name"] for c in _pod(spec)["spec"]["initContainers"]] == ["nbkube-packages"]


def test_with_the_token_opted_in_an_overlay_may_project_one():
    volume = {
        "name": "t",
        "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}]},
    }
    spec = _spec(
        serviceAccountName="reader",
        automountServiceAccountToken=True,
        podTemplate={"spec": {"volumes": [volume]}},
    )
    assert podspec.overlay_problems(spec) == []
    assert _pod(spec)["spec"]["volumes"][-1] == volume


def test_a_spec_without_an_overlay_builds_the_same_pod_as_before_it_existed():
    assert _pod(_spec(podTemplate={}))["spec"] == _pod(_spec())["spec"]
    assert podspec.overlay_problems(_spec()) == []

"""NotebookEnvironment's volumes, env sources, placement and overlay metadata: what the model accepts
and what it refuses, with a message naming the field (the CRD's rules refuse the same, see
tests/operator/test_environment_inputs.py)."""

from decimal import Decimal

import pytest
from nbkube.api import NotebookEnvironmentSpec
from nbkube.api.crdgen import notebook_environment_crd
from nbkube.api.pod import NBKUBE_ENV_NAMES, NBKUBE_MOUNT_PATHS, parse_quantity
from pydantic import ValidationError

FULL = {
    "env": [
        {"name": "PLAIN", "value": "1"},
        {"name": "EMPTY", "value": ""},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode", "optional": True}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "MEMORY", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {
            "name": "MILLICORES",
            "valueFrom": {
                "resourceFieldRef": {"containerName": "gateway", "resource": "requests.cpu", "divisor": "1m"}
            },
        },
        {
            "name": "PAGES",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.hugepages-2Mi", "divisor": 1}},
        },
    ],
    "envFrom": [{"configMapRef": {"name": "conf"}, "prefix": "CONF_"}, {"secretRef": {"name": "creds"}}],
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a.ini", "path": "etc/a.ini"}]}},
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400, "optional": False}},
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}},
    ],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data", "readOnly": True, "subPath": "v1/train"},
        {"name": "conf", "mountPath": "/home/nbkube/conf"},
        {"name": "scratch", "mountPath": "/tmp/scratch"},
        {"name": "creds", "mountPath": "/var/run/creds"},
    ],
    "resources": {
        "requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1},
        "limits": {"cpu": 2, "memory": "2Gi", "nvidia.com/gpu": "1", "hugepages-2Mi": "4Mi"},
    },
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "dedicated",
            "operator": "Equal",
            "value": "notebooks",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
        {"operator": "Exists"},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["1"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"nbkube.io/environment": "py"}},
                    },
                }
            ]
        },
    },
    "priorityClassName": "notebooks-high",
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccountName": "reader",
    "automountServiceAccountToken": True,
    "podTemplate": {"metadata": {"labels": {"team": "ml"}, "annotations": {"example.com/owner": "ml"}}},
}


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "kernel:dev", **extra})


def _volume(mount_path, **mount):
    return {
        "volumes": [{"name": "v", "emptyDir": {}}],
        "volumeMounts": [{"name": "v", "mountPath": mount_path, **mount}],
    }


def test_every_new_field_is_accepted_together_and_round_trips_unchanged():
    spec = _spec(**FULL)
    # What was given, nothing defaulted: the form the pod builder copies into the pod spec.
    dumped = spec.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    for field, value in FULL.items():
        assert dumped[field] == value, field


REFUSED = [
    (
        "duplicate volume names",
        {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]},
        "unique",
    ),
    (
        "a volume of two kinds",
        {"volumes": [{"name": "a", "emptyDir": {}, "configMap": {"name": "c"}}]},
        "exactly one",
    ),
    ("a volume of no kind", {"volumes": [{"name": "a"}]}, "exactly one of persistentVolumeClaim"),
    ("nbkube's volume name prefix", {"volumes": [{"name": "nbkube-data", "emptyDir": {}}]}, "nbkube's own"),
    (
        "a mount of no declared volume",
        {"volumeMounts": [{"name": "a", "mountPath": "/a"}]},
        "no volume named a",
    ),
    ("a relative mountPath", _volume("data"), "mountPath"),
    ("a mountPath with ..", _volume("/data/../etc"), "mountPath"),
    ("a mountPath of /", _volume("/"), "mountPath"),
    ("a mountPath at /tmp", _volume("/tmp"), "would hide nbkube's /tmp"),
    ("a mountPath above /home/nbkube", _volume("/home"), "would hide nbkube's /home/nbkube"),
    ("a mountPath at nbkube's packages", _volume("/opt/nbkube/packages"), "would hide nbkube's /opt/nbkube"),
    ("a mountPath above nbkube's packages", _volume("/opt"), "would hide nbkube's /opt/nbkube/packages"),
    ("an absolute subPath", _volume("/data", subPath="/etc"), "subPath"),
    ("a subPath with ..", _volume("/data", subPath="a/../../b"), "subPath"),
    (
        "the same mountPath twice",
        {
            "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
            "volumeMounts": [{"name": "a", "mountPath": "/d"}, {"name": "b", "mountPath": "/d"}],
        },
        "mounted twice",
    ),
    (
        "a configMap item path with ..",
        {"volumes": [{"name": "a", "configMap": {"name": "c", "items": [{"key": "k", "path": "../k"}]}}]},
        "path",
    ),
    (
        "an env of value and valueFrom",
        {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
        "exactly one of value, valueFrom",
    ),
    ("an env of neither", {"env": [{"name": "A"}]}, "exactly one of value, valueFrom"),
    ("the gateway token", {"env": [{"name": "KG_AUTH_TOKEN", "value": "mine"}]}, "set by nbkube"),
    ("any KG_ setting", {"env": [{"name": "KG_PORT", "value": "1"}]}, "set by nbkube"),
    (
        "a valueFrom of two sources",
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.name"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ]
        },
        "exactly one of secretKeyRef",
    ),
    (
        "an unsupported fieldPath",
        {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]},
        "fieldPath",
    ),
    (
        "a resourceFieldRef of no compute resource",
        {"env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}}}]},
        "resource",
    ),
    (
        "a cpu divisor in bytes",
        {
            "env": [
                {"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}}
            ]
        },
        "divisor 1Mi is not one of 1m, 1",
    ),
    (
        "a memory divisor no kubelet takes",
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": 3}},
                }
            ]
        },
        "divisor 3 is not one of 1, 1k",
    ),
    (
        "a valueFrom of a field and a resource",
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.name"},
                        "resourceFieldRef": {"resource": "limits.cpu"},
                    },
                }
            ]
        },
        "exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
    ),
    (
        "a KG_ envFrom prefix",
        {"envFrom": [{"prefix": "KG_", "configMapRef": {"name": "c"}}]},
        "set by nbkube",
    ),
    ("an envFrom of no source", {"envFrom": [{"prefix": "X_"}]}, "exactly one of configMapRef, secretRef"),
    ("a quantity that is none", {"resources": {"limits": {"cpu": "lots"}}}, "not a quantity"),
    ("a negative quantity", {"resources": {"limits": {"memory": -1}}}, "not a quantity"),
    (
        "an unknown resource",
        {"resources": {"limits": {"gpu": 1}}},
        "extended resource such as nvidia.com/gpu",
    ),
    ("a kubernetes.io resource", {"resources": {"limits": {"kubernetes.io/gpu": 1}}}, "extended resource"),
    ("a GPU requested only", {"resources": {"requests": {"nvidia.com/gpu": 1}}}, "set it in limits"),
    ("half a GPU", {"resources": {"limits": {"nvidia.com/gpu": "500m"}}}, "whole number"),
    (
        "GPU requests other than limits",
        {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
        "must equal limits",
    ),
    (
        "cpu requests above limits",
        {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}}},
        "must not exceed",
    ),
    (
        "an Exists toleration with a value",
        {"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]},
        "value must be empty",
    ),
    ("a toleration without key nor Exists", {"tolerations": [{"value": "b"}]}, "operator must be Exists"),
    (
        "tolerationSeconds without NoExecute",
        {"tolerations": [{"key": "a", "operator": "Exists", "tolerationSeconds": 5}]},
        "NoExecute",
    ),
    (
        "an In node selector without values",
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In"}]}]
                    }
                }
            }
        },
        "needs values",
    ),
    (
        "a Gt node selector of no integer",
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["x"]}]}
                        ]
                    }
                }
            }
        },
        "one integer value",
    ),
    ("a token without a ServiceAccount", {"automountServiceAccountToken": True}, "needs serviceAccountName"),
    (
        "nbkube's label in the overlay",
        {"podTemplate": {"metadata": {"labels": {"nbkube.io/environment": "x"}}}},
        "set by nbkube",
    ),
    (
        "an app.kubernetes.io label of nbkube's",
        {"podTemplate": {"metadata": {"labels": {"app.kubernetes.io/instance": "x"}}}},
        "set by nbkube",
    ),
    (
        "an annotation key that is no name",
        {"podTemplate": {"metadata": {"annotations": {"a b": "x"}}}},
        "qualified name",
    ),
]


@pytest.mark.parametrize(("case", "extra", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_model_refuses_bad_inputs_with_a_message_naming_what(case, extra, message):
    with pytest.raises(ValidationError, match=message):
        _spec(**extra)


def test_a_mount_inside_nbkubes_own_mounts_is_allowed():
    spec = _spec(**_volume("/home/nbkube/data"))
    assert spec.volume_mounts[0].mount_path == "/home/nbkube/data"
    assert all("/home/nbkube/data" != p for p in NBKUBE_MOUNT_PATHS)


def test_quantities_parse_as_kubernetes_reads_them():
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("2Gi") == 2 * 1024**3
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("1.5k") == 1500
    assert parse_quantity(4) == 4
    for bad in ("1.2.3", "Gi", "-1", "1 Gi", "1gi"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


def test_the_crd_carries_the_same_reserved_names_as_the_model():
    schema = notebook_environment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    env_rules = " ".join(r["rule"] for r in schema["properties"]["env"]["items"]["x-kubernetes-validations"])
    assert "'KG_'" in env_rules and all(f"'{n}'" in env_rules for n in NBKUBE_ENV_NAMES)
    spec_rules = " ".join(r["rule"] for r in schema["x-kubernetes-validations"])
    assert all(f"'{p}'" in spec_rules for p in NBKUBE_MOUNT_PATHS)
    volume_rules = " ".join(
        r["rule"] for r in schema["properties"]["volumes"]["items"]["x-kubernetes-validations"]
    )
    assert "'nbkube-'" in volume_rules

"""The pod-spec pieces a NotebookEnvironment exposes: data volumes, env from Secrets and ConfigMaps,
placement (tolerations, affinity, extra resources) and a pod-template overlay.

Each is a subset of the Kubernetes type of the same name, validated twice: by the model (the operator
reports what it refuses as InvalidSpec) and by the CRD's schema and CEL rules (the API server refuses
it at `kubectl apply`). Names and paths nbkube uses itself are reserved here, in one place: the builder
(nbkube.environment) takes them from this module.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from nbkube.api.common import ApiModel

# What nbkube puts in every gateway pod itself; users may not declare or override these.
NBKUBE_VOLUME_PREFIX = "nbkube-"
TMP_VOLUME = "nbkube-tmp"
HOME_VOLUME = "nbkube-home"
TMP_MOUNT_PATH = "/tmp"
HOME_MOUNT_PATH = "/home/nbkube"
PACKAGES_MOUNT_PATH = "/opt/nbkube/packages"  # environment/packages.py: where pip installs
REQUIREMENTS_MOUNT_PATH = "/opt/nbkube/requirements"  # and the requirements ConfigMap
NBKUBE_MOUNT_PATHS = (TMP_MOUNT_PATH, HOME_MOUNT_PATH, PACKAGES_MOUNT_PATH, REQUIREMENTS_MOUNT_PATH)
# Every Jupyter Kernel Gateway setting is read from KG_*; nbkube sets the ones it needs, and a user's
# KG_* could only fight them (KG_AUTH_TOKEN above all). The other names the gateway container gets:
NBKUBE_ENV_PREFIX = "KG_"
NBKUBE_ENV_NAMES = ("POD_IP", "JUPYTER_RUNTIME_DIR")
# Labels and annotations nbkube sets on gateway pods (selectors, the spec hash): not the overlay's.
NBKUBE_LABEL_KEYS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
NBKUBE_KEY_PREFIX = "nbkube.io/"

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
# A path segment that is neither empty, "." nor "..". Paths built of them cannot climb out of where
# they are put, and have no "//" or trailing "/".
_SEGMENT = r"([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)"
ABSOLUTE_PATH = rf"^(/{_SEGMENT})+$"
RELATIVE_PATH = rf"^{_SEGMENT}(/{_SEGMENT})*$"
# A qualified name ([prefix/]name), as label keys, annotation keys and resource names are.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Kubernetes' quantity grammar: a non-negative decimal, then a binary or decimal SI suffix or an exponent.
QUANTITY = r"^(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?$"
FIELD_PATH = (
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
HUGEPAGES_PREFIX = "hugepages-"
# What env's resourceFieldRef may name, and the divisors Kubernetes accepts for each (as it validates a
# container's env: cpu in cores or millicores, the others in bytes of a decimal or binary prefix).
RESOURCE_FIELD = (
    r"^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPE])?)$"
)
CPU_DIVISORS = ("1m", "1")
BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _exactly_one(model: ApiModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        names = ", ".join(type(model).model_fields[f].alias or f for f in fields)
        raise ValueError(f"{what}: exactly one of {names} is required")


def _cel_exactly_one(fields: tuple[str, ...], message: str) -> dict[str, Any]:
    present = ", ".join(f"has(self.{f})" for f in fields)
    return {"rule": f"[{present}].filter(x, x).size() == 1", "message": message}


def env_name_problem(name: str) -> str | None:
    """Why a user may not set this env name on the gateway container, or None."""
    if name.startswith(NBKUBE_ENV_PREFIX) or name in NBKUBE_ENV_NAMES:
        reserved = ", ".join(NBKUBE_ENV_NAMES)
        return f"env {name}: {NBKUBE_ENV_PREFIX}* and {reserved} are set by nbkube"
    return None


_ENV_NAME_RULE = {
    "rule": f"!self.name.startsWith('{NBKUBE_ENV_PREFIX}') && !(self.name in {_cel_list(NBKUBE_ENV_NAMES)})",
    "message": f"{NBKUBE_ENV_PREFIX}* and {', '.join(NBKUBE_ENV_NAMES)} are set by nbkube",
    "fieldPath": ".name",
}


# -- quantities -----------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(QUANTITY)
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    **{s: Decimal(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def parse_quantity(value: int | str) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", "1e3", 4) as a number; ValueError if it is none."""
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY_RE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (such as 500m, 2Gi, 1)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a quantity") from exc


def _check_quantity(value: int | str) -> int | str:
    parse_quantity(value)
    return value


# The CRD checks the same grammar (crdgen turns the pattern into an integer-or-string schema).
Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY, "maxLength": 64}),
]


# -- env ------------------------------------------------------------------------------------------


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap of the environment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY)
    optional: bool | None = Field(None, description="Start the pod even if it is missing.")


class FieldSelector(ApiModel):
    field_path: str = Field(max_length=512, pattern=FIELD_PATH)
    api_version: Literal["v1"] | None = None


class ResourceFieldSelector(ApiModel):
    """A compute resource of a container of the gateway pod, as the kubelet gives it: the limit (the
    node's allocatable amount when none is set) or the request, divided by divisor (1 unless given) and
    rounded up."""

    container_name: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Whose resources: the container the variable is set in unless given (the gateway; "
        "the packages installer has the same resources).",
    )
    resource: str = Field(
        max_length=64,
        pattern=RESOURCE_FIELD,
        description="limits.cpu, limits.memory, limits.ephemeral-storage, limits.hugepages-<size>, or the "
        "same of requests.",
    )
    divisor: Quantity | None = None

    @model_validator(mode="after")
    def _check_divisor(self) -> ResourceFieldSelector:
        if self.divisor is None:
            return self
        allowed = CPU_DIVISORS if self.resource.endswith(".cpu") else BYTE_DIVISORS
        if str(self.divisor) not in allowed:
            raise ValueError(
                f"resourceFieldRef {self.resource}: divisor {self.divisor} is not one of {', '.join(allowed)}"
            )
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "!has(self.divisor) || (self.resource.endsWith('.cpu') ? "
                f"string(self.divisor) in {_cel_list(CPU_DIVISORS)} : "
                f"string(self.divisor) in {_cel_list(BYTE_DIVISORS)})",
                "message": f"divisor is one of {', '.join(CPU_DIVISORS)} for cpu, one of "
                f"{', '.join(BYTE_DIVISORS)} for the other resources",
                "fieldPath": ".divisor",
            }
        ]


ENV_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")


class EnvVarSource(ApiModel):
    """Exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef. Values are referenced,
    never read by the operator: the kubelet resolves them."""

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    @model_validator(mode="after")
    def _one(self) -> EnvVarSource:
        fields = ("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref")
        _exactly_one(self, fields, "valueFrom")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [_cel_exactly_one(ENV_SOURCES, f"exactly one of {', '.join(ENV_SOURCES)}")]


class EnvVar(ApiModel):
    """An environment variable for the gateway and its kernels: exactly one of value and valueFrom."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(None, max_length=32768)
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _check(self) -> EnvVar:
        _exactly_one(self, ("value", "value_from"), f"env {self.name}")
        problem = env_name_problem(self.name)
        if problem:
            raise ValueError(problem)
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [_cel_exactly_one(("value", "valueFrom"), "exactly one of value, valueFrom"), _ENV_NAME_RULE]


class NamedRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    optional: bool | None = None


class EnvFromSource(ApiModel):
    """Every key of a ConfigMap or Secret as a variable (prefixed). nbkube's own variables win over
    them, as `env` wins over `envFrom` in Kubernetes."""

    prefix: str | None = Field(None, max_length=253, pattern=ENV_NAME_PATTERN)
    config_map_ref: NamedRef | None = None
    secret_ref: NamedRef | None = None

    @model_validator(mode="after")
    def _check(self) -> EnvFromSource:
        _exactly_one(self, ("config_map_ref", "secret_ref"), "envFrom")
        if self.prefix and self.prefix.startswith(NBKUBE_ENV_PREFIX):
            raise ValueError(f"envFrom prefix {self.prefix}: {NBKUBE_ENV_PREFIX}* is set by nbkube")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            _cel_exactly_one(("configMapRef", "secretRef"), "exactly one of configMapRef, secretRef"),
            {
                "rule": f"!has(self.prefix) || !self.prefix.startsWith('{NBKUBE_ENV_PREFIX}')",
                "message": f"{NBKUBE_ENV_PREFIX}* is set by nbkube",
                "fieldPath": ".prefix",
            },
        ]


# -- volumes --------------------------------------------------------------------------------------


class KeyToPath(ApiModel):
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY)
    path: str = Field(min_length=1, max_length=1024, pattern=RELATIVE_PATH, description="Relative, no '..'.")
    mode: int | None = Field(None, ge=0, le=0o777)


class ConfigMapVolumeSource(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    items: list[KeyToPath] = Field(default_factory=list, max_length=64, description="All keys if empty.")
    default_mode: int | None = Field(None, ge=0, le=0o777)
    optional: bool | None = None


class SecretVolumeSource(ApiModel):
    secret_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    items: list[KeyToPath] = Field(default_factory=list, max_length=64, description="All keys if empty.")
    default_mode: int | None = Field(None, ge=0, le=0o777)
    optional: bool | None = None


class PersistentVolumeClaimVolumeSource(ApiModel):
    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    read_only: bool | None = None


class EmptyDirVolumeSource(ApiModel):
    medium: Literal["", "Memory"] | None = None
    size_limit: Quantity | None = None


class Volume(ApiModel):
    """A data volume of the gateway pods: exactly one of persistentVolumeClaim, configMap, secret,
    emptyDir."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Volume:
        sources = ("persistent_volume_claim", "config_map", "secret", "empty_dir")
        _exactly_one(self, sources, f"volume {self.name}")
        if self.name.startswith(NBKUBE_VOLUME_PREFIX):
            raise ValueError(f"volume {self.name}: names starting {NBKUBE_VOLUME_PREFIX} are nbkube's own")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            _cel_exactly_one(
                ("persistentVolumeClaim", "configMap", "secret", "emptyDir"),
                "exactly one of persistentVolumeClaim, configMap, secret, emptyDir",
            ),
            {
                "rule": f"!self.name.startsWith('{NBKUBE_VOLUME_PREFIX}')",
                "message": f"volume names starting {NBKUBE_VOLUME_PREFIX} are nbkube's own",
                "fieldPath": ".name",
            },
        ]


class VolumeMount(ApiModel):
    """Where the gateway container (and so every kernel) sees one of `volumes`."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="One of volumes.")
    mount_path: str = Field(max_length=1024, pattern=ABSOLUTE_PATH, description="Absolute, no '..'.")
    read_only: bool | None = None
    sub_path: str | None = Field(
        None, min_length=1, max_length=1024, pattern=RELATIVE_PATH, description="Relative, no '..'."
    )


def _shadows(mount_path: str, reserved: str) -> bool:
    return reserved == mount_path or reserved.startswith(mount_path + "/")


def check_volumes(volumes: list[Volume], mounts: list[VolumeMount]) -> None:
    """Unique volume names, mounts of declared volumes at distinct paths that leave nbkube's own
    mounts alone (a mount at or above one of NBKUBE_MOUNT_PATHS would hide it)."""
    names = [v.name for v in volumes]
    if len(set(names)) != len(names):
        raise ValueError("volume names must be unique")
    paths: set[str] = set()
    for mount in mounts:
        if mount.name not in names:
            raise ValueError(f"volumeMounts {mount.mount_path}: no volume named {mount.name} in volumes")
        if mount.mount_path in paths:
            raise ValueError(f"volumeMounts {mount.mount_path}: mounted twice")
        paths.add(mount.mount_path)
        for reserved in NBKUBE_MOUNT_PATHS:
            if _shadows(mount.mount_path, reserved):
                raise ValueError(f"volumeMounts {mount.mount_path}: would hide nbkube's {reserved}")


def volume_rules() -> list[dict[str, Any]]:
    """CEL rules of the environment spec over volumes and volumeMounts (see check_volumes)."""
    hides = " || ".join(
        f"'{p}' == m.mountPath || '{p}'.startsWith(m.mountPath + '/')" for p in NBKUBE_MOUNT_PATHS
    )
    return [
        {
            "rule": "self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))",
            "message": "volume names must be unique",
            "fieldPath": ".volumes",
        },
        {
            "rule": "self.volumeMounts.all(m, self.volumes.exists(v, v.name == m.name))",
            "message": "volumeMounts must name a volume of volumes",
            "fieldPath": ".volumeMounts",
        },
        {
            "rule": "self.volumeMounts.all(m, self.volumeMounts.exists_one(n, n.mountPath == m.mountPath))",
            "message": "volumeMounts must have distinct mountPaths",
            "fieldPath": ".volumeMounts",
        },
        {
            "rule": f"!self.volumeMounts.exists(m, {hides})",
            "message": f"a volumeMount at or above {', '.join(NBKUBE_MOUNT_PATHS)} would hide nbkube's own",
            "fieldPath": ".volumeMounts",
        },
    ]


# -- resources ------------------------------------------------------------------------------------


def _resource_kind(name: str) -> str:
    """standard, hugepages or extended (a domain-prefixed name outside kubernetes.io); ValueError else."""
    if name in STANDARD_RESOURCES:
        return "standard"
    if name.startswith(HUGEPAGES_PREFIX):
        parse_quantity(name.removeprefix(HUGEPAGES_PREFIX))
        return "hugepages"
    domain, _, _ = name.rpartition("/")
    if domain and re.match(QUALIFIED_NAME, name) and not _in_kubernetes_io(domain):
        return "extended"
    raise ValueError(
        f"resource {name!r}: not cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource "
        "such as nvidia.com/gpu"
    )


def _in_kubernetes_io(domain: str) -> bool:
    return domain == "kubernetes.io" or domain.endswith(".kubernetes.io")


class ResourceRequirements(ApiModel):
    """Compute resources of each gateway pod (its kernels share them). Extended resources such as
    nvidia.com/gpu are whole numbers set in limits (requests, if given, equal to them)."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _check(self) -> ResourceRequirements:
        for section in ("requests", "limits"):
            for name, value in getattr(self, section).items():
                kind = _resource_kind(name)
                try:
                    amount = parse_quantity(value)
                except ValueError as exc:
                    raise ValueError(f"resources.{section}.{name}: {exc}") from None
                if kind == "extended" and amount != amount.to_integral_value():
                    raise ValueError(f"resources.{section}.{name}: an extended resource is a whole number")
        for name, value in self.requests.items():
            limit = self.limits.get(name)
            kind = _resource_kind(name)
            if kind != "standard" and limit is None:
                raise ValueError(f"resources.requests.{name}: set it in limits (it cannot be overcommitted)")
            if limit is None:
                continue
            if kind != "standard" and parse_quantity(value) != parse_quantity(limit):
                raise ValueError(f"resources.{name}: requests must equal limits (it cannot be overcommitted)")
            if parse_quantity(value) > parse_quantity(limit):
                raise ValueError(f"resources.{name}: requests must not exceed limits")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        # Quantities are checked by their schema's pattern; comparing them (requests against limits,
        # whole numbers) is left to the model: CEL's quantity() on integer-or-string values costs more
        # than a CRD's validation budget allows.
        standard = _cel_list(STANDARD_RESOURCES)
        name_ok = (
            f"k in {standard} || k.startsWith('{HUGEPAGES_PREFIX}') || (k.matches({QUALIFIED_NAME!r}) && "
            "k.contains('/') && k.split('/')[0] != 'kubernetes.io' && "
            "!k.split('/')[0].endsWith('.kubernetes.io'))"
        )
        names = " && ".join(f"(!has(self.{m}) || self.{m}.all(k, {name_ok}))" for m in ("requests", "limits"))
        rules = [
            {
                "rule": names,
                "message": "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or an "
                "extended resource such as nvidia.com/gpu",
            }
        ]
        rules.append(
            {
                "rule": f"!has(self.requests) || self.requests.all(k, k in {standard} || "
                "(has(self.limits) && k in self.limits))",
                "message": "hugepages and extended resources such as nvidia.com/gpu are set in limits (they "
                "cannot be overcommitted)",
                "fieldPath": ".requests",
            }
        )
        return rules


def _map_key_rules(*, nbkube_keys_refused: bool = False) -> dict[str, Any]:
    """CEL rules of a label or annotation map's keys (its json_schema_extra)."""
    rules = [
        {
            "rule": f"self.all(k, k.size() <= 317 && k.matches({QUALIFIED_NAME!r}))",
            "message": "keys are qualified names such as example.com/name",
        }
    ]
    if nbkube_keys_refused:
        rules.append(
            {
                "rule": f"self.all(k, !(k in {_cel_list(NBKUBE_LABEL_KEYS)}) && "
                f"!k.startsWith('{NBKUBE_KEY_PREFIX}'))",
                "message": f"{', '.join(NBKUBE_LABEL_KEYS)} and {NBKUBE_KEY_PREFIX}* are set by nbkube",
            }
        )
    return {"x-kubernetes-validations": rules}


# -- placement ------------------------------------------------------------------------------------


class Toleration(ApiModel):
    key: str | None = Field(None, max_length=317, pattern=QUALIFIED_NAME)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63, pattern=LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, description="Only with effect NoExecute.")

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("toleration: value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("toleration: operator must be Exists when key is empty")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration: tolerationSeconds needs effect NoExecute")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        exists = "has(self.operator) && self.operator == 'Exists'"
        return [
            {
                "rule": f"!({exists}) || !has(self.value) || self.value == ''",
                "message": "value must be empty when operator is Exists",
            },
            {
                "rule": f"(has(self.key) && self.key != '') || ({exists})",
                "message": "operator must be Exists when key is empty",
            },
            {
                "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "message": "tolerationSeconds needs effect NoExecute",
            },
        ]


def _check_values(operator: str, values: list[str], what: str) -> None:
    if operator in ("In", "NotIn") and not values:
        raise ValueError(f"{what}: operator {operator} needs values")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"{what}: operator {operator} takes no values")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not re.fullmatch(r"-?\d+", values[0])):
        raise ValueError(f"{what}: operator {operator} needs one integer value")


def _values_rules(with_gt_lt: bool) -> list[dict[str, Any]]:
    rules = [
        {
            "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && self.values.size() > 0)",
            "message": "operators In and NotIn need values",
        },
        {
            "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || "
            "self.values.size() == 0",
            "message": "operators Exists and DoesNotExist take no values",
        },
    ]
    if with_gt_lt:
        rules.append(
            {
                "rule": "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && self.values.size() == 1 && "
                "self.values[0].matches('^-?[0-9]+$'))",
                "message": "operators Gt and Lt need one integer value",
            }
        )
    return rules


class NodeSelectorRequirement(ApiModel):
    key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_NAME)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> NodeSelectorRequirement:
        _check_values(self.operator, self.values, f"node selector {self.key}")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return _values_rules(with_gt_lt=True)


class NodeSelectorTerm(ApiModel):
    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)


class NodeSelector(ApiModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=8)


class PreferredSchedulingTerm(ApiModel):
    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=8
    )


class LabelSelectorRequirement(ApiModel):
    key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_NAME)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> LabelSelectorRequirement:
        _check_values(self.operator, self.values, f"label selector {self.key}")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return _values_rules(with_gt_lt=False)


class LabelSelector(ApiModel):
    match_labels: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=16, json_schema_extra=_map_key_rules()
    )
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)

    @field_validator("match_labels")
    @classmethod
    def _keys(cls, labels: dict[str, str]) -> dict[str, str]:
        _check_keys(labels, "matchLabels")
        return labels


class PodAffinityTerm(ApiModel):
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] = Field(
        default_factory=list, max_length=16
    )
    topology_key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_NAME)


class WeightedPodAffinityTerm(ApiModel):
    weight: int = Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=8
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=8
    )


class Affinity(ApiModel):
    """Node affinity and pod (anti-)affinity of the gateway pods: fields as in a pod spec."""

    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class LocalObjectReference(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


# -- the pod-template overlay ---------------------------------------------------------------------


def _check_keys(mapping: dict[str, str], what: str) -> None:
    for key in mapping:
        if len(key) > 317 or not re.match(QUALIFIED_NAME, key):
            raise ValueError(f"{what} key {key[:80]!r} is not a qualified name such as example.com/name")


def nbkube_key_problem(key: str) -> str | None:
    if key in NBKUBE_LABEL_KEYS or key.startswith(NBKUBE_KEY_PREFIX):
        return f"{key} is set by nbkube"
    return None


class OverlayMetadata(ApiModel):
    labels: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=32, json_schema_extra=_map_key_rules(nbkube_keys_refused=True)
    )
    annotations: dict[str, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict, max_length=32, json_schema_extra=_map_key_rules(nbkube_keys_refused=True)
    )

    @model_validator(mode="after")
    def _check(self) -> OverlayMetadata:
        for what, mapping in (("labels", self.labels), ("annotations", self.annotations)):
            _check_keys(mapping, f"podTemplate.metadata.{what}")
            for key in mapping:
                problem = nbkube_key_problem(key)
                if problem:
                    raise ValueError(f"podTemplate.metadata.{what}: {problem}")
        return self


class PodTemplateOverlay(ApiModel):
    """Merged onto the gateway pods nbkube builds, for what the other fields do not cover (as Enterprise
    Gateway's kernel-pod templates): containers, volumes, env and other named lists are merged by name,
    the container `gateway` being nbkube's. The operator refuses (Ready=False, InvalidSpec) an overlay
    that changes what nbkube owns: the gateway's command, args, ports, probes, image and securityContext,
    nbkube's env, volumes and labels, the pod's non-root, seccomp and host namespaces settings, privileged
    or root containers, hostPath volumes, and ServiceAccount tokens unless automountServiceAccountToken
    is true."""

    metadata: OverlayMetadata = Field(default_factory=OverlayMetadata)
    spec: dict[str, Any] = Field(default_factory=dict, max_length=64, description="A pod spec fragment.")

"""NotebookEnvironment: a kernel runtime served by Jupyter Kernel Gateway pods."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from nbkube.api.common import ApiModel, Condition, StatusModel
from nbkube.api.pod import (
    DNS_SUBDOMAIN,
    Affinity,
    EnvFromSource,
    EnvVar,
    LocalObjectReference,
    PodTemplateOverlay,
    ResourceRequirements,
    Toleration,
    Volume,
    VolumeMount,
    check_volumes,
    volume_rules,
)
from nbkube.api.run import ConfigMapKeyRef

__all__ = ["EnvVar", "NotebookEnvironmentSpec", "NotebookEnvironmentStatus", "ResourceRequirements"]


# A plain PEP 508 requirement specifier: a name, extras, version clauses and an environment marker;
# no URL (`name @ url`), no path, no pip option (`-e`, `-r`, `--index-url`): an option or a URL in a spec
# would change where pip installs from without saying so (the index is `packages.indexUrl`).
_REQ_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQ_VERSION = r"(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
REQUIREMENT_PATTERN = (
    rf"^{_REQ_NAME}\s*(?:\[\s*(?:{_REQ_NAME}(?:\s*,\s*{_REQ_NAME})*)?\s*\])?"
    rf"\s*(?:{_REQ_VERSION}(?:\s*,\s*{_REQ_VERSION})*)?"
    r"\s*(?:;\s*[A-Za-z0-9_.'\"()<>=!~ ,*+-]+)?$"
)
# pip reads a bare name ending like an archive (`tool.whl`, `data.tar.gz`) as a file path.
ARCHIVE_NAME_PATTERN = (
    r"^[A-Za-z0-9._-]*\.(?:whl|zip|tar|tgz|tbz|txz|tlz|tar\.(?:gz|bz2|xz|lz|lzma))(?:[^A-Za-z0-9._-]|$)"
)
INDEX_URL_PATTERN = r"^https?://[^\s/@?#]+(?:/[^\s@]*)?$"

Requirement = Annotated[str, Field(min_length=1, max_length=512, pattern=REQUIREMENT_PATTERN)]


class Packages(ApiModel):
    """pip packages installed into each gateway pod before it reports Ready, on its kernels' path."""

    requirements: list[Requirement] = Field(
        default_factory=list,
        max_length=256,
        description="Plain requirement specifiers (PEP 508 without URLs), e.g. tabulate==0.9.0 or "
        "pandas[excel]>=2,<3; no pip options, URLs or paths.",
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        None,
        description="A pip requirements file in a ConfigMap of the environment's namespace, read by pip "
        "in the pod (the ConfigMap's other keys beside it, for -c or -r); a change of its content rolls "
        "the gateway pods.",
    )
    index_url: str | None = Field(
        None,
        max_length=2048,
        pattern=INDEX_URL_PATTERN,
        description="pip's --index-url (instead of PyPI); no credentials in it: see the README.",
    )

    @field_validator("requirements")
    @classmethod
    def _no_archive_names(cls, value: list[str]) -> list[str]:
        for requirement in value:
            if re.match(ARCHIVE_NAME_PATTERN, requirement):
                raise ValueError(f"{requirement!r} looks like a file name, which pip would read as a path")
        return value

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": f"self.requirements.all(r, !r.matches(r'{ARCHIVE_NAME_PATTERN}'))",
                "message": "requirements must not look like file names (pip would read them as paths)",
                "fieldPath": ".requirements",
            }
        ]

    @property
    def wanted(self) -> bool:
        return bool(self.requirements or self.config_map_ref)


class NotebookEnvironmentSpec(ApiModel):
    """A kernel runtime: reconciled into Jupyter Kernel Gateway pods, a token Secret and a NetworkPolicy."""

    image: str = Field(min_length=1, max_length=512, description="Kernel image running the nbkube gateway.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    kernel_name: str = Field(
        "python3", min_length=1, max_length=64, description="Kernel spec the gateway starts kernels from."
    )
    replicas: int = Field(1, ge=0, le=32, description="Gateway pods.")
    max_kernels_per_pod: int = Field(8, ge=1, le=256, description="Kernels one gateway pod may hold.")
    warm_kernels: int = Field(
        1, ge=0, le=64, description="Kernels started ahead on each pod and handed to runs instantly."
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    env_from: list[EnvFromSource] = Field(
        default_factory=list, max_length=16, description="Every key of a ConfigMap or Secret as a variable."
    )
    idle_kernel_timeout_seconds: int = Field(
        600, ge=0, le=7 * 86400, description="Idle kernels are culled after this long; 0 never culls."
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    # Pod-spec pieces (nbkube.api.pod); nbkube.environment.podspec puts them in the gateway pods.
    volumes: list[Volume] = Field(default_factory=list, max_length=32, description="Data volumes.")
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, max_length=32, description="Where kernels see volumes."
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: Affinity | None = None
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Runs the gateway pods under this ServiceAccount; its token is mounted only with "
        "automountServiceAccountToken.",
    )
    automount_service_account_token: bool = Field(
        False, description="Mount the serviceAccountName's token into the pods (kernels can read it)."
    )
    pod_template: PodTemplateOverlay | None = None
    command: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Overrides the gateway command (default: python -m nbkube.gateway).",
    )
    packages: Packages | None = None

    @model_validator(mode="after")
    def _check_pod_fields(self) -> NotebookEnvironmentSpec:
        check_volumes(self.volumes, self.volume_mounts)
        if self.automount_service_account_token and not self.service_account_name:
            raise ValueError("automountServiceAccountToken needs serviceAccountName")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            *volume_rules(),
            {
                "rule": "!self.automountServiceAccountToken || has(self.serviceAccountName)",
                "message": "automountServiceAccountToken needs serviceAccountName",
                "fieldPath": ".automountServiceAccountToken",
            },
            {
                "rule": "self.warmKernels <= self.maxKernelsPerPod",
                "message": "warmKernels must not exceed maxKernelsPerPod",
                "fieldPath": ".warmKernels",
            },
            {
                "rule": "self.env.all(e, self.env.exists_one(f, f.name == e.name))",
                "message": "env names must be unique",
                "fieldPath": ".env",
            },
        ]


class KernelCounts(StatusModel):
    in_use: int = Field(0, ge=0)
    warm: int = Field(0, ge=0)
    capacity: int = Field(0, ge=0)


class NotebookEnvironmentStatus(StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int = Field(0, ge=0)
    ready_replicas: int = Field(0, ge=0)
    ready: str = Field("0/0", description="readyReplicas/replicas, for printing.")
    kernels: KernelCounts = Field(default_factory=KernelCounts)
    token_secret: str | None = None
    spec_hash: str | None = None

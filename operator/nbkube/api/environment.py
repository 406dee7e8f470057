"""NotebookEnvironment: a kernel runtime served by Jupyter Kernel Gateway pods."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

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

__all__ = ["EnvVar", "NotebookEnvironmentSpec", "NotebookEnvironmentStatus", "ResourceRequirements"]


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

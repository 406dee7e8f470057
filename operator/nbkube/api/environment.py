"""NotebookEnvironment: a kernel runtime served by Jupyter Kernel Gateway pods."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nbkube.api.common import ApiModel, Condition, StatusModel

Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


class ResourceRequirements(ApiModel):
    """Compute resources of each gateway pod (its kernels share them)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class EnvVar(ApiModel):
    """An environment variable for the gateway and its kernels."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    value: str = ""


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
    idle_kernel_timeout_seconds: int = Field(
        600, ge=0, le=7 * 86400, description="Idle kernels are culled after this long; 0 never culls."
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Overrides the gateway command (default: python -m nbkube.gateway).",
    )

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
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

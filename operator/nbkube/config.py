"""Operator settings, read once from the environment (NBKUBE_*)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator


class Settings(BaseModel):
    namespace: str = Field("nbkube", description="Namespace the operator runs in.")
    operator_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "nbkube",
            "app.kubernetes.io/component": "operator",
        }
    )
    data_dir: Path = Field(
        Path("/var/lib/nbkube"), description="The results PVC: the git repository and run journals."
    )
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    api_port: int = Field(
        8443, description="The user-facing API's TLS port (results, clones, logs), behind the API server."
    )
    api_host: str = "0.0.0.0"
    api_service: str = Field(
        "nbkube-api", description="The Service the APIService routes to: the serving certificate's name."
    )
    api_manage_ca_bundle: bool = Field(
        True, description="Write the serving CA into the APIService's caBundle at start-up."
    )
    status_interval_seconds: float = Field(1.0, gt=0)
    gateway_port: int = 8888
    gateway_request_timeout_seconds: float = 30.0
    environment_wait_seconds: float = Field(
        300.0, description="How long a run waits for its environment to have a ready gateway pod."
    )
    checkpoint_every_cells: int = 20
    checkpoint_every_seconds: float = 30.0
    janitor_interval_seconds: float = Field(
        300.0, gt=0, description="How often kernels and journals nothing holds any more are reclaimed."
    )
    janitor_first_sweep_seconds: float = Field(60.0, ge=0)
    orphan_kernel_idle_seconds: float = Field(
        120.0, ge=0, description="A kernel no run holds and nobody is connected to is shut down after this."
    )
    busy_orphan_kernel_seconds: float = Field(
        1800.0,
        ge=0,
        description="A busy kernel no run holds and nobody is connected to is shut down after this.",
    )
    journal_grace_seconds: float = Field(60.0, ge=0)
    unknown_journal_seconds: float = Field(3600.0, ge=0)
    gateway_token_key_secret: str = Field(
        "nbkube-gateway-token-key",
        min_length=1,
        description="The Secret in the operator's namespace holding the key gateway tokens are derived "
        "from; created at start-up if absent.",
    )
    read_secrets: bool = Field(
        True,
        description="Hand runs the Secrets they reference (spec.env valueFrom.secretKeyRef, spec.files "
        "secret): the operator `get`s them. False: such runs fail at once (the chart's rbac.readSecrets).",
    )
    gateway_egress_allow_all: bool = Field(
        False, description="Let gateway pods connect anywhere, the operator and the API server included."
    )
    gateway_egress_denied_cidrs: list[str] = Field(
        default_factory=list,
        description="Addresses gateway pods may not connect to (the API server's endpoints; with CNIs "
        "whose ipBlock rules match pod IPs, the pod and service CIDRs). Comma-separated in the "
        "environment.",
    )
    schedule_seconds_field: bool = Field(
        False,
        description="For tests only: NotebookSchedules may have a six-field schedule, seconds first "
        "(CronJob has no seconds field).",
    )
    gateway_egress_extra_rules: list[dict[str, Any]] = Field(
        default_factory=list,
        description="NetworkPolicyEgressRules added to the gateway pods' egress policy (JSON in the "
        "environment).",
    )

    @field_validator("gateway_egress_denied_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gateway_egress_denied_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(cidr, strict=False)) for cidr in value]

    @field_validator("gateway_egress_extra_rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        mapping = {
            "namespace": ("NBKUBE_NAMESPACE", "POD_NAMESPACE"),
            "data_dir": ("NBKUBE_DATA_DIR",),
            "metrics_port": ("NBKUBE_METRICS_PORT",),
            "metrics_host": ("NBKUBE_METRICS_HOST",),
            "api_port": ("NBKUBE_API_PORT",),
            "api_host": ("NBKUBE_API_HOST",),
            "api_service": ("NBKUBE_API_SERVICE",),
            "api_manage_ca_bundle": ("NBKUBE_API_MANAGE_CA_BUNDLE",),
            "status_interval_seconds": ("NBKUBE_STATUS_INTERVAL_SECONDS",),
            "gateway_port": ("NBKUBE_GATEWAY_PORT",),
            "environment_wait_seconds": ("NBKUBE_ENVIRONMENT_WAIT_SECONDS",),
            "checkpoint_every_cells": ("NBKUBE_CHECKPOINT_EVERY_CELLS",),
            "checkpoint_every_seconds": ("NBKUBE_CHECKPOINT_EVERY_SECONDS",),
            "janitor_interval_seconds": ("NBKUBE_JANITOR_INTERVAL_SECONDS",),
            "janitor_first_sweep_seconds": ("NBKUBE_JANITOR_FIRST_SWEEP_SECONDS",),
            "orphan_kernel_idle_seconds": ("NBKUBE_ORPHAN_KERNEL_IDLE_SECONDS",),
            "busy_orphan_kernel_seconds": ("NBKUBE_BUSY_ORPHAN_KERNEL_SECONDS",),
            "journal_grace_seconds": ("NBKUBE_JOURNAL_GRACE_SECONDS",),
            "unknown_journal_seconds": ("NBKUBE_UNKNOWN_JOURNAL_SECONDS",),
            "gateway_token_key_secret": ("NBKUBE_GATEWAY_TOKEN_KEY_SECRET",),
            "read_secrets": ("NBKUBE_READ_SECRETS",),
            "gateway_egress_allow_all": ("NBKUBE_GATEWAY_EGRESS_ALLOW_ALL",),
            "gateway_egress_denied_cidrs": ("NBKUBE_GATEWAY_EGRESS_DENIED_CIDRS",),
            "gateway_egress_extra_rules": ("NBKUBE_GATEWAY_EGRESS_EXTRA_RULES",),
            "schedule_seconds_field": ("NBKUBE_SCHEDULE_SECONDS_FIELD",),
        }
        for field, names in mapping.items():
            for name in names:
                if env.get(name):
                    values[field] = env[name]
                    break
        return cls.model_validate(values)

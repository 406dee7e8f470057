"""Parameter sweeps: a matrix fans out into owner-referenced child runs."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from nbkube import API_VERSION
from nbkube.api import NotebookRunSpec, RunState, SweepStatus
from nbkube.names import LABEL_MAX, label_value, shorten

PARENT_LABEL = "nbkube.io/sweep"
INDEX_ANNOTATION = "nbkube.io/sweep-index"


def combinations(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in a stable order (keys sorted, values as listed)."""
    keys = sorted(matrix)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(matrix[k] for k in keys))]


def parent_selector(parent: str) -> str:
    """The label selector of a sweep's children (a parent's name may be longer than a label value)."""
    return f"{PARENT_LABEL}={label_value(parent)}"


def child_name(parent: str, index: int, params: dict[str, Any]) -> str:
    """`<parent>-<index>-<params hash>`, at most 63 characters: a parent too long for that is shortened
    with a hash of its whole name, so two sweeps whose names start alike never share a child name."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:5]
    suffix = f"-{index}-{digest}"
    return shorten(parent, LABEL_MAX - len(suffix)) + suffix


def child_runs(
    parent_name: str, namespace: str, parent_uid: str, spec: NotebookRunSpec
) -> list[dict[str, Any]]:
    """The child NotebookRun manifests of a sweep: the parent's spec with one combination each."""
    base = spec.to_api()
    base.pop("matrix", None)
    base.pop("parallelism", None)
    base.pop("cancel", None)
    children = []
    for index, combo in enumerate(combinations(spec.matrix)):
        child_spec = {**base, "parameters": {**spec.parameters, **combo}}
        children.append(
            {
                "apiVersion": API_VERSION,
                "kind": "NotebookRun",
                "metadata": {
                    "name": child_name(parent_name, index, combo),
                    "namespace": namespace,
                    "labels": {
                        PARENT_LABEL: label_value(parent_name),
                        "app.kubernetes.io/managed-by": "nbkube",
                    },
                    "annotations": {INDEX_ANNOTATION: str(index)},
                    "ownerReferences": [
                        {
                            "apiVersion": API_VERSION,
                            "kind": "NotebookRun",
                            "name": parent_name,
                            "uid": parent_uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": child_spec,
            }
        )
    return children


def aggregate(child_names: list[str], child_states: dict[str, str | None]) -> SweepStatus:
    """Counts children by state; a child not yet created or without a state is pending."""
    counts = {RunState.PENDING: 0, RunState.RUNNING: 0, RunState.SUCCEEDED: 0, RunState.FAILED: 0}
    for name in child_names:
        state = child_states.get(name) or RunState.PENDING
        if state == RunState.CANCELLED:
            state = RunState.FAILED
        counts[RunState(state) if state in counts else RunState.PENDING] += 1
    return SweepStatus(
        total=len(child_names),
        pending=counts[RunState.PENDING],
        running=counts[RunState.RUNNING],
        succeeded=counts[RunState.SUCCEEDED],
        failed=counts[RunState.FAILED],
        children=child_names,
    )

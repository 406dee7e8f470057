"""spec.files and spec.env of a NotebookRun: what the model refuses, and the CEL rules the CRD carries so
the API server refuses the same."""

from __future__ import annotations

from typing import Any

import pytest
from nbkube.api import NotebookRunSpec
from nbkube.api.crdgen import notebook_run_crd
from nbkube.api.inputs import MAX_FILE_SOURCES, check_relative_path
from pydantic import ValidationError

BASE = {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}


def spec(**extra: Any) -> NotebookRunSpec:
    return NotebookRunSpec.model_validate({**BASE, **extra})


@pytest.mark.parametrize("path", ["data.csv", "a/b/c.png", "./x", "..hidden", "a/..b", "dir/", "."])
def test_relative_paths_below_the_directory_are_accepted(path: str) -> None:
    assert check_relative_path(path) == path


@pytest.mark.parametrize("path", ["/etc/passwd", "..", "../x", "a/../../b", "a/..", "a\x00b"])
def test_absolute_paths_and_dotdot_components_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match=r"relative path without '\.\.'"):
        check_relative_path(path)


@pytest.mark.parametrize(
    "files",
    [
        [{"configMap": {"name": "c"}, "destination": "../up"}],
        [{"secret": {"name": "s", "items": [{"key": "k", "path": "/abs"}]}}],
        [{"repoPath": "ns/../other/x"}],
    ],
)
def test_the_model_refuses_destinations_that_escape(files: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError, match="relative path"):
        spec(files=files)


def test_each_file_source_names_exactly_one_origin() -> None:
    with pytest.raises(ValidationError, match="exactly one of configMap, secret, repoPath"):
        spec(files=[{"configMap": {"name": "c"}, "repoPath": "ns/x"}])
    with pytest.raises(ValidationError, match="exactly one of configMap, secret, repoPath"):
        spec(files=[{"destination": "x"}])
    parsed = spec(files=[{"configMap": {"name": "c", "items": [{"key": "a.csv", "path": "in/a.csv"}]}}])
    assert parsed.files[0].destination == "."
    assert parsed.files[0].source() == "ConfigMap c"


def test_env_takes_a_value_or_a_reference_not_both_and_names_once() -> None:
    parsed = spec(
        env=[
            {"name": "PLAIN", "value": "1"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {
                "name": "MODE",
                "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode", "optional": True}},
            },
        ]
    )
    assert [e.name for e in parsed.env] == ["PLAIN", "TOKEN", "MODE"]
    with pytest.raises(ValidationError, match="mutually exclusive"):
        spec(env=[{"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    with pytest.raises(ValidationError, match="exactly one of secretKeyRef, configMapKeyRef"):
        spec(env=[{"name": "X", "valueFrom": {}}])
    with pytest.raises(ValidationError, match="env names must be unique"):
        spec(env=[{"name": "X", "value": "1"}, {"name": "X", "value": "2"}])
    with pytest.raises(ValidationError):
        spec(env=[{"name": "A=B", "value": "1"}])


def test_file_sources_are_bounded_in_the_schema() -> None:
    with pytest.raises(ValidationError):
        spec(files=[{"configMap": {"name": f"c{i}"}} for i in range(MAX_FILE_SOURCES + 1)])


def _schema(path: list[str]) -> dict[str, Any]:
    node = notebook_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def test_the_crd_carries_the_rules_so_the_api_server_refuses_the_same() -> None:
    files = _schema(["files", "[]"])
    messages = [r["message"] for r in files["x-kubernetes-validations"]]
    assert "destination must be a relative path without '..' components" in messages
    assert "repoPath must be a relative path without '..' components" in messages
    assert "exactly one of configMap, secret, repoPath is required" in messages
    item = _schema(["files", "[]", "configMap", "items", "[]"])
    assert item["x-kubernetes-validations"][0]["fieldPath"] == ".path"
    env = _schema(["env", "[]"])
    assert "value and valueFrom are mutually exclusive" in [
        r["message"] for r in env["x-kubernetes-validations"]
    ]
    assert _schema(["files"])["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "is immutable"}
    ]
    spec_rules = notebook_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "env names must be unique" in [r["message"] for r in spec_rules["x-kubernetes-validations"]]

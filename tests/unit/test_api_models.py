from pathlib import Path

import pytest
import yaml
from nbkube.api import NotebookEnvironmentSpec, NotebookRunSpec
from nbkube.api.common import Condition, ConditionStatus, set_condition
from nbkube.api.crdgen import all_crds, render
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_equal_what_the_models_generate():
    for name, crd in all_crds().items():
        committed = (REPO / "crds" / name).read_text()
        assert committed == render(crd), f"crds/{name} is stale: run python -m nbkube.api.crdgen crds"


def _walk(schema, path=""):
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_generated_schemas_are_structural():
    for crd in all_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            typed = "type" in node or node.get("x-kubernetes-int-or-string")
            assert typed or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"


def test_model_defaults_match_crd_defaults():
    env = NotebookEnvironmentSpec.model_validate({"image": "kernel:dev"})
    schema = all_crds()["nbkube.io_notebookenvironments.yaml"]["spec"]["versions"][0]["schema"]
    spec_props = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]
    dumped = env.to_api()
    for field in ("kernelName", "replicas", "maxKernelsPerPod", "warmKernels", "idleKernelTimeoutSeconds"):
        assert spec_props[field]["default"] == dumped[field]


def test_run_spec_requires_exactly_one_notebook_source():
    with pytest.raises(ValidationError, match="exactly one of"):
        NotebookRunSpec.model_validate(
            {
                "environmentRef": {"name": "py"},
                "notebook": {"cells": [{"source": "1"}], "repoPath": "a/b.ipynb"},
            }
        )
    with pytest.raises(ValidationError, match="exactly one of"):
        NotebookRunSpec.model_validate({"environmentRef": {"name": "py"}, "notebook": {}})


def test_run_spec_rejects_unknown_fields_and_bad_parameter_names():
    base = {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}
    with pytest.raises(ValidationError, match="extra"):
        NotebookRunSpec.model_validate({**base, "retriez": 3})
    with pytest.raises(ValidationError, match="not a valid identifier"):
        NotebookRunSpec.model_validate({**base, "parameters": {"not-valid": 1}})
    with pytest.raises(ValidationError, match="more than 256"):
        NotebookRunSpec.model_validate({**base, "matrix": {"a": list(range(20)), "b": list(range(20))}})


def test_sweep_size_is_the_product_of_the_matrix():
    spec = NotebookRunSpec.model_validate(
        {
            "environmentRef": {"name": "py"},
            "notebook": {"cells": [{"source": "1"}]},
            "matrix": {"alpha": [0.1, 0.3], "seed": [1, 2, 3]},
        }
    )
    assert spec.is_sweep() and spec.sweep_size() == 6


def test_notebook_file_name_follows_its_source():
    cm = NotebookRunSpec.model_validate(
        {
            "environmentRef": {"name": "py"},
            "notebook": {"configMapRef": {"name": "a", "key": "analysis.ipynb"}},
        }
    )
    assert cm.notebook.file_name() == "analysis.ipynb"
    repo = NotebookRunSpec.model_validate(
        {"environmentRef": {"name": "py"}, "notebook": {"repoPath": "team/x/report.ipynb"}}
    )
    assert repo.notebook.file_name() == "report.ipynb"


def test_condition_transition_time_moves_only_when_status_changes():
    conds = set_condition([], "Succeeded", ConditionStatus.UNKNOWN, "Running")
    first = conds[0].last_transition_time
    conds = set_condition(conds, "Succeeded", ConditionStatus.UNKNOWN, "Running", "cell 2")
    assert conds[0].last_transition_time == first and conds[0].message == "cell 2"
    conds = [Condition.model_validate({**conds[0].to_api(), "lastTransitionTime": "2020-01-01T00:00:00Z"})]
    conds = set_condition(conds, "Succeeded", ConditionStatus.TRUE, "Succeeded")
    assert conds[0].last_transition_time != "2020-01-01T00:00:00Z"
    assert len(conds) == 1


def test_crd_yaml_round_trips():
    for name in all_crds():
        doc = yaml.safe_load((REPO / "crds" / name).read_text())
        assert doc["spec"]["names"]["categories"] == ["notebooks", "all"]


def test_a_parameter_name_yaml_turned_into_a_boolean_is_refused_with_the_fix():
    base = {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}
    with pytest.raises(ValidationError, match="quote the name"):
        NotebookRunSpec.model_validate({**base, "parameters": {"false": 500}})

"""The chart's static contract, checked without helm: generated CRD templates, values and schema."""

import json
from pathlib import Path

import jsonschema
import nbkube
import pytest
import yaml
from nbkube.api.crdgen import CHART_CRD_ANNOTATIONS, all_crds, render_chart_template

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nbkube"
REGENERATE = "python -m nbkube.api.crdgen crds --chart charts/nbkube/templates/crds"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_chart_crd_templates_are_generated_from_the_models(name):
    committed = (CHART / "templates" / "crds" / name).read_text()
    assert committed == render_chart_template(all_crds()[name]), f"{name} is stale: run {REGENERATE}"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_chart_crds_equal_the_committed_crds_apart_from_the_keep_annotation(name):
    template = (CHART / "templates" / "crds" / name).read_text().splitlines()
    assert template[1] == "{{- if .Values.crds.install }}" and template[-1] == "{{- end }}"
    chart_crd = yaml.safe_load("\n".join(template[2:-1]))
    assert (
        chart_crd["metadata"].pop("annotations")
        == CHART_CRD_ANNOTATIONS
        == {"helm.sh/resource-policy": "keep"}
    )
    assert chart_crd == yaml.safe_load((REPO / "crds" / name).read_text())


def test_only_generated_crds_are_in_the_chart():
    assert sorted(p.name for p in (CHART / "templates" / "crds").iterdir()) == sorted(all_crds())
    assert not (CHART / "crds").exists(), (
        "charts/nbkube/crds/ is never upgraded by helm: keep CRDs in templates/"
    )


@pytest.mark.parametrize("values", ["values.yaml", "ci/all-options-values.yaml"])
def test_values_files_satisfy_the_values_schema(values):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / values).read_text()), schema)


def test_values_schema_rejects_a_misspelt_key():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["persistence"]["storgeClass"] = "fast"
    with pytest.raises(jsonschema.ValidationError, match="storgeClass"):
        jsonschema.validate(values, schema)


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == nbkube.__version__

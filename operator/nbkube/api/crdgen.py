"""Generates the CustomResourceDefinitions from the pydantic models.

pydantic's JSON Schema is close to what Kubernetes wants but not structural: it uses $ref,
anyOf for optionals, titles, and `additionalProperties: true` for free-form maps. This module
rewrites it into a structural OpenAPI v3 schema, adds the CEL rules the models declare
(``crd_validations``), and wraps it in the CRD with printer columns, short names and category.

    python -m nbkube.api.crdgen crds/     # writes crds/*.yaml
    python -m nbkube.api.crdgen crds --chart charts/nbkube/templates/crds   # and the chart's copies
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from nbkube import GROUP, VERSION
from nbkube.api.environment import NotebookEnvironmentSpec, NotebookEnvironmentStatus
from nbkube.api.run import NotebookRunSpec, NotebookRunStatus
from nbkube.api.schedule import NotebookScheduleSpec, NotebookScheduleStatus
from nbkube.api.session import NotebookSessionSpec, NotebookSessionStatus

_DROP = {"title", "additionalProperties", "$defs"}


class _CrdJsonSchema(GenerateJsonSchema):
    def default_schema(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is None:
            return super().default_schema(schema)
        json_schema = self.generate_inner(schema["schema"])
        value = factory()
        # A defaulted nested object becomes `{}` so the API server applies its inner defaults.
        json_schema["default"] = {} if isinstance(value, BaseModel) else value
        return json_schema

    def model_schema(self, schema: Any) -> Any:
        json_schema = super().model_schema(schema)
        rules = getattr(schema["cls"], "crd_validations", None)
        if rules is not None:
            json_schema["x-kubernetes-validations"] = rules()
        return json_schema


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, schema_generator=_CrdJsonSchema)
    # A JSON round trip: a model used in two places must not come out as one shared (YAML-aliased) node.
    return json.loads(json.dumps(_rewrite(raw, raw.get("$defs", {}))))


def _rewrite(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        rules = target.get("x-kubernetes-validations", []) + node.get("x-kubernetes-validations", [])
        if rules:
            merged["x-kubernetes-validations"] = rules
        return _rewrite(merged, defs)
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return _rewrite(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
        if "pattern" in node:  # a quantity: pattern and maxLength check strings, minimum integers
            out.update(pattern=node["pattern"], maxLength=node.get("maxLength", 64), minimum=0)
        return out
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                rest.pop("default")
            return _rewrite({**options[0], **rest}, defs)
        raise ValueError(f"unsupported union in CRD schema: {node}")
    if node.get("default", ...) is None:
        node.pop("default")
    out = {}
    free_form = node.get("additionalProperties") is True or (
        node.get("type") is None and "properties" not in node and "enum" not in node
    )
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _rewrite(prop, defs) for name, prop in value.items()}
        elif key in ("items",):
            out[key] = _rewrite(value, defs)
        elif key == "const":  # a one-value Literal: structural schemas have no const
            out["enum"] = [value]
        elif key == "description":  # docstrings wrap; a description is one paragraph
            out[key] = " ".join(value.split())
        else:
            out[key] = value
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = _rewrite(extra, defs)
    if free_form:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _condition_list(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["maxItems"] = 16


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    spec_schema = structural_schema(spec)
    status_schema = structural_schema(status)
    _condition_list(status_schema)
    spec_schema.pop("description", None)
    status_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "nbkube", "app.kubernetes.io/part-of": "nbkube"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["notebooks", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def notebook_environment_crd() -> dict[str, Any]:
    return _crd(
        "NotebookEnvironment",
        "notebookenvironments",
        "nbenv",
        NotebookEnvironmentSpec,
        NotebookEnvironmentStatus,
        [
            {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
            {"name": "Kernels", "type": "integer", "jsonPath": ".status.kernels.inUse"},
            {"name": "Warm", "type": "integer", "jsonPath": ".status.kernels.warm", "priority": 1},
            {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
            {
                "name": "Status",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "A kernel runtime served by Jupyter Kernel Gateway pods.",
    )


def notebook_run_crd() -> dict[str, Any]:
    return _crd(
        "NotebookRun",
        "notebookruns",
        "nbrun",
        NotebookRunSpec,
        NotebookRunStatus,
        [
            {"name": "Env", "type": "string", "jsonPath": ".spec.environmentRef.name"},
            {"name": "Status", "type": "string", "jsonPath": ".status.state"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {"name": "Commit", "type": "string", "jsonPath": ".status.result.commit", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "One execution of a notebook, or a sweep of them, in a NotebookEnvironment.",
    )


def notebook_session_crd() -> dict[str, Any]:
    return _crd(
        "NotebookSession",
        "notebooksessions",
        "nbsess",
        NotebookSessionSpec,
        NotebookSessionStatus,
        [
            {"name": "Env", "type": "string", "jsonPath": ".spec.environmentRef.name"},
            {"name": "Status", "type": "string", "jsonPath": ".status.state"},
            {"name": "Kernel", "type": "string", "jsonPath": ".status.kernel.state"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Operations", "type": "integer", "jsonPath": ".status.operations"},
            {"name": "Head", "type": "string", "jsonPath": ".status.head", "priority": 1},
            {"name": "Branch", "type": "string", "jsonPath": ".status.branch", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "A live kernel of a NotebookEnvironment, driven cell by cell, its history on its own branch.",
    )


def _without_transition_rules(node: Any) -> Any:
    """The schema without CEL rules that compare with oldSelf: a run's immutable fields are templates
    in a schedule, which its users change."""
    if isinstance(node, list):
        return [_without_transition_rules(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _without_transition_rules(value) for key, value in node.items()}
    rules = [r for r in out.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    if rules:
        out["x-kubernetes-validations"] = rules
    else:
        out.pop("x-kubernetes-validations", None)
    return out


def notebook_schedule_crd() -> dict[str, Any]:
    crd = _crd(
        "NotebookSchedule",
        "notebookschedules",
        "nbsched",
        NotebookScheduleSpec,
        NotebookScheduleStatus,
        [
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Time Zone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime", "priority": 1},
            {
                "name": "Status",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "NotebookRuns on a cron schedule, as a CronJob creates Jobs.",
    )
    version = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    template = version["spec"]["properties"]["runTemplate"]
    version["spec"]["properties"]["runTemplate"] = _without_transition_rules(template)
    return crd


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD."""
    return {
        f"{GROUP}_notebookenvironments.yaml": notebook_environment_crd(),
        f"{GROUP}_notebookruns.yaml": notebook_run_crd(),
        f"{GROUP}_notebooksessions.yaml": notebook_session_crd(),
        f"{GROUP}_notebookschedules.yaml": notebook_schedule_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `python -m nbkube.api.crdgen` from operator/nbkube/api. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


CHART_CRD_ANNOTATIONS = {"helm.sh/resource-policy": "keep"}


def render_chart_template(crd: dict[str, Any]) -> str:
    """The chart's copy of a CRD: a template (so `helm upgrade` upgrades it, which the chart's crds/
    directory would not), installed when `crds.install` is true and kept on `helm uninstall`."""
    chart_crd = {**crd, "metadata": {**crd["metadata"], "annotations": dict(CHART_CRD_ANNOTATIONS)}}
    body = yaml.safe_dump(chart_crd, sort_keys=False, width=120)
    if "{{" in body:
        raise ValueError(f"{crd['metadata']['name']}: '{{{{' in a CRD would be read as a Helm template")
    header = "# Generated by `python -m nbkube.api.crdgen --chart` from operator/nbkube/api. Do not edit.\n"
    return header + "{{- if .Values.crds.install }}\n" + body + "{{- end }}\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    chart_dir: Path | None = None
    if "--chart" in args:
        at = args.index("--chart")
        chart_dir = Path(args[at + 1])
        del args[at : at + 2]
    out = Path(args[0] if args else "crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, crd in all_crds().items():
        (out / name).write_text(render(crd))
        print(f"wrote {out / name}")
        if chart_dir is not None:
            chart_dir.mkdir(parents=True, exist_ok=True)
            (chart_dir / name).write_text(render_chart_template(crd))
            print(f"wrote {chart_dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

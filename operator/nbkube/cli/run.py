"""`nbkube run NOTEBOOK.ipynb --env ENV`: upload the notebook, create a NotebookRun, follow it.

The notebook goes into a ConfigMap named after the run (its outputs stripped: the run replaces
them), with the --file inputs as binaryData (nbkube.cli.uploads), the NotebookRun refers to it, and the
ConfigMap then gets an ownerReference to the run, so deleting the run deletes its notebook too.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nbkube import API_VERSION
from nbkube.api.states import NOT_RUN_CELL_STATES, TERMINAL_RUN_STATES, CellState, RunState
from nbkube.cli import sweeps
from nbkube.cli.errors import EXIT_FAILED, EXIT_OK, CliError, UsageError, invalid_spec
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, run_state
from nbkube.cli.progress import Progress
from nbkube.cli.uploads import (
    CONFIGMAP_LIMIT,
    KEY_CHARS,
    Upload,
    binary_data,
    check_size,
    collect,
    files_spec,
)

MAX_NAME = 63
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the API server's generateName uses
CREATED_BY_LABEL = "app.kubernetes.io/created-by"
# nbformat and the API models are imported where used: together they cost seconds of start-up.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="upload a notebook, run it in an environment, follow it",
        description="Uploads NOTEBOOK as a ConfigMap, creates a NotebookRun and follows it until it ends. "
        "Exit code 0 when it succeeds, 1 when it fails or is cancelled, 2 for a usage error.",
    )
    parser.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    parser.add_argument("--env", required=True, help="the NotebookEnvironment (in the run's namespace)")
    parser.add_argument("--name", help="the NotebookRun's name (default: the notebook's name + a suffix)")
    add_run_spec_options(parser, "the run", "the whole run")
    parser.add_argument("--no-follow", action="store_true", help="create the run and return")
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_run)


_NULL = {"null", "Null", "NULL", "~"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def add_run_spec_options(parser: argparse.ArgumentParser, whose: str, deadline_of: str) -> None:
    """The options of a NotebookRun's spec that `nbkube run` and `nbkube schedule create` share:
    parameters, a matrix, timeouts, retries and files. `whose`: "the run" or "each run"."""
    parser.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a parameter of {whose}; VALUE is a YAML 1.2 scalar (0.3 a float, 3 an int, true a bool, abc "
        "a string); repeatable",
    )
    parser.add_argument(
        "--matrix",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep NAME over these values (one child run per combination); repeatable",
    )
    parser.add_argument("--parallelism", type=int, help="child runs of a sweep running at once")
    parser.add_argument("--timeout-cell", type=int, metavar="S", help="interrupt a cell after S seconds")
    parser.add_argument("--timeout-run", type=int, metavar="S", help=f"deadline of {deadline_of} in seconds")
    parser.add_argument("--retries", type=int, metavar="N", help="fresh attempts after a kernel death")
    parser.add_argument("--allow-errors", action="store_true", help="keep going after a failing cell")
    parser.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help=f"a file or folder uploaded with the notebook and placed beside it in {whose}'s working "
        "directory (by its path relative to the notebook's folder, else by its name); repeatable",
    )


def parse_value(text: str) -> Any:
    """A parameter value as a YAML 1.2 core-schema scalar: null, true/false, an int, a float, a
    quoted string or a flow list/mapping; anything else is the string itself. PyYAML alone would read
    YAML 1.1, where `no` is false and `1:30` is 90."""
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text[:1] in ("'", '"', "[", "{"):
        try:
            value = yaml.safe_load(text)
            json.dumps(value, allow_nan=False)
            return value
        except (yaml.YAMLError, TypeError, ValueError):
            return text
    return text


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"{option} {text!r}: expected NAME=VALUE")
    return name.strip(), value


def parse_parameters(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, value = parse_assignment(item, "-p")
        params[name] = parse_value(value)
    return params


def parse_matrix(items: list[str]) -> dict[str, list[Any]]:
    matrix: dict[str, list[Any]] = {}
    for item in items:
        name, values = parse_assignment(item, "--matrix")
        matrix[name] = [parse_value(v.strip()) for v in values.split(",")]
    return matrix


def generated_name(notebook: Path) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", notebook.stem.lower()).strip("-") or "notebook"
    suffix = "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
    return f"{stem[: MAX_NAME - 6].rstrip('-')}-{suffix}"


def check_name(name: str, what: str = "run") -> str:
    from nbkube.api.run import NAME_PATTERN

    if len(name) > MAX_NAME or not re.match(NAME_PATTERN, name):
        raise UsageError(
            f"invalid {what} name {name!r}: at most {MAX_NAME} lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def config_map_key(notebook: Path) -> str:
    key = KEY_CHARS.sub("-", notebook.name).strip("-.") or "notebook.ipynb"
    return key if key.endswith(".ipynb") else f"{key}.ipynb"


RUN_TOO_BIG_HINT = "put it in the results repository and create the NotebookRun with spec.notebook.repoPath"


def notebook_payload(path: Path, key: str, too_big_hint: str = RUN_TOO_BIG_HINT) -> str:
    """The notebook as uploaded: validated, outputs stripped, within a ConfigMap's 1 MiB."""
    import nbformat

    from nbkube.cli import notebooks

    nb = notebooks.read_notebook(path).notebook
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    text = nbformat.writes(nb)
    size = len(text.encode()) + len(key.encode())
    if size > CONFIGMAP_LIMIT:
        raise UsageError(
            f"{path} is {size / CONFIGMAP_LIMIT:.2f} MiB without its outputs, more than the 1 MiB a "
            f"ConfigMap holds: {too_big_hint}"
        )
    return text


def build_spec(
    args: argparse.Namespace, config_map: str, key: str, uploads: list[Upload] | None = None
) -> dict[str, Any]:
    """The NotebookRun spec, checked against the API model before anything is created."""
    from pydantic import ValidationError

    from nbkube.api import NotebookRunSpec

    spec: dict[str, Any] = {
        "environmentRef": {"name": args.env},
        "notebook": {"configMapRef": {"name": config_map, "key": key}},
    }
    if uploads:
        spec["files"] = files_spec(config_map, uploads)
    params = parse_parameters(args.parameters)
    matrix = parse_matrix(args.matrix)
    if params:
        spec["parameters"] = params
    if matrix:
        spec["matrix"] = matrix
    if args.parallelism is not None:
        spec["parallelism"] = args.parallelism
    timeouts = {}
    if args.timeout_cell is not None:
        timeouts["cellSeconds"] = args.timeout_cell
    if args.timeout_run is not None:
        timeouts["runSeconds"] = args.timeout_run
    if timeouts:
        spec["timeouts"] = timeouts
    if args.retries is not None:
        spec["retries"] = args.retries
    if args.allow_errors:
        spec["allowErrors"] = True
    try:
        NotebookRunSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_spec("run", exc) from None
    return spec


def run_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NotebookRun",
        "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "nbkube-cli"}},
        "spec": spec,
    }


def config_map_manifest(
    name: str, key: str, text: str, binary_data: dict[str, str] | None = None
) -> dict[str, Any]:
    """The run's ConfigMap: the notebook, and the --file inputs as binaryData."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "nbkube-cli"}},
        "data": {key: text},
    }
    if binary_data:
        manifest["binaryData"] = binary_data
    return manifest


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a NotebookRun (or to the NotebookSession or other object `owner` is)."""
    return {
        "apiVersion": API_VERSION,
        "kind": owner.get("kind") or "NotebookRun",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


def cmd_run(args: argparse.Namespace) -> int:
    name = check_name(args.name) if args.name else generated_name(args.notebook)
    key = config_map_key(args.notebook)
    text = notebook_payload(args.notebook, key)
    uploads = collect(args.files, args.notebook, {key})
    check_size(args.notebook, key, text, uploads)
    spec = build_spec(args, name, key, uploads)
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        if not kube.environment_exists(args.env):
            raise CliError(
                f"NotebookEnvironment {args.env!r} not found in namespace {kube.namespace} "
                f"(kubectl get nbenv -n {kube.namespace} lists them)"
            )
        run = create(kube, name, key, text, spec, binary_data(uploads))
        print(f"notebookrun {kube.namespace}/{name} created", flush=True)
        if args.no_follow:
            print(f"follow it with: nbkube logs -n {kube.namespace} -f {name}")
            return EXIT_OK
        return follow(kube, run["metadata"]["name"])
    finally:
        kube.close()


def create(
    kube: ClusterClient,
    name: str,
    key: str,
    text: str,
    spec: dict[str, Any],
    binary_data: dict[str, str] | None = None,
) -> dict[str, Any]:
    config_map = config_map_manifest(name, key, text, binary_data)
    return create_owning(kube, config_map, lambda: kube.create_run(run_manifest(name, spec)), "run")


def create_owning(
    kube: ClusterClient, config_map: dict[str, Any], create: Callable[[], dict[str, Any]], kind: str
) -> dict[str, Any]:
    """The ConfigMap, then the object `create` makes (a run, a session), then the ConfigMap owned by
    that object (deleted with it); nothing stays when the object cannot be created."""
    name = config_map["metadata"]["name"]
    kube.create_config_map(config_map)
    try:
        created = create()
    except BaseException:
        try:
            kube.delete_config_map(name)
        except CliError as exc:
            print(f"nbkube: warning: {exc.message}", file=sys.stderr)
        raise
    try:
        kube.patch_config_map(name, {"metadata": {"ownerReferences": [owner_reference(created)]}})
    except CliError as exc:
        print(
            f"nbkube: warning: the ConfigMap stays when the {kind} is deleted: {exc.message}", file=sys.stderr
        )
    return created


def follow(kube: ClusterClient, name: str) -> int:
    """Shows progress until the run ends; the exit code says how it ended."""
    progress = Progress(name, sys.stdout, sys.stdout.isatty())
    run: dict[str, Any] | None = None
    try:
        for run in kube.watch_run(name):
            progress.update(run)
    except KeyboardInterrupt:
        progress.close()
        print(
            f"stopped following {name}; it keeps running (nbkube cancel -n {kube.namespace} {name} stops it)",
            file=sys.stderr,
        )
        return 130
    progress.close()
    assert run is not None
    return report(run)


def _print_table(run: dict[str, Any]) -> None:
    """A sweep's table (its children's parameters, states and recorded values), after its outcome."""
    table = sweeps.sweep_table(run)
    if table is not None and table.rows:
        print(f"\n{table.text()}")


def report(run: dict[str, Any]) -> int:
    name = run["metadata"]["name"]
    status = run.get("status") or {}
    state = run_state(run)
    assert state in TERMINAL_RUN_STATES
    took = f" in {status['duration']}" if status.get("duration") else ""
    detail = f"{status.get('reason') or state}: {status.get('message') or ''}".rstrip(": ")
    if state == RunState.SUCCEEDED:
        print(f"{name} Succeeded{took}: {status.get('message') or ''}".rstrip(": "))
        result = status.get("result")
        how = f"nbkube sweep {name}" if status.get("sweep") else f"nbkube fetch {name}"
        if result:
            print(f"result: {result['path']} at commit {result['commit'][:12]} ({how})")
        for child in (status.get("sweep") or {}).get("children", []):
            print(f"child run: {child}")
        _print_table(run)
        return EXIT_OK
    print(f"{name} {state}{took}: {detail}", file=sys.stderr)
    _print_table(run)
    for cell in status.get("cells") or []:
        if cell.get("state") not in (CellState.SUCCEEDED, *NOT_RUN_CELL_STATES) and cell.get("summary"):
            print(
                f"  cell {cell['index']} ({cell.get('id', '?')}) {cell['state']}: {cell['summary']}",
                file=sys.stderr,
            )
    return EXIT_FAILED

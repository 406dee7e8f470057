"""A requirements ConfigMap (packages.configMapRef) is part of what the gateway pods are built from:
its content's digest changes their template, and the operator's index says which environments a
ConfigMap change concerns (tests/operator/test_environment_packages.py edits one on a cluster)."""

import asyncio

from nbkube.api import NotebookEnvironmentSpec
from nbkube.config import Settings
from nbkube.environment import objects, requirements
from nbkube.environment.requirements import ABSENT, RequirementsIndex, config_map_digest
from nbkube.environment.service import EnvironmentService

REF = {"configMapRef": {"name": "reqs", "key": "requirements.txt"}}
CONTENT = {
    "data": {"requirements.txt": "-c constraints.txt\npyjokes\n", "constraints.txt": "pyjokes==0.8.2\n"}
}


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "nbkube/kernel-python:dev", **extra})


def _config_map(**content):
    return {"metadata": {"name": "reqs", "namespace": "team", "resourceVersion": "7"}, **content}


def test_the_digest_covers_every_key_and_binary_data_but_not_metadata():
    base = config_map_digest(_config_map(**CONTENT))
    assert config_map_digest({**_config_map(**CONTENT), "metadata": {"resourceVersion": "8"}}) == base
    changed_sibling = {"data": {**CONTENT["data"], "constraints.txt": "pyjokes==0.8.3\n"}}
    assert config_map_digest(_config_map(**changed_sibling)) != base
    with_wheel = {**CONTENT, "binaryData": {"x-1.0-py3-none-any.whl": "UEsDBA=="}}
    assert config_map_digest(_config_map(**with_wheel)) != base
    assert config_map_digest(None) == ABSENT != config_map_digest(_config_map())


def test_the_pod_template_carries_the_config_maps_digest_so_a_new_content_rolls_the_pods():
    spec = _spec(packages=REF)
    first = objects.gateway_deployment("py", "team", "uid-1", spec, "py-gateway-token-x", "d1")
    second = objects.gateway_deployment("py", "team", "uid-1", spec, "py-gateway-token-x", "d2")
    annotation = objects.SPEC_HASH_ANNOTATION
    hashes = [d["spec"]["template"]["metadata"]["annotations"][annotation] for d in (first, second)]
    assert hashes == [objects.spec_hash(spec, "d1"), objects.spec_hash(spec, "d2")]
    assert hashes[0] != hashes[1] != objects.spec_hash(spec)
    assert first["spec"]["template"]["spec"] == second["spec"]["template"]["spec"]  # only the hash differs
    # an environment without a requirements ConfigMap keeps the hash it had before ConfigMaps counted
    plain = _spec(packages={"requirements": ["tabulate==0.9.0"]})
    assert requirements.config_map_name(plain) is None
    deployment = objects.gateway_deployment("py", "team", "uid-1", plain, "py-gateway-token-x")
    assert deployment["spec"]["template"]["metadata"]["annotations"][annotation] == objects.spec_hash(plain)


def test_the_index_names_the_environments_built_from_other_content():
    index = RequirementsIndex()
    index.track("team", "py", "reqs")
    assert index.used("team", "reqs") and not index.used("other", "reqs")
    assert index.seen("team", "reqs", "d1") == []  # not built yet: nothing to rebuild
    assert index.behind("team", "py")
    index.built("team", "py", "reqs", "d1")
    index.track("team", "py", "reqs")  # a reconcile of the same spec keeps what was built
    index.built("team", "py2", "reqs", "d1")
    assert index.built_digest("team", "py") == "d1" and not index.behind("team", "py")
    assert index.seen("team", "reqs", "d1") == []
    assert index.seen("team", "reqs", "d2") == ["py", "py2"]
    assert index.behind("team", "py")  # until its Deployment is applied with d2
    index.built("team", "py", "reqs", "d2")
    assert not index.behind("team", "py") and index.behind("team", "py2")
    assert index.seen("team", "other", "d9") == []


def test_a_change_seen_while_a_reconcile_reads_and_applies_is_not_lost():
    index = RequirementsIndex()
    index.track("team", "py", "reqs")  # the reconcile starts, then reads d1 ...
    assert index.seen("team", "reqs", "d2") == []  # ... the watch shows d2 before it is applied ...
    index.built("team", "py", "reqs", "d1")  # ... and its Deployment carries d1
    assert index.behind("team", "py")  # so the status refresh applies it again
    index.built("team", "py", "reqs", "d2")
    assert not index.behind("team", "py")


def test_the_index_forgets_an_environment_that_names_no_config_map_any_more():
    index = RequirementsIndex()
    index.built("team", "py", "reqs", "d1")
    index.track("team", "py", "renamed")
    assert not index.used("team", "reqs") and index.used("team", "renamed")
    assert index.built_digest("team", "py") is None
    index.track("team", "py", None)
    assert not index.used("team", "renamed") and not index.behind("team", "py")
    index.built("team", "py", "reqs", "d1")
    index.forget("team", "py")
    assert not index.used("team", "reqs") and index.seen("team", "reqs", "d2") == []


class _NoCalls:
    """A Kubernetes client any call to which fails the test."""

    server = "https://127.0.0.1:6443"

    def __getattr__(self, name):
        raise AssertionError(f"the API was called ({name}) for a ConfigMap no environment uses")


def test_a_config_map_no_environment_uses_costs_no_api_call():
    service = EnvironmentService(_NoCalls(), Settings(), registry=None, tokens=None)
    service.requirements.built("team", "py", "reqs", "d1")
    for event, name, namespace in (("MODIFIED", "notebook-7", "team"), ("DELETED", "reqs", "elsewhere")):
        body = {"metadata": {"name": name, "namespace": namespace}, "data": {"a": "1"}}
        asyncio.run(service.config_map_changed(event, body))
    # nor one whose content is what the pods were built from
    same = _config_map(data={"requirements.txt": "x\n"})
    service.requirements.built("team", "py", "reqs", config_map_digest(same))
    asyncio.run(service.config_map_changed("MODIFIED", same))

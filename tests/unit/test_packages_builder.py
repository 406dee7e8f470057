"""Packages per environment without a cluster: what the API accepts as a requirement, the init container
the gateway pod gets, how a failed install is read from a pod and reported, and the installer's own
decisions (no network: pip is not run here; tests/operator/test_environment_packages.py installs for real)."""

import json

import pytest
from nbkube.api import NotebookEnvironmentSpec, Reason
from nbkube.api.crdgen import all_crds
from nbkube.environment import controller, objects, packages
from nbkube.environment.pods import pod_from_body
from nbkube.gateway import packages as installer
from nbkube.kernels import KernelRegistry
from pydantic import ValidationError

PLAIN = [
    "tabulate==0.9.0",
    "pyjokes",
    "pandas[excel,plot]>=2,<3",
    "A.b-c_d~=1.4.2",
    "numpy!=1.*",
    "x===weird+1",
    'foo ; python_version >= "3.8" and sys_platform == "linux"',
    "Requests [security] >= 2.8.1, == 2.8.*",
]
REFUSED = [
    "-e .",
    "-r requirements.txt",
    "--index-url=https://evil.example.com/simple",
    "--extra-index-url https://evil.example.com/simple",
    "foo @ https://example.com/foo-1.0-py3-none-any.whl",
    "https://example.com/foo-1.0.tar.gz",
    "git+https://github.com/x/y",
    "./pkg",
    "../pkg",
    "/abs/pkg",
    "C:\\pkg",
    "tool.whl",
    "data.tar.gz",
    "tool.zip[extra]",
    "foo==1.0 --hash=sha256:abc",
    "foo\nbar",
    " foo",
    "foo # comment",
    "",
]


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "nbkube/kernel-python:dev", **extra})


@pytest.mark.parametrize("requirement", PLAIN)
def test_plain_requirement_specifiers_are_accepted(requirement):
    assert _spec(packages={"requirements": [requirement]}).packages.requirements == [requirement]


@pytest.mark.parametrize("requirement", REFUSED)
def test_options_urls_paths_and_file_names_are_refused_as_requirements(requirement):
    with pytest.raises(ValidationError):
        _spec(packages={"requirements": [requirement]})


def test_the_crd_carries_the_same_requirement_rules():
    schema = all_crds()["nbkube.io_notebookenvironments.yaml"]["spec"]["versions"][0]["schema"]
    node = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["packages"]
    from nbkube.api.environment import ARCHIVE_NAME_PATTERN, REQUIREMENT_PATTERN

    assert node["properties"]["requirements"]["items"]["pattern"] == REQUIREMENT_PATTERN
    (rule,) = node["x-kubernetes-validations"]
    assert ARCHIVE_NAME_PATTERN in rule["rule"]


@pytest.mark.parametrize(
    "url", ["https://pypi.example.com/simple", "http://devpi.tools.svc:3141/root/pypi/+simple/"]
)
def test_an_index_url_is_accepted(url):
    assert _spec(packages={"requirements": ["x"], "indexUrl": url}).packages.index_url == url


@pytest.mark.parametrize(
    "url", ["https://user:token@pypi.example.com/simple", "ftp://pypi.example.com/", "file:///wheels"]
)
def test_an_index_url_with_credentials_or_another_scheme_is_refused(url):
    with pytest.raises(ValidationError):
        _spec(packages={"requirements": ["x"], "indexUrl": url})


def _pod(spec):
    return objects.gateway_deployment("py", "team", "uid-1", spec, "py-gateway-token-0123456789")["spec"][
        "template"
    ]["spec"]


def test_no_packages_no_init_container():
    for spec in (_spec(), _spec(packages={}), _spec(packages={"requirements": []})):
        pod = _pod(spec)
        assert "initContainers" not in pod
        assert {v["name"] for v in pod["volumes"]} == {"nbkube-tmp", "nbkube-home"}  # nbkube's own only
        assert "PYTHONPATH" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_the_installer_is_an_init_container_of_the_same_image_and_hardening_sharing_a_volume():
    spec = _spec(
        packages={"requirements": ["tabulate==0.9.0", "pyjokes"]},
        resources={"limits": {"memory": "1Gi"}},
        imagePullPolicy="Always",
    )
    pod = _pod(spec)
    (init,) = pod["initContainers"]
    gateway = pod["containers"][0]
    assert init["name"] == "nbkube-packages"
    assert init["image"] == gateway["image"] and init["imagePullPolicy"] == "Always"
    assert init["securityContext"] == gateway["securityContext"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["resources"] == gateway["resources"]
    assert init["command"] == ["python", "-m", "nbkube.gateway.packages"]
    assert init["args"][-3:] == ["--", "tabulate==0.9.0", "pyjokes"]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "nbkube-packages", "emptyDir": {}} in pod["volumes"]
    assert {"name": "nbkube-packages", "mountPath": "/opt/nbkube/packages"} in init["volumeMounts"]
    assert {"name": "nbkube-packages", "mountPath": "/opt/nbkube/packages", "readOnly": True} in gateway[
        "volumeMounts"
    ]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["PYTHONPATH"] == "/opt/nbkube/packages/site-packages"
    # the parsed installer command line installs into what the gateway imports from
    args = installer.parse_args(init["args"])
    assert str(args.target) == env["PYTHONPATH"] and args.requirements == ["tabulate==0.9.0", "pyjokes"]
    assert str(args.log).startswith("/opt/nbkube/packages/")


def test_the_installer_gets_the_users_env_but_never_the_gateway_token():
    spec = _spec(
        packages={"requirements": ["x"]}, env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]
    )
    (init,) = _pod(spec)["initContainers"]
    names = {e["name"]: e.get("value") for e in init["env"]}
    assert names["HTTPS_PROXY"] == "http://proxy:3128"
    assert "KG_AUTH_TOKEN" not in names
    assert "token" not in json.dumps(init).lower()


def test_a_users_pythonpath_stays_after_the_packages():
    spec = _spec(packages={"requirements": ["x"]}, env=[{"name": "PYTHONPATH", "value": "/opt/mine"}])
    env = [e for e in _pod(spec)["containers"][0]["env"] if e["name"] == "PYTHONPATH"]
    assert env == [{"name": "PYTHONPATH", "value": "/opt/nbkube/packages/site-packages:/opt/mine"}]


def test_a_requirements_config_map_is_mounted_optional_and_never_read():
    spec = _spec(packages={"configMapRef": {"name": "reqs", "key": "requirements.txt"}})
    pod = _pod(spec)
    (init,) = pod["initContainers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "nbkube-requirements")
    assert volume == {"name": "nbkube-requirements", "configMap": {"name": "reqs", "optional": True}}
    mount = next(m for m in init["volumeMounts"] if m["name"] == "nbkube-requirements")
    assert mount["readOnly"] is True
    args = installer.parse_args(init["args"])
    assert str(args.requirements_file) == f"{mount['mountPath']}/requirements.txt"
    assert args.requirements == []
    assert all(m["name"] != "nbkube-requirements" for m in pod["containers"][0]["volumeMounts"])


def test_a_packages_change_rolls_the_pods():
    a = objects.gateway_deployment("py", "t", "u", _spec(packages={"requirements": ["a==1"]}), "s")
    b = objects.gateway_deployment("py", "t", "u", _spec(packages={"requirements": ["a==2"]}), "s")
    annotation = objects.SPEC_HASH_ANNOTATION
    assert (
        a["spec"]["template"]["metadata"]["annotations"][annotation]
        != b["spec"]["template"]["metadata"]["annotations"][annotation]
    )


PIP_LINE = "ERROR: No matching distribution found for nbkube-no-such-package-0d5c==1.0"


def _gateway_pod_body(init_status, name="py-gateway-abc", spec_hash="h1"):
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "labels": {"nbkube.io/environment": "py"},
            "annotations": {"nbkube.io/spec-hash": spec_hash},
        },
        "status": {
            "phase": "Pending",
            "podIP": "127.1.0.5",
            "conditions": [{"type": "Ready", "status": "False"}],
            "initContainerStatuses": [{"name": "nbkube-packages", **init_status}],
        },
    }


FAILED = {"state": {"terminated": {"exitCode": 1, "message": f"Collecting x\n{PIP_LINE}\n"}}}
BACKING_OFF = {
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"exitCode": 1, "message": PIP_LINE}},
}
RETRYING = {"state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "message": PIP_LINE}}}


@pytest.mark.parametrize("status", [FAILED, BACKING_OFF, RETRYING])
def test_a_failed_install_is_read_from_the_pod_as_pips_last_line(status):
    assert packages.install_failure(_gateway_pod_body(status)) == PIP_LINE


@pytest.mark.parametrize(
    "status",
    [
        {"state": {"running": {}}},
        {"state": {"waiting": {"reason": "PodInitializing"}}},
        {"state": {"terminated": {"exitCode": 0}}, "lastState": {"terminated": {"exitCode": 1}}},
    ],
)
def test_an_install_running_or_done_is_no_failure(status):
    assert packages.install_failure(_gateway_pod_body(status)) is None


def test_a_failure_without_a_message_names_the_exit_code():
    status = {"state": {"terminated": {"exitCode": 2}}}
    assert packages.install_failure(_gateway_pod_body(status)) == "exit code 2"


def _status(failures, ready=0):
    spec = _spec(packages={"requirements": ["nbkube-no-such-package-0d5c==1.0"]})
    deployment = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 0},
    }
    return controller.compute_status("tok", spec, 1, deployment, None, controller.KernelUsage(), failures)


def test_a_failed_install_makes_the_environment_not_ready_with_pips_line():
    (ready,) = _status([("py-gateway-abc", PIP_LINE)]).conditions
    assert (ready.status, ready.reason) == ("False", Reason.PACKAGES_FAILED)
    assert PIP_LINE in ready.message and "kubectl logs py-gateway-abc -c nbkube-packages" in ready.message
    (still,) = _status([("py-gateway-abc", PIP_LINE)], ready=1).conditions
    assert still.reason == Reason.PACKAGES_FAILED and "1 ready gateway pod(s)" in still.message


def _observed(body):
    pod = pod_from_body(body)
    assert pod is not None
    return pod


async def test_the_registry_reports_failed_installs_of_the_current_spec_until_the_pod_goes():
    async def no_token(namespace, environment):
        return None

    registry = KernelRegistry(no_token)
    failing = _gateway_pod_body(BACKING_OFF)
    await registry.observe("MODIFIED", _observed(failing))
    await registry.observe(
        "MODIFIED", _observed(_gateway_pod_body(FAILED, name="py-gateway-old", spec_hash="h0"))
    )
    assert pod_from_body(failing).install_failure == PIP_LINE
    assert [p.name for p in registry.install_failures("team", "py", "h1")] == ["py-gateway-abc"]
    await registry.observe("DELETED", _observed(failing))
    assert registry.install_failures("team", "py", "h1") == []
    await registry.observe("MODIFIED", _observed(failing))
    await registry.observe(
        "MODIFIED", _observed(_gateway_pod_body({"state": {"terminated": {"exitCode": 0}}}))
    )
    assert registry.install_failures("team", "py", "h1") == []
    assert not registry.has_ready_pod("team", "py")


def test_pips_decisive_line_is_its_last_error():
    output = [
        "Collecting nbkube-no-such-package-0d5c==1.0\n",
        "ERROR: Could not find a version that satisfies the requirement nbkube-no-such-package-0d5c==1.0\n",
        f"{PIP_LINE}\n",
        "\n",
    ]
    assert installer.decisive_line(output, 1) == PIP_LINE
    assert installer.decisive_line(["Traceback\n", "KeyboardInterrupt\n"], 2) == "KeyboardInterrupt"
    assert installer.decisive_line([], 3) == "pip exited with code 3 and said nothing"


def test_the_pip_command_keeps_requirements_after_the_end_of_options(tmp_path):
    args = installer.parse_args(
        ["--target", "/t", "--scratch", "/s", "--log", "/l", "--index-url", "https://i/simple", "--", "a==1"]
    )
    command = installer.pip_command(args)
    assert command[1:5] == ["-m", "pip", "install", "--target"]
    assert command[command.index("--index-url") + 1] == "https://i/simple"
    assert command[-2:] == ["--", "a==1"]


def test_a_missing_requirements_file_fails_clearly_into_the_log_and_the_termination_message(tmp_path, capsys):
    termination = tmp_path / "termination-log"
    termination.touch()  # the kubelet creates it
    args = installer.parse_args(
        [
            "--target",
            str(tmp_path / "site-packages"),
            "--scratch",
            str(tmp_path / ".scratch"),
            "--log",
            str(tmp_path / "install.log"),
            "--termination-log",
            str(termination),
            "--requirements-file",
            str(tmp_path / "requirements" / "requirements.txt"),
            "--requirements-source",
            "ConfigMap reqs",
            "--",
        ]
    )
    assert installer.install(args) == 1
    message = "ERROR: ConfigMap reqs has no key requirements.txt (or does not exist)"
    assert termination.read_text().startswith(message)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(message)
    assert (tmp_path / "install.log").read_text().startswith(message)
    assert not (tmp_path / ".scratch").exists()


def test_without_a_termination_message_file_none_is_created(tmp_path):
    absent = tmp_path / "dev" / "termination-log"
    paths = ["--target", str(tmp_path / "t"), "--scratch", str(tmp_path / "s"), "--log", str(tmp_path / "l")]
    args = installer.parse_args(
        [*paths, "--termination-log", str(absent), "--requirements-file", str(tmp_path / "missing.txt")]
    )
    assert installer.install(args) == 1
    assert not absent.exists()

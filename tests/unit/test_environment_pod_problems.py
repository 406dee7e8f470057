"""Why gateway pods do not start, as the environment's Ready condition says it: from the scheduler's
PodScheduled=False message, a container's waiting reason, the pod's FailedMount events, or the
Deployment's ReplicaFailure."""

from nbkube.api import NotebookEnvironmentSpec
from nbkube.environment import controller, objects

SPEC = NotebookEnvironmentSpec.model_validate({"image": "kernel:dev"})
HASH = objects.spec_hash(SPEC)


def _pod(name="py-gateway-1", spec_hash=HASH, conditions=(), containers=(), init=(), deleting=False):
    meta = {"name": name, "annotations": {objects.SPEC_HASH_ANNOTATION: spec_hash}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"conditions": list(conditions), "containerStatuses": list(containers)}
    if init:
        status["initContainerStatuses"] = list(init)
    return {"metadata": meta, "status": status}


def _waiting(name, reason, message=""):
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}}


def test_a_missing_secret_key_is_named_from_the_containers_waiting_reason():
    pod = _pod(containers=[_waiting("gateway", "CreateContainerConfigError", 'secret "creds" not found')])
    problem = controller.pod_problem([pod], {}, HASH)
    assert (
        problem == 'pod py-gateway-1: container gateway CreateContainerConfigError: secret "creds" not found'
    )


def test_an_unschedulable_pod_says_what_the_scheduler_said():
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    pod = _pod(
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ]
    )
    assert controller.pod_problem([pod], {}, HASH) == f"pod py-gateway-1 is not scheduled: {message}"


def test_a_volume_that_cannot_be_mounted_is_named_from_the_pods_failed_mount_event():
    pod = _pod(containers=[_waiting("gateway", "ContainerCreating")])
    assert controller.pod_problem([pod], {}, HASH) is None
    events = {
        "py-gateway-1": [
            {
                "type": "Warning",
                "reason": "FailedMount",
                "message": "old",
                "lastTimestamp": "2026-01-01T00:00:00Z",
            },
            {
                "type": "Warning",
                "reason": "FailedMount",
                "message": 'MountVolume.SetUp failed for volume "conf" : configmap "conf" not found',
                "lastTimestamp": "2026-01-01T00:00:05Z",
            },
            {
                "type": "Normal",
                "reason": "Pulled",
                "message": "irrelevant",
                "lastTimestamp": "2026-01-01T00:00:09Z",
            },
        ]
    }
    problem = controller.pod_problem([pod], events, HASH)
    mount = 'MountVolume.SetUp failed for volume "conf" : configmap "conf" not found'
    assert problem == f"pod py-gateway-1: FailedMount: {mount}"


def test_pods_of_an_older_spec_or_going_away_say_nothing():
    waiting = [_waiting("gateway", "ImagePullBackOff", "no such image")]
    old = _pod(spec_hash="0123456789abcdef", containers=waiting)
    leaving = _pod(containers=waiting, deleting=True)
    assert controller.pod_problem([old, leaving], {}, HASH) is None


def test_an_init_container_waiting_is_named_too():
    pod = _pod(init=[_waiting("packages", "CrashLoopBackOff", "back-off 10s restarting failed container")])
    assert "container packages CrashLoopBackOff" in controller.pod_problem([pod], {}, HASH)


def test_the_ready_condition_ends_with_the_problem_while_pods_are_missing():
    deployment = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "updatedReplicas": 1}}
    problem = 'pod py-gateway-1: container gateway CreateContainerConfigError: configmap "conf" not found'
    status = controller.compute_status(
        "t", SPEC, 1, deployment, None, controller.KernelUsage(), problem=problem
    )
    (ready,) = status.conditions
    assert (ready.status, ready.reason) == ("False", "GatewaysNotReady")
    assert ready.message == f"0/1 gateway pod(s) ready; {problem}"
    deployment["status"]["readyReplicas"] = 1
    status = controller.compute_status(
        "t", SPEC, 1, deployment, None, controller.KernelUsage(), problem=problem
    )
    assert status.conditions[0].message == "1 gateway pod(s) ready"


def test_a_deployment_that_cannot_create_pods_says_why():
    deployment = {
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": 'pods "py-gateway-1" is forbidden: error looking up service account '
                    "team/reader",
                }
            ]
        }
    }
    assert controller.replica_failure(deployment) == (
        'gateway pods cannot be created: pods "py-gateway-1" is forbidden: error looking up service account '
        "team/reader"
    )
    assert controller.replica_failure({"status": {}}) is None


def test_a_long_message_is_clipped():
    pod = _pod(containers=[_waiting("gateway", "CreateContainerConfigError", "x" * 5000)])
    assert len(controller.pod_problem([pod], {}, HASH)) == controller.MAX_PROBLEM_CHARS

"""The nbkube node agent: a stand-in kubelet that runs the pods bound to its Node as local processes.

There is no container runtime and no image is pulled: each container's command and args run from the
agent's own environment (its PATH puts the virtualenv first), in its own process group, with the
container's env and workingDir, on the pod's own loopback address (127.N.x.y, N chosen per cluster;
every 127/8 address works on Linux without setup).

Volumes: emptyDir, secret, configMap, downwardAPI and projected (service-account token) volumes are
materialised in DIR/pods/<ns>_<pod>/volumes/<name>; a persistentVolumeClaim resolves to the directory
of the PersistentVolume it is bound to (hostPath or local). Each container runs in a private mount
namespace (unshare) in which every volumeMount is a bind mount of that directory (or its subPath) at
its mountPath, read-only where the mount, the claim or the volume kind (secret, configMap,
downwardAPI, projected) says so, as a kubelet mounts them. A missing mount point is created (on the
host an empty directory or file is left behind; inside another volume, in that volume). Two exceptions
keep the agent working on a shared machine: a mountPath that would hide what the process runs from
(the agent's directory, the pod's directory, the working directory, Python's prefix, the agent's
PYTHONPATH entries, the executable) is not mounted, with a log line; and where mount namespaces are
unavailable (not root) nothing is mounted. Either way each container also sees NBKUBE_VOLUME_<NAME>
pointing at the volume's directory. A volume that cannot be set up (a missing ConfigMap or Secret, an
unbound claim) keeps the pod in ContainerCreating with a FailedMount warning event, as a kubelet
reports it. Logs go to DIR/pods/<ns>_<pod>/<container>.log. Startup probes, sidecar init containers,
resource limits and ephemeral containers are not implemented.

The parts, one concern each (`python -m nbkube_testenv.nodeagent` runs agent.main):

    agent.py      the Agent: registers the node (node.py), watches the pods bound to it, one PodWorker each
    worker.py     PodWorker: one pod's life (address, volumes, init then regular containers, termination)
    container.py  Container: one container's process (start, exit, restart backoff, kill) and its status
    probes.py     readiness and liveness probes
    env.py        a container's environment; sources.py what env and volumes refer to (ConfigMaps,
                  Secrets, the downward API)
    volumes.py    a pod's volumes on the host, PersistentVolumeClaims resolved; mounts.py the bind
                  mounts in a container's private mount namespace
    podstatus.py  PodReporter: the pod's status, FailedMount events, the pod object's removal
    addresses.py  pod addresses; common.py the logger, timestamps and ConfigError
"""

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

NetworkPolicy egress is enforced (ingress is not): every process of a pod runs in the pod's cgroup v2
<cgroup2>/nbkube/<cluster id>/<pod uid> (a `/bin/sh` wrapper joins it before it execs the container's
command; kernels the gateway starts inherit it), and a pod that a policy with policyTypes Egress
selects gets an iptables and an ip6tables chain NBK-<cluster id>-<pod>, jumped to from OUTPUT for that
cgroup: replies, the pod itself, then one ACCEPT per (peer, port) of the union of the selecting
policies' egress rules (podSelector and namespaceSelector peers as the current pod IPs; ipBlock with
except; named ports are skipped with a log line), then REJECT (a TCP reset). The chain is in place
before the pod's first container starts and goes with the pod; the agent removes every chain and cgroup
of its cluster when it stops, and stale ones when it starts (`cluster down` too, for a killed agent).
As 127.0.0.1 is the host's, not the pod's, a connection over loopback is judged by the socket that
listens there (netpol.py): the pod's own sockets stay reachable, another pod's 127.0.0.1 or 0.0.0.0
sockets are not (a pod's loopback, in a real cluster), and a host process's socket on 127.0.0.1 or
0.0.0.0 (the control plane, the operator) is the node, allowed only if the policy allows 127.0.0.1 on
that port; a host socket on another address (OUTSIDE_IP, 127.0.0.2, where tests' servers listen) is a
host outside the cluster. The listening sockets are read from /proc on every policy, pod or namespace
event and every 2 s: a host port bound after the last look is reachable until the next one. Where cgroup
v2 or iptables is missing (or the agent is not root) nothing is enforced: the agent logs why and the
Node's annotation nbkube.io/network-policy says so (it reads "egress enforced" otherwise). This fences
ordinary code, not root: pods run as root on the host and could leave their cgroup or flush the rules.
Exec probes run outside the pod's cgroup.

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
    enforcer.py   NetworkPolicy egress: the watches, a pod's chains in place before it starts;
                  netpol.py the pure translation policy -> chains, firewall.py cgroups, iptables and
                  the listening sockets in /proc
    addresses.py  pod addresses; common.py the logger, timestamps and ConfigError
"""

"""`python -m nbkube_testenv.nodeagent --kubeconfig ... --dir ...` (cluster.py starts it so)."""

from nbkube_testenv.nodeagent.agent import main

main()

"""Shared pytest configuration: the local control-plane fixtures (cluster, namespace, kubectl, k8s_api)."""

pytest_plugins = ["nbkube_testenv.pytest_plugin"]

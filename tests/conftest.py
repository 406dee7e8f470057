"""Shared pytest configuration: the local control-plane fixtures (cluster, namespace, kubectl, k8s_api)
and the operator fixtures (operator, env_namespace)."""

pytest_plugins = ["nbkube_testenv.pytest_plugin", "nbkube_testenv.operator_fixtures"]

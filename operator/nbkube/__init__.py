"""nbkube: Jupyter notebooks as first-class Kubernetes workloads."""

__version__ = "0.1.0"

GROUP = "nbkube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

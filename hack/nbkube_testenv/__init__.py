"""Test and demo tooling: a real local Kubernetes control plane plus a node agent that runs pods
as local processes (see README, "Local control plane")."""

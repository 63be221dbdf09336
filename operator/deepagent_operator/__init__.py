"""Kubernetes operator that turns DeepAgent resources into streaming worker Deployments."""

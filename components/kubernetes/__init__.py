"""Kubernetes target: pure manifest builder and the KubernetesWorkload component."""

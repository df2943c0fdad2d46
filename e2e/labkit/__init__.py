"""twinhull's local lab: real Kubernetes control planes with KWOK nodes, Prometheus and fault injection.

Driven by the `e2e/lab` script; see `e2e/lab --help`.
"""

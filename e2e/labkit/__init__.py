"""twinhull's local lab: real control planes, KWOK nodes, Prometheus, fault injection.

Driven by the `e2e/lab` script; see `e2e/lab --help`.
"""

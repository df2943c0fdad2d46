"""Metric sources: Prometheus queries per ModelDeployment, cluster and zone, with one
written rule for empty, multiple, NaN, infinite and stale values."""

from twinhull.metrics.prometheus import MetricsUnavailable, Prometheus
from twinhull.metrics.samples import Reading, read_vector

__all__ = ["MetricsUnavailable", "Prometheus", "Reading", "read_vector"]

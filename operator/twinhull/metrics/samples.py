"""The rule for bad metric values, decided once. Pure.

A Prometheus instant query answers with a vector of series. twinhull reads one number per
(cluster, zone) cell of a ModelDeployment:

* **empty result** (no series, or no series for a cell): the cell is *missing*. Missing
  is not zero: a caller never scales down on it; it holds the last decision and reports
  ``MetricsAvailable=False``.
* **several series for one cell** (e.g. one per pod when the query was not aggregated, or
  a duplicated scrape): they are summed; demand and queue depth add up across servers.
* **NaN** (``0/0``, a histogram with no observations, a ``rate`` over one sample): the
  series is dropped; if nothing else remains the cell is missing.
* **+Inf / -Inf** (division by zero): dropped the same way; an infinite demand would scale
  to the maximum on a broken query.
* **negative values** (a counter reset seen by a hand-written ``delta``): clamped to 0.
* **stale** results (the sample is older than ``max_age``): dropped like NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Cell = tuple[str, ...]
"""The values of the grouping labels, e.g. (cluster, zone)."""


@dataclass(frozen=True)
class Reading:
    """The values of one query per cell, and what was dropped and why."""

    values: dict[Cell, float]
    dropped: tuple[str, ...] = ()

    def missing(self, cells: Iterable[Cell]) -> list[Cell]:
        """The cells without a usable value. Pure."""
        return [c for c in cells if c not in self.values]


def read_vector(result: Iterable[Mapping[str, Any]], *, now: float, max_age: float = 60.0,
                by: tuple[str, ...] = ("cluster", "zone")) -> Reading:
    """Apply the rule to a Prometheus instant-vector result (``data.result``), one value
    per combination of the ``by`` labels. Pure."""
    values: dict[Cell, float] = {}
    dropped: list[str] = []
    for series in result:
        labels = series.get("metric") or {}
        cell = tuple(str(labels.get(label, "")) for label in by)
        try:
            stamp, raw = series["value"]
            value = float(raw)
            stamp = float(stamp)
        except (KeyError, TypeError, ValueError):
            dropped.append(f"{cell}: malformed sample")
            continue
        if math.isnan(value) or math.isinf(value):
            dropped.append(f"{cell}: {raw}")
            continue
        if now - stamp > max_age:
            dropped.append(f"{cell}: stale ({now - stamp:.0f}s old)")
            continue
        values[cell] = values.get(cell, 0.0) + max(0.0, value)
    return Reading(values=values, dropped=tuple(dropped))

"""The rule for bad metric values and bad Prometheus answers, decided once. Pure.

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
* **malformed series** (no ``[time, "value"]`` pair, labels that are not strings, a label
  value longer than any Kubernetes name): dropped the same way.
* **old evaluations**: the timestamp of an instant-query sample is the *evaluation time*
  of the query, not the time of the raw sample (that freshness is the presets' job, see
  :mod:`.presets`). It is compared with the operator's own wall clock at the moment it
  sent the request, so a Prometheus whose clock is off, or a caching proxy, federation or
  remote-read layer answering an old evaluation, is caught: a series evaluated more than
  ``max_age`` before the request (or more than ``max_age`` after it: a clock that is
  ahead) is dropped, and an answer whose every series is that old is refused as a whole.

An answer that is not an instant vector at all (a scalar, a string, a range vector, JSON
without ``data.result``, an error, more series than the operator reads) is not a set of bad
values but a bad query or a wrong endpoint: :func:`read_answer` refuses it with
:class:`BadAnswer`, whose message says what came back and how to fix the query.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Cell = tuple[str, ...]
"""The values of the grouping labels, e.g. (cluster, zone)."""

MAX_SERIES = 20_000
"""The most series one answer may hold: the fleet queries return one per ModelDeployment
and zone; more means an unaggregated query (one per pod or per label) that would cost the
operator memory and time for nothing."""
MAX_LABEL_LENGTH = 1_024
"""The longest label value read (Kubernetes names are at most 253 characters)."""

_FIXES = {
    "scalar": "return an instant vector: use e.g. sum(<expr>) or vector(<expr>) instead of "
              "scalar(...) or a bare number",
    "string": "return an instant vector of numbers, e.g. sum(rate(<counter>[1m]))",
    "matrix": "return an instant vector: drop the [range] selector or wrap it in a function "
              "such as rate(<counter>[1m]) or avg_over_time(<gauge>[1m])",
}


class BadAnswer(ValueError):
    """A Prometheus answer that cannot be read as an instant vector; the message says what
    came back and how to fix the query (or the endpoint)."""


@dataclass(frozen=True)
class Reading:
    """The values of one query per cell, and what was dropped and why."""

    values: dict[Cell, float]
    dropped: tuple[str, ...] = ()

    def missing(self, cells: Iterable[Cell]) -> list[Cell]:
        """The cells without a usable value. Pure."""
        return [c for c in cells if c not in self.values]


def _cell(series: Mapping[str, Any], by: tuple[str, ...]) -> Cell | str:
    """The cell of one series, or why its labels are unusable. Pure."""
    labels = series.get("metric")
    if labels is None:
        labels = {}
    if not isinstance(labels, Mapping):
        return "labels are not a map"
    cell = []
    for label in by:
        value = labels.get(label, "")
        if not isinstance(value, str):
            return f"label {label} is not a string"
        if len(value) > MAX_LABEL_LENGTH:
            return f"label {label} is longer than {MAX_LABEL_LENGTH} characters"
        cell.append(value)
    return tuple(cell)


def read_vector(result: Iterable[Mapping[str, Any]], *, now: float, max_age: float = 60.0,
                by: tuple[str, ...] = ("cluster", "zone")) -> Reading:
    """Apply the rule to a Prometheus instant-vector result (``data.result``), one value
    per combination of the ``by`` labels. ``now`` is the local wall clock when the query
    was sent. Pure."""
    return _read(result, now=now, max_age=max_age, by=by)[0]


def _number(x: Any) -> float:
    """A sample's number: Prometheus writes values as strings ("3", "NaN", "+Inf"); a
    JSON number is accepted, a boolean or anything else is not. Pure."""
    if isinstance(x, bool) or not isinstance(x, str | int | float):
        raise TypeError(x)
    return float(x)


def _read(result: Iterable[Mapping[str, Any]], *, now: float, max_age: float,
          by: tuple[str, ...]) -> tuple[Reading, list[str]]:
    """:func:`read_vector`, and why each series dropped as old was. Pure."""
    values: dict[Cell, float] = {}
    dropped: list[str] = []
    old: list[str] = []
    for series in result:
        if not isinstance(series, Mapping):
            dropped.append(f"malformed series {str(series)[:80]!r}")
            continue
        cell = _cell(series, by)
        if isinstance(cell, str):
            dropped.append(f"malformed series: {cell}")
            continue
        sample = series.get("value")
        raw: Any = None
        try:
            if not isinstance(sample, list | tuple) or len(sample) != 2:
                raise TypeError(sample)
            raw = sample[1]
            value, stamp = _number(raw), _number(sample[0])
        except (TypeError, ValueError):
            dropped.append(f"{cell}: malformed sample")
            continue
        if math.isnan(value) or math.isinf(value) or not math.isfinite(stamp):
            dropped.append(f"{cell}: {raw}")
            continue
        if now - stamp > max_age:
            old.append(f"evaluated {now - stamp:.0f}s before the request")
            dropped.append(f"{cell}: stale ({old[-1]})")
            continue
        if stamp - now > max_age:
            old.append(f"evaluated {stamp - now:.0f}s after the request: its clock is ahead")
            dropped.append(f"{cell}: stale ({old[-1]})")
            continue
        values[cell] = values.get(cell, 0.0) + max(0.0, value)
    return Reading(values=values, dropped=tuple(dropped)), old


def read_answer(body: Any, *, now: float, max_age: float = 60.0,
                by: tuple[str, ...] = ("cluster", "zone"), max_series: int = MAX_SERIES
                ) -> Reading:
    """Check a decoded ``/api/v1/query`` answer (the whole JSON body) and apply the rule
    to its vector. ``now`` is the local wall clock when the query was sent. Raises
    :class:`BadAnswer` for anything but a successful instant vector of at most
    ``max_series`` series whose evaluation is not older than ``max_age``. Pure."""
    if not isinstance(body, Mapping):
        raise BadAnswer(f"answered a JSON {type(body).__name__}, not an object; check the "
                        "URL points at the Prometheus HTTP API")
    if body.get("status") != "success":
        error = str(body.get("error") or "no error message")[:300]
        error_type = str(body.get("errorType") or "unknown")[:40]
        raise BadAnswer(f"refused the query ({error_type}: {error}); fix the PromQL")
    data = body.get("data")
    if not isinstance(data, Mapping) or "result" not in data:
        raise BadAnswer("answered without data.result; check the URL points at the "
                        "Prometheus HTTP API")
    kind = str(data.get("resultType"))[:40]
    result = data["result"]
    if kind != "vector":
        fix = _FIXES.get(kind, "return an instant vector")
        raise BadAnswer(f"returned a {kind}, not a vector; {fix}")
    if not isinstance(result, list):
        raise BadAnswer(f"returned a vector that is a JSON {type(result).__name__}, not a "
                        "list; check the URL points at the Prometheus HTTP API")
    if len(result) > max_series:
        raise BadAnswer(f"returned {len(result)} series, more than the {max_series} read; "
                        "aggregate it, e.g. sum by (cluster, zone) (...)")
    reading, old = _read(result, now=now, max_age=max_age, by=by)
    if result and len(old) == len(result):
        raise BadAnswer(f"answered an old evaluation ({old[0]}, more than {max_age:.0f}s); a "
                        "caching proxy, federation or remote-read layer, or a clock that is "
                        "off, serves out-of-date values: query a live Prometheus")
    return reading

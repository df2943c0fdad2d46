"""Integer shares: split a whole into parts proportional to weights. Pure."""

from __future__ import annotations

from collections.abc import Mapping


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, ties
    broken by name), summing exactly to ``total``. All-zero weights split evenly. Pure.

    >>> apportion(100, {"east": 1, "west": 2})
    {'east': 33, 'west': 67}
    """
    if not weights:
        return {}
    if total <= 0:
        return dict.fromkeys(weights, 0)
    positive = {k: max(0.0, float(w)) for k, w in weights.items()}
    mass = sum(positive.values())
    if mass <= 0:
        positive = dict.fromkeys(weights, 1.0)
        mass = float(len(weights))
    exact = {k: total * w / mass for k, w in positive.items()}
    out = {k: int(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out

"""Error budgets and burn rates of the tiers' availability targets: what the generated
alerting rules page on (:mod:`twinhull.metrics.rules`) and what rollout verification
rolls a revision back on (:mod:`twinhull.plan.rollout`), from one definition. Pure.

As in the Google SRE workbook (chapter 5, "Alerting on SLOs"), a burn rate is the bad
ratio over the budget, and an alert needs a long and a short window both above a factor
of the budget."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class BurnWindow:
    """One long and short window pair of a burn alert and the factor both must exceed."""

    long: str
    short: str
    factor: str
    """The burn rate, as written in the expression (``"14.4"``)."""


FAST = (BurnWindow("1h", "5m", "14.4"), BurnWindow("6h", "30m", "6"))
"""The page-level pairs: 2 % of the budget in an hour, 5 % in six hours."""
SLOW = (BurnWindow("1d", "2h", "3"), BurnWindow("3d", "6h", "1"))
"""The ticket-level pairs: 10 % of the budget in a day, 10 % in three days."""
PAGE = FAST[0]
"""The pair rollout verification applies to a revision's own requests: 14.4x over 1 h
and 5 m. A revision under verification is younger than the 6 h / 30 m pair's windows, so
that pair would read the same few minutes twice at a lower factor (6x): it is left to
the alerts, which see the whole deployment over hours."""
MIN_REQUESTS = 20
"""Low-traffic guard: no page, and no rollback on a burn rate, below this many requests
ended in the long window (one request would be 5 % of the ratio)."""


def budget(availability_target: str) -> Decimal:
    """The error budget, a fraction of requests, of an availability target written in
    percent (``"99.99"`` → 0.0001). Pure."""
    return (Decimal(100) - Decimal(availability_target)) / Decimal(100)


def page_burn(availability_target: str, long_percent: float | None,
              short_percent: float | None, requests: float | None,
              min_requests: int = MIN_REQUESTS) -> str | None:
    """Why the page condition (:data:`PAGE`) holds on error percents over its long and
    short windows and the requests ended in the long one, or None. Pure."""
    allowed = float(budget(availability_target))
    if allowed <= 0 or long_percent is None or short_percent is None or requests is None:
        return None
    factor = float(PAGE.factor)
    long_burn, short_burn = long_percent / 100 / allowed, short_percent / 100 / allowed
    if long_burn > factor and short_burn > factor and requests >= min_requests:
        return (f"error budget of {availability_target}% burning at {long_burn:.1f}x over "
                f"{PAGE.long} and {short_burn:.1f}x over {PAGE.short} ({long_percent:.3g}% "
                f"of {requests:.0f} requests failed; the page alert fires above "
                f"{PAGE.factor}x)")
    return None

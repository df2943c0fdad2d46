"""The scaling policies e2e/bench/scaling compares, each a pure function of what it
observes every tick (15 s) to a total replica count. The baselines follow the real
algorithms and their defaults; the sources are cited where each is defined.

* :class:`Static`: a constant count sized for the week's peak;
* :class:`Hpa`: the Kubernetes HorizontalPodAutoscaler (``autoscaling/v2``) on a request
  rate, external metric with an ``AverageValue`` target;
* :func:`keda`: a KEDA ScaledObject with a Prometheus trigger on waiting requests, which
  KEDA turns into an HPA on an external metric (same algorithm);
* :class:`Oracle`: knows the future demand exactly and starts replicas just in time;
* :class:`Twinhull`: the operator's pure planner, ``twinhull.plan.scaling.recommend``,
  called as the operator calls it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from twinhull.api.deployment import Scaling
from twinhull.api.tier import ServingTierSpec
from twinhull.plan.scaling import Load, Recommendation, recommend


@dataclass(frozen=True)
class Observation:
    """What a policy sees at a tick (all rates over the measurement window, 1 m)."""

    now: float
    """Seconds since the start of the simulation (a Monday 00:00)."""
    current: int
    """Replicas running or starting (a Deployment's spec.replicas)."""
    ready: int
    requests_per_second: float
    """Requests arriving at the gateway."""
    tokens_per_second: float
    """Tokens served (``vllm:prompt_tokens_total`` + ``vllm:generation_tokens_total``)."""
    waiting: float
    """Requests queued now (``vllm:num_requests_waiting``)."""
    forecast_tokens_per_second: float | None = None
    """The highest served rate in the pre-warm windows of earlier days (twinhull only)."""
    tick: int = 0
    running: float | None = None
    """Requests being served (``vllm:num_requests_running``)."""
    tokens_per_second_peak: float | None = None
    """The highest 1 m token rate of the last 10 minutes."""
    forecast_said_tokens_per_second: float | None = None
    """What the pre-warm windows said for the last lead time (twinhull only)."""


class Policy:
    """A scaling policy: ``decide`` the total replica count at a tick."""

    name = "policy"
    wants_forecast = False

    def decide(self, obs: Observation) -> int:
        raise NotImplementedError


@dataclass
class Static(Policy):
    """Provisioning for the peak: one count all week."""

    replicas: int
    name = "static"

    def decide(self, obs: Observation) -> int:
        return self.replicas


def static_replicas(peak_tokens_per_second: float, *, target: float, headroom_percent: float,
                    low: int, high: int) -> int:
    """The count that serves the week's peak (1 m rate) at the target per replica with the
    tier's headroom, within the bounds. Pure."""
    needed = math.ceil(peak_tokens_per_second * (1 + headroom_percent / 100) / target)
    return min(max(needed, low), high)


# The HPA's algorithm and defaults, from kubernetes/pkg/controller/podautoscaler
# (horizontal.go, replica_calculator.go) and the autoscaling/v2 API documentation
# (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/):
HPA_SYNC_SECONDS = 15
"""kube-controller-manager --horizontal-pod-autoscaler-sync-period (default 15 s)."""
HPA_TOLERANCE = 0.10
"""--horizontal-pod-autoscaler-tolerance (default 0.1): no change within 10 % of 1.0."""
HPA_DOWN_STABILIZATION = 300
"""behavior.scaleDown.stabilizationWindowSeconds default: 300 s (the highest
recommendation in the window wins)."""
HPA_UP_STABILIZATION = 0
"""behavior.scaleUp.stabilizationWindowSeconds default: 0."""
HPA_UP_POLICIES = (("Pods", 4, 15), ("Percent", 100, 15))
"""behavior.scaleUp.policies default: 4 Pods per 15 s and 100 % per 15 s, selectPolicy Max."""
HPA_DOWN_POLICIES = (("Percent", 100, 15),)
"""behavior.scaleDown.policies default: 100 % per 15 s (no rate limit in practice)."""


@dataclass
class Hpa(Policy):
    """The HPA with the default ``behavior`` on one external metric with an
    ``AverageValue`` target (how prometheus-adapter's and KEDA's metrics are consumed).

    Each sync: ``usageRatio = metric / (target * currentReplicas)``; within the tolerance
    the count is kept, else ``desired = ceil(metric / target)``
    (GetExternalPerPodMetricReplicas: the metric is a total, so pod readiness plays no
    part, unlike Pods/Resource metrics); the recommendation is stabilized (scale up to at
    least the lowest recommendation of the up window, down to at most the highest of the
    down window), then limited by the scaling policies relative to the count at the start
    of each policy's period (scale events within the period are remembered), and by
    minReplicas/maxReplicas. ``currentReplicas`` is the scale subresource's count, which
    includes pods that are still starting."""

    low: int
    high: int
    target: float
    metric: Callable[[Observation], float]
    name: str = "hpa"
    down_window: float = HPA_DOWN_STABILIZATION
    """behavior.scaleDown.stabilizationWindowSeconds."""
    more: tuple[tuple[Callable[[Observation], float], float], ...] = ()
    """Further metrics and targets: the HPA computes a proposal per metric and takes the
    largest (horizontal.go computeReplicasForMetrics)."""
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    events: list[tuple[float, int]] = field(default_factory=list)
    """(time, signed replica change) of scale events, for the policies' periods."""

    def decide(self, obs: Observation) -> int:
        current, now = obs.current, obs.now
        if current == 0:  # the HPA does not act on a Deployment scaled to zero
            return current
        desired = 0
        for metric, target in ((self.metric, self.target), *self.more):
            value = metric(obs)
            ratio = value / (target * current)
            desired = max(desired, current if abs(ratio - 1) <= HPA_TOLERANCE else
                          math.ceil(value / target))
        # stabilizeRecommendationWithBehaviors: the recommendations of the last window
        # (timestamp after now - window) bound the new one from below (up) and above (down)
        up = down = desired
        for t, r in self.recommendations:
            if now - t < HPA_UP_STABILIZATION:
                up = min(up, r)
            if now - t < self.down_window:
                down = max(down, r)
        self.recommendations.append((now, desired))
        keep = max(self.down_window, HPA_UP_STABILIZATION)
        while self.recommendations and now - self.recommendations[0][0] >= keep:
            self.recommendations.popleft()
        stabilized = min(max(current, up), down)
        # convertDesiredReplicasWithBehaviorRate
        if stabilized > current:
            limit = max(self._limit(current, now, policy, up=True)
                        for policy in HPA_UP_POLICIES)
            result = min(stabilized, max(limit, current), self.high)
        elif stabilized < current:
            limit = min(self._limit(current, now, policy, up=False)
                        for policy in HPA_DOWN_POLICIES)
            result = max(stabilized, limit, self.low)
        else:
            result = stabilized
        result = min(max(result, self.low), self.high)
        if result != current:
            self.events.append((now, result - current))
        self.events = [(t, d) for t, d in self.events if now - t < 1800]
        return result

    def _limit(self, current: int, now: float, policy: tuple[str, int, int], *, up: bool
               ) -> int:
        """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors:
        the bound a policy allows from the count at the start of its period."""
        kind, value, period = policy
        added = sum(d for t, d in self.events if now - t < period and d > 0)
        removed = -sum(d for t, d in self.events if now - t < period and d < 0)
        start = current - added + removed
        if up:
            return start + value if kind == "Pods" else math.ceil(start * (1 + value / 100))
        return start - value if kind == "Pods" else math.floor(start * (1 - value / 100))


def hpa(low: int, high: int, *, target_tokens: float, mean_tokens: float) -> Hpa:
    """An HPA on the request rate at the gateway (``rate(requests_total[1m])`` through
    prometheus-adapter as an external metric), with a target of the deployment's target
    tokens per replica divided by the app's mean tokens per call."""
    return Hpa(low, high, target_tokens / mean_tokens, lambda o: o.requests_per_second,
               name="hpa")


def hpa_tokens(low: int, high: int, *, target_tokens: float, headroom_percent: float,
               down_window: float) -> Hpa:
    """What a competent user configures with the same information twinhull has: an HPA on
    the served token rate (``sum(rate(vllm:prompt_tokens_total[1m]) +
    rate(vllm:generation_tokens_total[1m]))`` through prometheus-adapter, external metric,
    ``AverageValue``), its target the per-replica target divided by the tier's headroom
    (the same spare capacity twinhull keeps), and the tier's scale-down window as
    ``behavior.scaleDown.stabilizationWindowSeconds``."""
    return Hpa(low, high, target_tokens / (1 + headroom_percent / 100),
               lambda o: o.tokens_per_second, name="hpa_tokens", down_window=down_window)


def keda_tokens_queue(low: int, high: int, *, target_tokens: float, headroom_percent: float,
                      target_queue: float, down_window: float) -> Hpa:
    """A ScaledObject with two Prometheus triggers, the served token rate (threshold: the
    per-replica target over the tier's headroom) and the waiting requests (threshold:
    targetQueuePerReplica); KEDA hands both to one HPA, which scales to the larger of the
    two proposals (https://keda.sh/docs/latest/concepts/scaling-deployments/: "multiple
    triggers ... the HPA calculates the desired replicas for each and picks the
    maximum"); ``advanced.horizontalPodAutoscalerConfig.behavior`` sets the tier's
    scale-down window."""
    return Hpa(low, high, target_tokens / (1 + headroom_percent / 100),
               lambda o: o.tokens_per_second, name="keda", down_window=down_window,
               more=((lambda o: o.waiting, target_queue),))


KEDA_POLLING_SECONDS = 30
"""ScaledObject spec.pollingInterval default (30 s): how often KEDA checks the trigger to
activate (0 <-> 1); with minReplicaCount >= 1 it never deactivates, and the HPA reads the
metric through KEDA's metrics server at its own 15 s sync (useCachedMetrics: false, the
default), so the value seen is the current one."""


def keda(low: int, high: int, *, target_queue: float) -> Hpa:
    """A ScaledObject with a Prometheus trigger ``sum(vllm:num_requests_waiting{...})``,
    ``threshold`` = the deployment's target queue per replica (metricType AverageValue,
    KEDA's default), minReplicaCount = the minimum. KEDA creates an HPA with the default
    behavior (advanced.horizontalPodAutoscalerConfig unset), so the algorithm is
    :class:`Hpa`'s. Source: https://keda.sh/docs/latest/reference/scaledobject-spec/ and
    https://keda.sh/docs/latest/scalers/prometheus/."""
    return Hpa(low, high, target_queue, lambda o: o.waiting, name="keda")


@dataclass
class Oracle(Policy):
    """Replicas from a schedule computed from the future demand (:func:`oracle_schedule`)."""

    schedule: Sequence[int]
    name = "oracle"

    def decide(self, obs: Observation) -> int:
        return self.schedule[min(obs.tick, len(self.schedule) - 1)]


def oracle_schedule(tokens_per_tick: Sequence[float], *, tick: float, replica_tokens: float,
                    utilisation: float, cold_ticks: int, low: int, high: int,
                    window_ticks: int = 4) -> list[int]:
    """Just in time: the replicas the demand of the coming ``window_ticks`` needs at the
    given utilisation of their throughput (the demand averaged over the window, so one
    large request does not count as a sustained rate), started a cold start ahead and
    kept while any tick up to a cold start ahead needs them. Pure."""
    n = len(tokens_per_tick)
    ahead, acc = [0.0] * n, 0.0
    for k in range(n - 1, -1, -1):  # tokens arriving in [k, k + window_ticks)
        acc += tokens_per_tick[k] - (tokens_per_tick[k + window_ticks]
                                     if k + window_ticks < n else 0.0)
        ahead[k] = acc
    capacity = window_ticks * tick * replica_tokens * utilisation
    needed = [min(max(math.ceil(d / capacity), low), high) for d in ahead]
    return floor_schedule(needed, cold_ticks)  # the maximum over [k, k + cold_ticks]


def floor_schedule(needed: Sequence[int], cold_ticks: int) -> list[int]:
    """The cheapest replica schedule (replicas alive per tick, starting ones included)
    whose Ready replicas cover ``needed`` at every tick, given that a replica is Ready
    ``cold_ticks`` after its creation: per replica level, each interval where the need
    reaches it is started ``cold_ticks`` ahead, and a gap shorter than a cold start is
    bridged (keeping the replica costs less than restarting it); that is the maximum of
    the need over ``[k, k + cold_ticks]``. Pure (a dynamic programme solved per level)."""
    return [int(v) for v in sliding_max(list(reversed(needed)), cold_ticks + 1)][::-1]


EPOCH = datetime(2025, 11, 3, tzinfo=UTC)
"""A Monday: the simulated clock's origin for the planner's timestamps."""


@dataclass
class Twinhull(Policy):
    """``twinhull.plan.scaling.recommend`` with the measured 1 m token rate, the waiting
    requests and the pre-warm forecast, its history kept as the operator keeps it in
    status; the count is the operator's last decision (``current``)."""

    scaling: Scaling
    tier: ServingTierSpec
    zones: int
    name = "twinhull"
    wants_forecast = True
    history: tuple[Recommendation, ...] = ()
    forecast_missed_at: datetime | None = None
    """Since when the earlier days' peak has been missing, as the operator keeps it in
    status (``status.scaling.forecastMissedAt``)."""
    prewarm: bool = True
    """False: no forecast at all (twinhull without pre-warm)."""
    adaptive: bool = False
    """Pass the planner's newer inputs: the recent peak rate (adaptive headroom) and what
    the forecast said for the last lead time (its error check)."""

    def decide(self, obs: Observation) -> int:
        ahead = (obs.forecast_tokens_per_second if self.scaling.metric == "tokens"
                 and self.prewarm and self.scaling.pre_warm else None)  # as read_loads
        load = Load(tokens_per_second=obs.tokens_per_second, waiting=obs.waiting,
                    forecast_tokens_per_second=ahead, running=obs.running,
                    tokens_per_second_peak=(obs.tokens_per_second_peak if self.adaptive
                                            else None),
                    forecast_said_tokens_per_second=(obs.forecast_said_tokens_per_second
                                                     if self.adaptive and ahead is not None
                                                     else None))
        result = recommend(self.scaling, self.tier, load, current=obs.current,
                           zones=self.zones, history=self.history,
                           now=EPOCH + timedelta(seconds=obs.now),
                           forecast_missed_at=self.forecast_missed_at)
        self.history = tuple(result.history)
        self.forecast_missed_at = result.forecast_missed_at
        return result.replicas


def sliding_max(xs: Sequence[float], width: int) -> list[float]:
    """``out[k] = max(xs[k - width + 1 .. k])`` (fewer at the start). Pure."""
    out, window = [], deque[int]()
    for k, x in enumerate(xs):
        while window and xs[window[-1]] <= x:
            window.pop()
        window.append(k)
        while window[0] <= k - width:
            window.popleft()
        out.append(xs[window[0]])
    return out

"""The operator's in-memory state, shared by its handlers: the hub client, the members,
the latest ModelDeployments and ServingClusters, and the signal that wakes the fleet loop.

Effects: holds clients; every durable fact lives in the hub (specs, status), so a restarted
operator rebuilds this from there.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.clusters.kube import Kube, WriteScope
from twinhull.clusters.member import Member
from twinhull.handlers.counters import Telemetry
from twinhull.plan.fleet import ClusterView
from twinhull.plan.rollout import Health, Snapshot
from twinhull.plan.scaling import Load
from twinhull.policy.tiers import TierPolicy

Key = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""


def deployment_spec(rt: Runtime, key: Key, body: dict[str, Any]) -> ModelDeploymentSpec:
    """A ModelDeployment's validated spec, validated again only when the spec changed:
    the fleet and load rounds read every spec every round, and validating 2,000 of them
    each time took a fifth of a core. Raises ``pydantic.ValidationError`` (never
    cached). Effects: memory."""
    raw = body.get("spec") or {}
    hit = rt.specs.get(key)
    if hit is not None and hit[0] == raw:
        return hit[1]
    spec = ModelDeploymentSpec.model_validate(raw)
    rt.specs[key] = (copy.deepcopy(raw), spec)
    return spec


@dataclass(frozen=True)
class Settings:
    """How the operator runs; set from the command line."""

    namespace: str = "twinhull-system"
    """The operator's namespace: the only one kubeconfig Secrets are read from."""
    gateway: tuple[str, str] = ("twinhull-system", "twinhull")
    """(namespace, name) of the Gateway every HTTPRoute attaches to."""
    resync_seconds: float = 10.0
    """The fleet is re-planned at least this often, even without a change."""
    hub_timeout_seconds: float = 5.0
    """Timeout of every call to the hub."""
    max_workers: int = 20
    """Objects of one kind kopf handles at once: bounds the requests in flight to the hub
    (unbounded, a start with 2,000 ModelDeployments patched them all at once, the hub
    answered 429 and the Lease could not be renewed)."""
    prometheus_url: str | None = field(default=None, repr=False)
    """Where load is read for scaling; None: scaling holds (MetricsAvailable=False)."""
    metrics_seconds: float = 10.0
    """How often load is read from Prometheus."""
    rate_window: str = "1m"
    """The PromQL range of ``rate()`` over token counters (at least twice the scrape
    interval)."""
    failure_metric: str | None = None
    """A counter of failed requests (labels namespace, twinhull_deployment) that replaces
    each runtime's own failure counter (:attr:`twinhull.metrics.presets.Preset.failure`)
    in rollout verification; None: the runtime's own."""
    prewarm_period_seconds: float = 86400.0
    """The period of recurring peaks pre-warm looks back by (a day; 0: no pre-warm)."""
    prewarm_lead_seconds: float = 600.0
    """How far ahead pre-warm provisions for: about a replica's start-up time."""
    heartbeat_seconds: float = 300.0
    """A ServingCluster's status is written again after this long when no probe changed it,
    to refresh its lastProbeTime (0: never; only changes are written). A steady cluster
    costs no write per probe; kubelets report an unchanged Node every 5 minutes too."""
    installation_id: str | None = None
    """This installation's identity, stamped on every member object (None: the hub's
    kube-system Namespace UID)."""
    allow_exec_plugins: bool = False
    """Whether member kubeconfigs may run ``exec``/auth-provider plugins (commands taken
    from a Secret's content, run inside the operator)."""


@dataclass
class Runtime:
    """Everything the handlers share."""

    hub: Kube
    policy: TierPolicy
    settings: Settings
    deployments: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """The latest body of every ModelDeployment, from watch events."""
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The latest body of every ServingCluster, from watch events."""
    members: dict[str, Member] = field(default_factory=dict)
    views: dict[str, ClusterView] = field(default_factory=dict)
    """What the planner sees of each cluster (health and zones)."""
    member_wake: dict[str, asyncio.Event] = field(default_factory=dict)
    synced: bool = False
    """True once every ModelDeployment was listed: only then may orphans be removed."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    route_hashes: dict[Key, str] = field(default_factory=dict)
    """The content hash of the HTTPRoute last written (or found) per ModelDeployment."""
    route_versions: dict[Key, int] = field(default_factory=dict)
    """The resourceVersion of each HTTPRoute as twinhull last wrote it: older watch events
    are stale echoes of earlier writes, not edits."""
    route_live: dict[Key, Any] = field(default_factory=dict)
    """What each HTTPRoute in the hub routes (see ``fleet.route_projection``), from the
    watch: a route edited by hand differs from what was written and is written again."""
    loads: dict[Key, Load] = field(default_factory=dict)
    """The latest load per ModelDeployment read from Prometheus."""
    telemetry: Telemetry = field(default_factory=Telemetry)
    """The operator's own counters and histograms (served by ``handlers.telemetry``)."""
    drills: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Every FailoverDrill, from watch events."""
    health: dict[Key, Health] = field(default_factory=dict)
    """Error percent and p95 latency per ModelDeployment and per revision its pods run,
    for rollout verification (see :meth:`health_of`)."""
    health_missing: str = ""
    """Why a ModelDeployment without an entry in :attr:`health` has no reading: Prometheus
    is down, the reader restarts, or it is new since the last round; empty: there is no
    Prometheus (readiness alone verifies). Set by the load reader."""
    snapshots: dict[Key, tuple[str, Snapshot | None]] = field(default_factory=dict)
    """Every ModelSnapshot, (namespace, name) to its ModelDeployment's name and its parsed
    content (None if unreadable), from watch events."""
    loads_time: datetime | None = None
    """When :attr:`loads` were read (None: never, or the last read failed)."""
    started: datetime = field(default_factory=lambda: now())
    installation: str = ""
    """This installation's identity (see :attr:`Settings.installation_id`)."""
    identity: str = "standalone"
    """This replica's identity (its Lease holder name): who decided, in Events and audit
    records."""
    audit: dict[Key, dict[str, int]] = field(default_factory=dict)
    """Per ModelDeployment: its audit records' keys and bytes, as written (see
    ``handlers.audit``); missing until read from the hub."""
    audit_pending: dict[Key, list[Any]] = field(default_factory=dict)
    """Per ModelDeployment: audit records whose write failed, encoded
    (``handlers.audit.Encoded``), written with the next (see ``handlers.audit``)."""
    view_times: dict[str, datetime] = field(default_factory=dict)
    """When each cluster's view was last produced by a completed probe; a view older than
    the cluster's probe bound is treated as Suspect, never as Healthy."""
    load_errors: dict[Key, str] = field(default_factory=dict)
    """Per ModelDeployment: why its metrics could not be read (shown in MetricsAvailable)."""
    beats: dict[str, datetime] = field(default_factory=dict)
    """Background loop name to when it last finished an iteration (see ``supervise``)."""
    loop_bounds: dict[str, float] = field(default_factory=dict)
    """Background loop name to the seconds it may go without a beat before it counts as
    stuck (liveness fails)."""
    loop_errors: dict[str, str] = field(default_factory=dict)
    """Background loop name to the last error that ended it (cleared when it beats)."""
    restarts: dict[str, int] = field(default_factory=dict)
    """Background loop name to how often it was restarted after an error."""
    backoff: dict[Key, tuple[int, datetime]] = field(default_factory=dict)
    """Per ModelDeployment whose round failed: (consecutive failures, retry not before)."""
    hub_writes: int = 0
    """Write requests sent to the hub (status, routes, events), for tests and benchmarks."""
    unrecorded: dict[Key, set[str]] = field(default_factory=dict)
    """Per ModelDeployment: ids of decisions announced (Event, audit record, log line,
    counter) whose status write has not landed yet. Until it lands the planner decides
    them again each round from the old status; they are announced once (a member lost at
    2,000 ModelDeployments, with 400 statuses a round, recorded each Failover ~3 times)."""
    specs: dict[Key, tuple[dict[str, Any], ModelDeploymentSpec]] = field(default_factory=dict)
    """Per ModelDeployment: the raw spec last validated and its model (see
    :func:`deployment_spec`)."""
    outcome_failed: dict[Key, float] = field(default_factory=dict)
    """Per ModelSnapshot (namespace, name): when (monotonic) its outcome write last failed,
    so that an outcome written again (``RevisionPlan.again``) is retried once a minute,
    not every round, while the hub refuses it."""
    rendered: dict[Key, dict[str, tuple[Any, list[dict[str, Any]]]]] = \
        field(default_factory=dict)
    """Per ModelDeployment and member: what its objects were last rendered from and the
    objects (see ``fleet.rendered_objects``)."""
    round_scope: WriteScope | None = None
    """The hub writes of the fleet round running (see :meth:`preempt`)."""

    def __post_init__(self) -> None:
        if self.settings.prometheus_url and not self.health_missing:
            self.health_missing = "not read yet: the first round of Prometheus reads runs"

    def health_of(self, key: Key) -> Health:
        """The deployment's health from the last round, or an unread one saying why there
        is none (no Prometheus: an empty reading, readiness alone verifies). Pure."""
        health = self.health.get(key)
        return health if health is not None else Health(unread=self.health_missing)

    def poke(self) -> None:
        """Wake the fleet loop. Effects: memory."""
        self.wake.set()

    def preempt(self, why: str) -> None:
        """Something the running fleet round did not plan for must be acted on now (a
        member went Down): the round stops planning, sends none of its hub writes still
        queued (those already sent finish), and the next round starts at once. A round of
        2,000 ModelDeployments that saw a member Suspect spent ~20 s writing 400 statuses
        before the round that saw it Down could move a single route. Effects: memory."""
        scope = self.round_scope
        if scope is not None and not scope.abandoned:
            scope.abandon(why)
            self.telemetry.preempted.inc()
        self.poke()

    def poke_member(self, cluster: str) -> None:
        """Wake one member's writer. Effects: memory."""
        event = self.member_wake.get(cluster)
        if event is not None:
            event.set()


def slim(body: Any) -> dict[str, Any]:
    """A hub object as it is kept in memory: without ``metadata.managedFields``, which
    twinhull never reads and which was a fifth to a third of a ModelDeployment (three
    field managers: the user's client, kopf, twinhull). Pure (a shallow copy)."""
    obj = dict(body)
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return obj


def now() -> datetime:
    """The current time (UTC). Effects: reads the clock."""
    return datetime.now(UTC)


def rfc3339(t: datetime | None) -> str | None:
    """A time as Kubernetes writes it. Pure."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def rfc3339_micro(t: datetime | None) -> str | None:
    """A time to the microsecond, as Kubernetes writes a MicroTime: for the clocks a
    deadline is measured from, which :func:`rfc3339`'s whole seconds would start up to a
    second early once read back. Pure."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if t else None


def as_mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else empty: status and annotations are read, never
    trusted (anyone with the status subresource can write them). Pure."""
    return dict(value) if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else empty. Pure."""
    return list(value) if isinstance(value, list) else []


def parse_time(text: Any) -> datetime | None:
    """Parse an RFC 3339 time from status; anything else (missing, not text, garbage, no
    time zone) is None: status is read, never trusted. Pure."""
    if not text or not isinstance(text, str) or len(text) > 64:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None

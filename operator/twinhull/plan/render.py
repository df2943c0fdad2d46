"""Render the member-cluster objects of a ModelDeployment, and its HTTPRoute in the hub.
Pure: from spec, tier and planned replicas to manifests (dicts), written elsewhere.

Per member cluster, in the namespace named like the ModelDeployment's:
one Deployment per (role, zone) pinned to the zone, a PodDisruptionBudget for each, a
Service for the cluster's primary replicas (``<name>-<cluster>``) and one for the fallback
(``<name>-fallback``), and the tier's PriorityClass. Every object carries the labels that
tie it to the ModelDeployment and a hash of its own content, so an unchanged object is
never written again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from twinhull.api.deployment import ModelDeploymentSpec, ModelSpec
from twinhull.api.tier import ServingTierSpec
from twinhull.plan.fleet import FALLBACK, Role, Slot

RENDERER = "twinhull.io/render-v1"
"""Version of this renderer; part of every object's hash."""

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "twinhull"
DEPLOYMENT = "serving.twinhull.io/deployment"
ROLE = "serving.twinhull.io/role"
ZONE = "serving.twinhull.io/zone"
CLUSTER = "serving.twinhull.io/cluster"
HASH = "serving.twinhull.io/content-hash"
INSTALLATION = "serving.twinhull.io/installation"
"""Label of every member object: the twinhull installation (hub) that owns it. Stamped when
an object is rendered for an installation (or by the member shell when it publishes one
rendered without), outside the content hash; cleanup and adoption select on it so two
hubs sharing a member never touch each other's objects."""
REVISION = "serving.twinhull.io/revision"
"""Annotation of a Deployment and label of its pods: the revision (:func:`revision_of`)
they run (the pods' label lets metrics be told apart by revision during a rollout)."""
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU = "nvidia.com/gpu"

METRICS_ARGS: dict[str, tuple[str, ...]] = {"sglang": ("--enable-metrics",)}
"""Server arguments without which a runtime serves no ``/metrics`` (added when missing)."""

_PROBES: dict[str, dict[str, Any]] = {
    # vLLM, TGI and SGLang all answer GET /health once the model is loaded.
    "vllm": {"httpGet": {"path": "/health", "port": "http"}},
    "tgi": {"httpGet": {"path": "/health", "port": "http"}},
    "sglang": {"httpGet": {"path": "/health", "port": "http"}},
    "generic": {"tcpSocket": {"port": "http"}},
}


def content_hash(obj: Mapping[str, Any]) -> str:
    """Hash of an object's content, the renderer version included. Pure."""
    raw = json.dumps([RENDERER, obj], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def revision_of(spec: ModelDeploymentSpec) -> str:
    """The content hash of a spec's *revision*: what a rollout changes in the pods (the
    primary and fallback models) and the renderer version. Replicas, placement, scaling
    and traffic are not part of it. Pure."""
    content = {
        "model": spec.model.model_dump(mode="json", by_alias=True),
        "fallback": (spec.fallback.model.model_dump(mode="json", by_alias=True)
                     if spec.fallback is not None else None),
    }
    return content_hash(content)


def _stamped(obj: dict[str, Any], installation: str = "") -> dict[str, Any]:
    """``obj`` with its content hash, then its installation's label (outside the hash)."""
    meta = obj["metadata"]
    meta.setdefault("annotations", {})[HASH] = content_hash(obj)
    if installation:
        meta.setdefault("labels", {})[INSTALLATION] = installation
    return obj


def workload_name(name: str, role: Role, zone: str) -> str:
    """Name of the Deployment (and its PDB) of one role in one zone. Pure."""
    return f"{name}-{zone}" if role == "primary" else f"{name}-{FALLBACK}-{zone}"


def service_name(name: str, role: Role, cluster: str) -> str:
    """Name of the Service a gateway reaches a cluster's replicas through. Pure."""
    return f"{name}-{cluster}" if role == "primary" else f"{name}-{FALLBACK}"


def rendered_names(name: str, spec: ModelDeploymentSpec) -> list[str]:
    """Every member object name a ModelDeployment may render, whatever its replicas, as
    ``<cluster>/<Kind>/<name>``: a Deployment and a PDB per placed zone and role, a Service
    per role and cluster. Two deployments of one namespace collide where they share one
    (see :func:`collisions`). Pure."""
    roles: list[Role] = ["primary", "fallback"] if spec.fallback is not None else ["primary"]
    out: list[str] = []
    for p in spec.placement:
        for role in roles:
            for zone in p.zones:
                workload = workload_name(name, role, zone)
                out += [f"{p.cluster}/Deployment/{workload}",
                        f"{p.cluster}/PodDisruptionBudget/{workload}"]
            out.append(f"{p.cluster}/Service/{service_name(name, role, p.cluster)}")
    return out


Key = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""


def collisions(rendered: Mapping[Key, Iterable[str]],
               created: Mapping[Key, str] | None = None) -> dict[Key, str]:
    """ModelDeployments that must be held because their member objects would take names
    another one of the same namespace renders (``llama`` with a fallback and
    ``llama-fallback`` both render ``llama-fallback-<zone>``), or that render one name
    twice themselves. Returns each loser with a message naming the other deployment, the
    object and the fix. Pure.

    ``rendered`` maps each deployment to its object names (:func:`rendered_names`). The
    winner is the deployment created first (``created``: RFC 3339 creation times, which
    sort by time; one without a time counts as newest), then the one whose name sorts
    first: a new deployment never takes over the objects of one that already runs. A
    deployment that loses to any earlier one loses, even if that one lost too.
    """
    times = created or {}
    order = sorted(rendered, key=lambda k: (times.get(k) or "~", k))
    owners: dict[tuple[str, str], Key] = {}
    out: dict[Key, str] = {}
    for key in order:
        names = list(rendered[key])
        twice = sorted(n for n, count in Counter(names).items() if count > 1)
        if twice:
            cluster, kind, obj = twice[0].split("/", 2)
            out[key] = (f"two of its own member objects would both be {kind} {obj} in "
                        f"cluster {cluster}; rename the zone that starts with "
                        "'fallback-' or drop the fallback")
        for name in names:
            other = owners.get((key[0], name))
            if other is not None and other != key and key not in out:
                cluster, kind, obj = name.split("/", 2)
                out[key] = (f"its {kind} {obj} in cluster {cluster} would take the name of an "
                            f"object of ModelDeployment {other[1]} in the same namespace, "
                            "which holds it; rename this ModelDeployment so that no name of "
                            "its objects (<name>-<zone>, <name>-fallback-<zone>, "
                            "<name>-<cluster>, <name>-fallback) is one of the other's")
            owners.setdefault((key[0], name), key)
    return out


def labels(name: str, *, role: Role | None = None, zone: str | None = None,
           cluster: str | None = None) -> dict[str, str]:
    """The labels tying a member object to its ModelDeployment. Pure."""
    out = {MANAGED_BY: OPERATOR, DEPLOYMENT: name}
    if role:
        out[ROLE] = role
    if zone:
        out[ZONE] = zone
    if cluster:
        out[CLUSTER] = cluster
    return out


def _resources(model: ModelSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    if model.resources.cpu is not None:
        requests["cpu"] = str(model.resources.cpu)
    if model.resources.memory is not None:
        requests["memory"] = str(model.resources.memory)
    out: dict[str, Any] = {"requests": requests}
    if model.resources.gpus:
        requests[GPU] = str(model.resources.gpus)
        out["limits"] = {GPU: str(model.resources.gpus)}
    return out


_SHARED = 4096
"""Distinct shared parts remembered for sharing (:func:`_pod_spec`, :func:`_namespace`,
...): model servers in zones, or namespaces, of a large fleet. Beyond it the least recent
are forgotten and rendered again as new objects, which costs memory, never correctness."""

_STRATEGY: dict[str, Any] = {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def _server(model: ModelSpec) -> str:
    """What of a model its pod spec is rendered from (all but the name clients route by,
    which only labels the pods), as JSON: the key of :func:`_pod_spec`. Pure."""
    return model.model_dump_json(by_alias=True, exclude={"name"})


@functools.lru_cache(maxsize=_SHARED)
def _pod_spec(server: str, zone: str, priority_class_name: str | None) -> dict[str, Any]:
    """The pod spec of a model server (:func:`_server`) in one zone, one object for every
    Deployment that runs that server there: rendered objects are never changed (see
    :func:`member_objects`). Pure."""
    model = ModelSpec.model_validate({**json.loads(server), "name": "server"})
    args = list(model.args)
    args += [a for a in METRICS_ARGS.get(model.runtime, ()) if a not in args]
    container: dict[str, Any] = {
        "name": "model",
        "image": model.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": model.port, "protocol": "TCP"}],
        "resources": _resources(model),
        "readinessProbe": {**_PROBES[model.runtime], "periodSeconds": 5,
                           "failureThreshold": 3},
    }
    if model.env:
        container["env"] = [{"name": e.name, "value": e.value} for e in model.env]
    pod_spec: dict[str, Any] = {
        "nodeSelector": {ZONE_LABEL: zone},
        "containers": [container],
        "terminationGracePeriodSeconds": 30,
    }
    if priority_class_name:
        pod_spec["priorityClassName"] = priority_class_name
    return pod_spec


def _deployment(name: str, namespace: str, cluster: str, role: Role, zone: str,
                model: ModelSpec, replicas: int, tier: ServingTierSpec, revision: str,
                installation: str) -> dict[str, Any]:
    selector = labels(name, role=role, zone=zone)
    pod_labels = {**selector, CLUSTER: cluster, "serving.twinhull.io/model": model.name,
                  REVISION: revision}
    pod_spec = _pod_spec(_server(model), zone, tier.priority_class_name)
    return _stamped({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload_name(name, role, zone), "namespace": namespace,
                     "labels": {**selector, CLUSTER: cluster},
                     "annotations": {REVISION: revision}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": _STRATEGY,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }, installation)


def _pdb(name: str, namespace: str, cluster: str, role: Role, zone: str,
         tier: ServingTierSpec, installation: str) -> dict[str, Any]:
    selector = labels(name, role=role, zone=zone)
    return _stamped({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": workload_name(name, role, zone), "namespace": namespace,
                     "labels": {**selector, CLUSTER: cluster}},
        "spec": {"maxUnavailable": tier.disruption_budget.max_unavailable,
                 "selector": {"matchLabels": selector}},
    }, installation)


@functools.lru_cache(maxsize=_SHARED)
def _service_ports(port: int) -> list[dict[str, Any]]:
    return [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]


def _service(name: str, namespace: str, cluster: str, role: Role, port: int,
             installation: str) -> dict[str, Any]:
    return _stamped({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(name, role, cluster), "namespace": namespace,
                     "labels": labels(name, role=role, cluster=cluster)},
        "spec": {"selector": labels(name, role=role), "ports": _service_ports(port)},
    }, installation)


def priority_class(tier_name: str, tier: ServingTierSpec, installation: str = ""
                   ) -> dict[str, Any] | None:
    """The PriorityClass the tier's pods use, created in each member, labelled with
    ``installation`` if given. Pure."""
    if not tier.priority_class_name:
        return None
    return _stamped({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": tier.priority_class_name,
                     "labels": {MANAGED_BY: OPERATOR, "serving.twinhull.io/tier": tier_name}},
        "value": tier.priority,
        "globalDefault": False,
        "description": f"twinhull tier {tier_name} (availability {tier.availability_target}%)",
    }, installation)


@functools.lru_cache(maxsize=_SHARED)
def _namespace(namespace: str, installation: str) -> dict[str, Any]:
    """The Namespace object, one for every ModelDeployment of the namespace. Pure."""
    return _stamped({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {MANAGED_BY: OPERATOR}},
    }, installation)


def member_objects(name: str, namespace: str, cluster: str, spec: ModelDeploymentSpec,
                   tier: ServingTierSpec, replicas: Mapping[Slot, int],
                   installation: str = "") -> list[dict[str, Any]]:
    """Every object of one ModelDeployment in one member cluster, namespace first,
    labelled with ``installation`` if given. Pure.

    The objects share their unchanging parts (the Namespace, pod specs, ports) with
    other ModelDeployments' objects: they must never be changed, only read or copied."""
    objects: list[dict[str, Any]] = [_namespace(namespace, installation)]
    revision = revision_of(spec)
    roles: list[tuple[Role, ModelSpec]] = [("primary", spec.model)]
    if spec.fallback is not None:
        roles.append(("fallback", spec.fallback.model))
    for role, model in roles:
        for (c, r, zone), count in sorted(replicas.items()):
            if c != cluster or r != role:
                continue
            objects.append(_deployment(name, namespace, cluster, role, zone, model, count, tier,
                                       revision, installation))
            objects.append(_pdb(name, namespace, cluster, role, zone, tier, installation))
        objects.append(_service(name, namespace, cluster, role, model.port, installation))
    return objects


def http_route(name: str, namespace: str, uid: str | None, spec: ModelDeploymentSpec,
               weights: Mapping[str, int], *, gateway: tuple[str, str]) -> dict[str, Any]:
    """The hub's HTTPRoute: one weighted backend per cluster and one for the fallback.

    Backends are Multi-Cluster Services ``ServiceImport``s (``<name>-<cluster>`` and
    ``<name>-fallback``, exported from the members' Services of the same names), which
    multi-cluster gateways (GKE, Istio, Cilium) route to. Pure.
    """
    backends = [
        {"group": "multicluster.x-k8s.io", "kind": "ServiceImport",
         "name": service_name(name, "primary", p.cluster), "port": spec.model.port,
         "weight": weights.get(p.cluster, 0)}
        for p in spec.placement
    ]
    if spec.fallback is not None:
        backends.append({"group": "multicluster.x-k8s.io", "kind": "ServiceImport",
                         "name": service_name(name, "fallback", ""),
                         "port": spec.fallback.model.port, "weight": weights.get(FALLBACK, 0)})
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": labels(name)}
    if uid:
        metadata["ownerReferences"] = [{
            "apiVersion": "serving.twinhull.io/v1alpha1", "kind": "ModelDeployment",
            "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    return _stamped({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "namespace": gateway[0], "name": gateway[1]}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"},
                             "headers": [{"type": "Exact", "name": "x-model",
                                          "value": spec.model.name}]}],
                "backendRefs": backends,
            }],
        },
    })

"""How the model servers twinhull renders are scraped: the relabeling that turns a pod's
labels into the labels twinhull's queries group by, as a plain Prometheus scrape job
(``twinhull scrape-config``) and as a prometheus-operator ``PodMonitor`` (the
``podMonitor`` of charts/twinhull-member). One definition, :data:`TARGET_LABELS`, feeds
both. Pure.

No serving runtime labels its series with a deployment, a zone or a cluster (vLLM sets
``model_name`` and ``engine``, SGLang ``model_name`` and ranks, TGI nothing): those come
from the pod twinhull rendered, whose labels say which ModelDeployment, cluster, zone,
role and revision it serves. The scrape keeps the pods twinhull manages, on their
container port named ``http`` (where vLLM, TGI and SGLang serve ``/metrics``), and copies:

========================================  =======================
pod label / metadata                      series label
========================================  =======================
namespace                                 ``namespace``
``serving.twinhull.io/deployment``        ``twinhull_deployment``
``serving.twinhull.io/cluster``           ``cluster``
``serving.twinhull.io/zone``              ``zone``
``serving.twinhull.io/role``              ``role`` (primary, fallback)
``serving.twinhull.io/revision``          ``revision``
pod name                                  ``pod``
========================================  =======================

``cluster`` is twinhull's name of the member (its ServingCluster), so the series match the
operator's plan whatever the Prometheus calls itself. A per-member Prometheus still sets
``external_labels: {cluster: <name>}`` for its other series: an external label is only
added where the series has none, so it never overrides these.
"""

from __future__ import annotations

import re
from typing import Any

from twinhull.plan.render import CLUSTER, DEPLOYMENT, MANAGED_BY, OPERATOR, REVISION, ROLE, ZONE

JOB = "twinhull-model-servers"
"""The scrape job's name; the global view federates ``{job="twinhull-model-servers"}``."""
PORT_NAME = "http"
"""The container port the renderer names, where the runtimes serve ``/metrics``."""
METRICS_PATH = "/metrics"

TARGET_LABELS: tuple[tuple[str, str], ...] = (
    ("namespace", "__meta_kubernetes_namespace"),
    ("twinhull_deployment", DEPLOYMENT),
    ("cluster", CLUSTER),
    ("zone", ZONE),
    ("role", ROLE),
    ("revision", REVISION),
    ("pod", "__meta_kubernetes_pod_name"),
)
"""(series label, pod label or discovery meta label) pairs."""


def meta_label(pod_label: str) -> str:
    """The service discovery meta label of a pod label (``__meta_kubernetes_pod_label_``
    and the name with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``).
    Pure."""
    if pod_label.startswith("__meta_"):
        return pod_label
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def relabelings(*, snake_case: bool = False) -> list[dict[str, Any]]:
    """The relabel rules, in Prometheus' spelling (``source_labels``) or in
    prometheus-operator's (``sourceLabels``, ``snake_case=False``). Pure."""

    def rule(**fields: Any) -> dict[str, Any]:
        if snake_case:
            return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v
                    for k, v in fields.items()}
        return fields

    rules = [
        rule(sourceLabels=[meta_label(MANAGED_BY)], regex=OPERATOR, action="keep"),
        rule(sourceLabels=["__meta_kubernetes_pod_container_port_name"], regex=PORT_NAME,
             action="keep"),
        rule(sourceLabels=["__meta_kubernetes_pod_phase"], regex="Pending|Succeeded|Failed",
             action="drop"),
    ]
    rules += [rule(sourceLabels=[meta_label(source)], targetLabel=target, action="replace")
              for target, source in TARGET_LABELS]
    return rules


def scrape_job(*, interval: str = "15s", kubeconfig_file: str | None = None,
               namespaces: list[str] | None = None) -> dict[str, Any]:
    """A Prometheus ``scrape_configs`` entry discovering the pods of the cluster Prometheus
    runs in (or the one ``kubeconfig_file`` names) through ``kubernetes_sd_configs``.
    Pure."""
    discovery: dict[str, Any] = {"role": "pod"}
    if kubeconfig_file:
        discovery["kubeconfig_file"] = kubeconfig_file
    if namespaces:
        discovery["namespaces"] = {"names": list(namespaces)}
    return {
        "job_name": JOB,
        "scrape_interval": interval,
        "metrics_path": METRICS_PATH,
        "kubernetes_sd_configs": [discovery],
        "relabel_configs": relabelings(snake_case=True),
    }


OPERATOR_JOB = "twinhull-operator"
OPERATOR_PORT_NAME = "metrics"


def operator_job(*, namespace: str = "twinhull-system", interval: str = "30s"
                 ) -> dict[str, Any]:
    """A plain Prometheus job scraping the operator's own metrics (the hub's Prometheus:
    the one the alerting rules run in): its pods' port ``metrics`` in its namespace, with
    ``honor_labels`` so that the series keep the ModelDeployment's ``namespace`` and the
    member's ``cluster`` (:mod:`.names`). Pure."""
    return {
        "job_name": OPERATOR_JOB,
        "scrape_interval": interval,
        "honor_labels": True,
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": OPERATOR_PORT_NAME, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
             "regex": "twinhull", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "instance"},
        ],
    }


def federation_job(targets: list[str], *, interval: str = "15s", name: str = "federate"
                   ) -> dict[str, Any]:
    """A scrape job of a global Prometheus pulling the model servers' series from the
    per-member Prometheus servers at ``targets`` (``host:port``), keeping their labels.
    Pure."""
    return {
        "job_name": name,
        "scrape_interval": interval,
        "honor_labels": True,
        "metrics_path": "/federate",
        "params": {"match[]": [f'{{job="{JOB}"}}']},
        "static_configs": [{"targets": list(targets)}],
    }


def pod_monitor(*, name: str = "twinhull-model-servers", namespace: str = "monitoring",
                interval: str = "15s") -> dict[str, Any]:
    """The same scrape as a prometheus-operator ``PodMonitor`` (monitoring.coreos.com/v1)
    selecting twinhull's pods in every namespace. Pure."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchLabels": {MANAGED_BY: OPERATOR}},
            "podMetricsEndpoints": [{
                "port": PORT_NAME,
                "path": METRICS_PATH,
                "interval": interval,
                # prometheus-operator names the job <namespace>/<name>; the global view
                # federates by the plain job's name.
                "relabelings": [*relabelings(),
                                {"targetLabel": "job", "replacement": JOB, "action": "replace"}],
            }],
        },
    }

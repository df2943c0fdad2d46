"""The operator's own metrics: every name of twinhull.metrics.names is exported with its
labels, counters start at 0, state comes from memory at each scrape, and an odd object
never breaks the scrape. No cluster, no server: the registry is rendered directly."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twinhull.handlers.counters import Telemetry
from twinhull.handlers.telemetry import _State
from twinhull.metrics import names as n
from twinhull.plan.fleet import ClusterView, Decision

T = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
BODY = {
    "metadata": {"namespace": "ai", "name": "ide", "creationTimestamp": "2026-11-01T00:00:00Z"},
    "spec": {"slaTier": "critical"},
    "status": {
        "traffic": {"east": 100, "west": 0, "fallback": 0},
        "clusters": [{"name": "east", "zones": {"east-a": {"desired": 2, "ready": 1}},
                      "fallbackZones": {"east-a": {"desired": 1, "ready": 1}}}],
        "conditions": [{"type": "FailedOver", "status": "True"},
                       {"type": "not a type", "status": "True"}],
        "scaling": {"replicas": 4},
        "lastPassedDrillTime": "2026-11-20T03:00:00Z",
    },
}


def scrape(telemetry: Telemetry, deployments=None, leading=True) -> dict[str, list]:
    rt = SimpleNamespace(beats={"fleet": T}, views={"east": ClusterView("east", "Down", {}, 32)},
                         members={"east": SimpleNamespace(observed=dict.fromkeys("abc"))},
                         deployments=deployments if deployments is not None else
                         {("ai", "ide"): BODY}, telemetry=telemetry)
    telemetry.registry.register(_State(rt, "replica-0", lambda: leading))  # type: ignore[arg-type]
    text = generate_latest(telemetry.registry).decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples, **labels) -> float:
    return next(v for lab, v in samples if all(lab.get(k) == x for k, x in labels.items()))


def test_every_name_is_exported_with_its_labels():
    t = Telemetry()
    t.start_loop("fleet")
    t.deployment("ai", "ide")
    t.iteration("fleet", True, 0.2)
    t.decided("ai", "ide", Decision("x", "Failover", "west is down", {}))
    got = scrape(t)
    for metric in n.ALL:
        name = metric.name + ("_count" if metric.kind == "histogram" else "")
        if metric is n.CLUSTER_PROBE_DURATION_SECONDS:
            continue  # no probe observed in this test
        assert name in got, f"{metric.name} is not exported"
        labels = set(got[name][0][0]) - {"le"}
        assert labels == set(metric.labels), (metric.name, labels)


def test_state_is_read_from_memory():
    got = scrape(Telemetry())
    assert value(got["twinhull_traffic_weight"], cluster="east") == 100
    assert value(got["twinhull_replicas"], zone="east-a", role="primary", state="ready") == 1
    assert value(got["twinhull_cluster_phase"], cluster="east", phase="Down") == 1
    assert value(got["twinhull_cluster_phase"], cluster="east", phase="Healthy") == 0
    assert value(got["twinhull_member_objects"], cluster="east") == 3
    assert value(got["twinhull_deployment_condition"], type="FailedOver", status="True") == 1
    assert not any(lab["type"] == "not a type" for lab, _ in
                   got["twinhull_deployment_condition"])
    assert value(got["twinhull_deployment_info"], tier="critical") == 1
    assert value(got["twinhull_drill_last_passed_timestamp_seconds"]) == \
        datetime(2026, 11, 20, 3, tzinfo=UTC).timestamp()
    assert value(got["twinhull_loop_last_beat_timestamp_seconds"], loop="fleet") == \
        T.timestamp()
    assert value(got["twinhull_leader"], identity="replica-0") == 1


def test_counters_start_at_zero_and_count_rollbacks_by_reason():
    t = Telemetry()
    t.start_loop("fleet")
    t.deployment("ai", "ide")
    got = scrape(t)
    assert value(got["twinhull_reconcile_total"], loop="fleet", result="error") == 0
    assert value(got["twinhull_rollbacks_total"], reason="LatencyExceeded") == 0
    t.decided("ai", "ide", Decision("y", "Rollback", "r-2 is Bad", {"reason": "ErrorRateExceeded"}))
    text = generate_latest(t.registry).decode()
    assert ('twinhull_rollbacks_total{namespace="ai",reason="ErrorRateExceeded",'
            'twinhull_deployment="ide"} 1.0') in text
    assert 'twinhull_decisions_total{kind="Rollback",reason="ErrorRateExceeded"} 1.0' in text


def test_a_standby_says_so_and_an_odd_object_never_breaks_the_scrape():
    odd = {("ai", "bad"): {"metadata": "nonsense", "status": {"traffic": {"east": "x"},
                                                              "clusters": [7]}},
           ("ai", "ide"): BODY}
    got = scrape(Telemetry(), deployments=odd, leading=False)
    assert value(got["twinhull_leader"], identity="replica-0") == 0
    assert value(got["twinhull_traffic_weight"], twinhull_deployment="ide", cluster="east") == 100

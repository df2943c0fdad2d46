"""A hostile or careless tenant next to a healthy deployment, with the real operator on the
lab: malformed annotations, broken custom queries, garbage written into status, colliding
names, and ServingClusters whose kubeconfig Secrets are malformed or run a command. The
healthy deployment fails over and back exactly as in test_failover; each hostile object
reports its own condition; no credential reaches a log line, an Event or a status."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from fleet import (
    apply,
    clusters_healthy,
    deployment_manifest,
    kubectl,
    namespace_manifest,
    status,
    wait_for,
)
from hostile import HOSTILE_NS, SECRETS, TOKEN, colliding, objects
from test_failover import NS, _fail_over_and_back, converged, weights

pytestmark = pytest.mark.e2e

def _ready(name: str, lab: Any) -> dict[str, Any]:
    for c in status(lab, HOSTILE_NS, name).get("conditions") or []:
        if c["type"] == "Ready":
            return dict(c)
    return {}


def _condition(lab: Any, namespace: str, name: str, kind: str) -> dict[str, Any]:
    for c in status(lab, namespace, name).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


@pytest.fixture
def hostile(lab, operator) -> Iterator[None]:
    """The hostile corpus applied next to the healthy deployment; removed afterwards."""
    apply(lab, *objects())
    time.sleep(1.5)  # hx is older than hx-fallback
    apply(lab, colliding())
    # nonsense that passes the status schema, written by someone with the status
    # subresource: a failback step past the policy, times that are not times, weights
    # summing to 207 with a cluster that is not placed, a rollout of a missing snapshot
    wait_for(lambda: status(lab, HOSTILE_NS, "deep-json").get("traffic"), timeout=60,
             what="deep-json planned")
    kubectl(lab, "hub", "patch", "modeldeployment", "deep-json", "-n", HOSTILE_NS,
            "--subresource=status", "--type=merge", "-p", json.dumps(
                {"status": {"failover": {"east": {"state": "FailingBack", "step": 99,
                                                  "since": "not-a-time"}},
                            "traffic": {"east": 100, "west": 100, "ghost": 7},
                            "scaling": {"replicas": 100000,
                                        "history": [{"time": "garbage", "replicas": 5}]},
                            "rollout": {"target": "nope", "mode": "Rollback",
                                        "since": "yesterday"}}}))
    try:
        yield
    finally:
        kubectl(lab, "hub", "delete", "modeldeployments", "--all", "-n", HOSTILE_NS,
                "--wait=true", "--timeout=90s", check=False)
        for name in SECRETS:
            kubectl(lab, "hub", "delete", "servingcluster", f"hostile-{name}",
                    "--ignore-not-found", "--wait=true", "--timeout=30s", check=False)
            kubectl(lab, "hub", "delete", "secret", f"hostile-{name}", "-n",
                    "twinhull-system", "--ignore-not-found", check=False)
        wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


def test_a_healthy_deployment_fails_over_and_back_next_to_hostile_objects(lab, operator,
                                                                          hostile):
    name = f"calm-{int(time.time() * 1000) % 100000}"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS))
    try:
        wait_for(lambda: converged(lab, name, {"east": 1, "west": 1}), timeout=90,
                 what=f"{name} converged")
        wait_for(lambda: weights(lab, name) == {"east": 50, "west": 50, "fallback": 0},
                 timeout=30, what="50/50 weights")
        _fail_over_and_back(lab, name, ("kill", "west"), ("revive", "west"))
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=60s", check=False)

    # each hostile object reports its own problem, naming the field and the fix
    for md in ("deep-json", "list-to", "bad-approve"):
        ready = wait_for(lambda m=md: (r := _ready(m, lab)).get("reason") == "InvalidAnnotation"
                         and r, timeout=30, what=f"{md} InvalidAnnotation")
        assert ready["status"] == "False" and "serving.twinhull.io/" in ready["message"]
    for md in ("scalar-query", "string-query", "broken-query"):
        metrics = wait_for(lambda m=md: (c := _condition(lab, HOSTILE_NS, m,
                                                         "MetricsAvailable"))
                           .get("status") == "False" and c, timeout=30,
                           what=f"{md} MetricsAvailable=False")
        assert "query" in metrics["message"], metrics
    collision = wait_for(lambda: (r := _ready("hx-fallback", lab)).get("reason")
                         == "NameCollision" and r, timeout=30, what="hx-fallback collides")
    assert "hx" in collision["message"]
    assert _ready("hx", lab).get("reason") != "NameCollision"
    # the garbage written into status was replaced by the operator's own
    s = wait_for(lambda: (st := status(lab, HOSTILE_NS, "deep-json"))
                 and "ghost" not in st["traffic"] and st, timeout=30, what="traffic replaced")
    assert sum(s["traffic"].values()) == 100, s["traffic"]
    for name in SECRETS:
        got = yaml.safe_load(kubectl(lab, "hub", "get", "servingcluster", f"hostile-{name}",
                                     "-o", "yaml"))
        conditions = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        assert conditions.get("CredentialsValid", {}).get("status") == "False", got
        assert conditions["Ready"]["status"] == "False"
    # the operator ran no command from a Secret
    import os
    assert not os.path.exists("/tmp/twinhull-pwned")


def test_no_credential_reaches_a_log_an_event_or_a_status(lab, operator, hostile):
    """Greps the operator's whole log so far, every Event and every twinhull status in the
    hub for the hostile token, the member Secrets' keys and the Prometheus password."""
    wait_for(lambda: _ready("deep-json", lab).get("reason") == "InvalidAnnotation",
             timeout=30, what="the hostile corpus seen")
    time.sleep(6)  # a few probe rounds of the hostile clusters
    secrets = [TOKEN, operator.prometheus_password]
    for member in ("east", "west"):
        got = yaml.safe_load(kubectl(lab, "hub", "get", "secret", f"{member}-kubeconfig",
                                     "-n", "twinhull-system", "-o", "yaml"))
        config = yaml.safe_load(base64.b64decode(got["data"]["kubeconfig"]))
        for user in config.get("users") or []:
            for field in ("client-key-data", "token", "password"):
                value = (user.get("user") or {}).get(field)
                if value:
                    secrets.append(value[:48])
                    if field == "client-key-data":  # the PEM body, as it would be printed
                        pem = base64.b64decode(value).decode().splitlines()
                        secrets += [line for line in pem[1:3] if len(line) > 20]
    places = {
        "operator log": operator.logs(),
        "events": kubectl(lab, "hub", "get", "events", "-A", "-o", "yaml"),
        "status": kubectl(lab, "hub", "get", "modeldeployments,servingclusters,modelsnapshots",
                          "-A", "-o", "yaml"),
    }
    hits = [(where, s[:12]) for where, text in places.items() for s in secrets if s in text]
    assert hits == [], f"credentials found: {hits}"
    assert "Credentials" in places["status"] or "InvalidKubeconfig" in places["status"]

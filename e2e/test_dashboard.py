"""The generated Grafana dashboard against the lab's real global Prometheus (the view
Grafana's data source would point at): every panel and annotation query, with the
dashboard's variables resolved as Grafana sends them, is accepted by /api/v1/query, and
the panels that read the runtimes' own series show the simulated load of a small
ModelDeployment, close to the simulator's own count."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleet import (
    apply,
    clusters_healthy,
    deployment_manifest,
    kubectl,
    namespace_manifest,
    wait_for,
)
from twinhull.metrics import names
from twinhull.metrics.dashboard import dashboard, panels, resolve
from twinhull.metrics.presets import PRESETS
from twinhull.policy import load_file

pytestmark = pytest.mark.e2e

NS = "e2e-dashboard"
E2E = Path(__file__).resolve().parent
WINDOW = "30s"
"""What Grafana's $__rate_interval stands for here (the lab scrapes every 2 s)."""
TOKENS_PER_SECOND = 3000
OPERATOR_PANELS = ("Traffic split", "Replicas per cluster and zone", "Cluster health",
                   "Loop freshness", "Leader")
"""Panels on the operator's state, which has series as soon as the operator is scraped."""


def query(lab, expr: str) -> dict[str, Any]:
    """Prometheus' answer to an instant query (its JSON body, an error's included)."""
    request = urllib.request.Request(
        f"{lab.prometheus_url}/api/v1/query",
        data=urllib.parse.urlencode({"query": expr}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as err:  # 400/422: a query Prometheus refuses
        body = json.load(err)
    return body


def series(lab, expr: str) -> list[dict[str, Any]]:
    """The series an accepted instant query returns (none for a refused one)."""
    body = query(lab, expr)
    return list(body["data"]["result"]) if body.get("status") == "success" else []


def places(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, where, expr) of every panel target and annotation query."""
    out = [(p["title"], f"panel {p['title']!r} target {t['refId']}", t["expr"])
           for p in panels(board) for t in p.get("targets") or []]
    out += [(a["name"], f"annotation {a['name']!r}", a["expr"])
            for a in board["annotations"]["list"]]
    return out


def test_every_query_is_accepted_and_the_runtime_panels_show_the_load(lab, operator,
                                                                     simulator):
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")
    name = "db-chat"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS, gpus=0))
    board = dashboard(load_file(E2E / "tiers-fast.yaml"))  # the e2e operator's tiers
    values = {"namespace": NS, "deployment": name}  # tier: "All"
    everything = [(title, where, resolve(expr, values, WINDOW))
                  for title, where, expr in places(board)]
    runtime_names = {f'__name__="{s.name}"' for p in PRESETS.values()
                     for s in (p.prompt_tokens, p.generation_tokens)}
    on_runtimes = [(where, expr) for _, where, expr in everything
                   if any(n in expr for n in runtime_names)]
    assert on_runtimes, "no panel reads the runtimes' series"
    try:
        simulator([{"at": 0, "deployment": f"{NS}/{name}",
                    "tokensPerSecond": TOKENS_PER_SECOND}], 300)
        for where, expr in on_runtimes:
            wait_for(lambda expr=expr: series(lab, expr), timeout=150,
                     what=f"{where} returning the simulated deployment's series")

        refused = []
        for _, where, expr in everything:
            body = query(lab, expr)
            if body.get("status") != "success":
                refused.append(f"{where}: {body.get('errorType')}: {body.get('error')}\n"
                               f"  {expr}")
        assert not refused, "Prometheus refused:\n" + "\n".join(refused)

        # the demand panel reads what the simulator served (its own count, not the pages)
        sel = f'{{namespace="{NS}", twinhull_deployment="{name}"}}'
        truth = (f"sum by (namespace, twinhull_deployment) ("
                 f"rate(twinhull_sim_prompt_tokens_total{sel}[{WINDOW}]) + "
                 f"rate(twinhull_sim_generation_tokens_total{sel}[{WINDOW}]))")
        demand = next(expr for where, expr in on_runtimes if "'Demand and capacity'" in where)

        def agrees() -> str | None:
            read, sim = series(lab, demand), series(lab, truth)
            if len(read) != 1 or len(sim) != 1:
                return None
            ratio = float(read[0]["value"][1]) / max(float(sim[0]["value"][1]), 1e-9)
            assert read[0]["metric"] == {"namespace": NS, "twinhull_deployment": name}
            return f"{ratio:.3f}" if 0.75 <= ratio <= 1.25 else None
        wait_for(agrees, timeout=60, what="the demand panel within 25 % of the simulator")

        # with the operator's own metrics scraped, its state panels have series too
        if series(lab, names.LEADER.name):
            for title, where, expr in everything:
                if title in OPERATOR_PANELS:
                    wait_for(lambda expr=expr: series(lab, expr), timeout=60,
                             what=f"{where} returning series from the operator's metrics")
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)

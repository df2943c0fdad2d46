"""The lab mode of e2e/bench/scaling: one compressed peak period replayed with the real
operator, the lab's Prometheus and e2e/loadsim, next to the offline model of the same run.

The five examples are applied with scaling ``Enforce`` (as offline). The operator runs
with the e2e tiers (e2e/tiers-fast.yaml: 20 s stabilization, so a compressed day has room
for scale-downs), ``--metrics-interval 2 --rate-window 10s``. loadsim replays the apps'
generated traces from ``--start`` for ``--hours``, ``--compress`` times faster (the rates
are real, the day passes faster). Every 2 s the bench reads each deployment's primary
replicas from its status (GPU-seconds, reversals); at the end, loadsim's counters give
requests, within-target and dropped requests.

The model of the same run: the same trace points, requests made the way loadsim makes
them (evenly spaced, sizes from the app's distribution), the same tiers and time
constants (a decision every 2 s on 10 s rates, a replica Ready 2 s after it is asked
for), through e2e/dataplane.py's model and the operator's planner. Differences the model
does not have: loadsim keeps one queue per zone (the model one per deployment), the lab's
GPU capacity (32 per cluster) and tier arbitration, and real scheduling delays.

GPU-hours are of the replayed period: lab seconds x ``--compress``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import yaml
from harness import E2E, GROUP, VERSION, api, clusters_healthy, lab_env, operator, wait
from kubernetes import client
from scaling_policies import Twinhull
from scaling_sim import Measures, measures_from_counters, reversals, simulate

from dataplane import Feed, ServerModel
from twinhull.api.deployment import ModelDeploymentSpec, Scaling
from twinhull.policy import load_file
from workload import deployments, load_apps, replay_points, token_sizes

TICK = 2.0
RATE_WINDOW = 10.0
READY_AFTER = 2.0
"""Seconds from a replica asked for to Ready in the lab (KWOK's stages)."""
TIERS = E2E / "tiers-fast.yaml"


def manifests(examples: Path) -> list[dict[str, Any]]:
    """The examples' namespace and ModelDeployments, scaling Enforce everywhere."""
    out: list[dict[str, Any]] = [yaml.safe_load((examples / "00-namespace.yaml").read_text())]
    for md in deployments(examples).values():
        md = json.loads(json.dumps(md))
        scaling = md["spec"].setdefault("scaling", {})
        scaling["mode"] = "Enforce"
        out.append(md)
    return out


def arrivals_of(points: list[dict[str, Any]], deployment: str, size: Any, end: float
                ) -> list[tuple[float, float]]:
    """Requests of one deployment as loadsim makes them from the trace points. Pure apart
    from drawing sizes."""
    mine = [(float(p["at"]), float(p["tokensPerSecond"])) for p in points
            if p["deployment"] == deployment]
    feed, out, t, k = Feed(size), [], 0.0, 0
    while t < end:
        while k + 1 < len(mine) and mine[k + 1][0] <= t:
            k += 1
        rate = mine[k][1] if mine and mine[k][0] <= t else 0.0
        out += feed.arrivals(t, 1.0, rate)
        t += 1.0
    return out


def counters(port: int) -> dict[tuple[str, str], dict[str, float]]:
    """loadsim's counters per deployment: requests (every one arrived), within, dropped."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[tuple[str, str], dict[str, float]] = {}
    names = {"twinhull_sim_requests_total": "requests",
             "twinhull_sim_dropped_requests_total": "dropped",
             "twinhull_sim_requests_within_target_total": "within"}
    for name, labels, value in re.findall(r'^([\w:]+)\{([^}]*)\} (\S+)$', text, re.M):
        key = names.get(name)
        if key is None:
            continue
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        entry = out.setdefault((fields["namespace"], fields["twinhull_deployment"]), {})
        entry[key] = entry.get(key, 0.0) + float(value)
    return out


def run_lab(args: argparse.Namespace) -> int:
    env = lab_env()
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    objects = client.CustomObjectsApi(hub)
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]
    docs = manifests(args.examples)
    specs = {f"{d['metadata']['namespace']}/{d['metadata']['name']}":
             ModelDeploymentSpec.model_validate(d["spec"]) for d in docs[1:]}
    points = replay_points(args.apps, args.examples, day=0, start=args.start,
                           hours=args.hours, compress=args.compress, seed=args.seed,
                           load_factor=args.load_factor)
    length = max(float(p["at"]) for p in points)
    trace = Path(tempfile.mkstemp(prefix="twinhull-scaling-", suffix=".yaml")[1])
    trace.write_text(yaml.safe_dump(points))
    model = ServerModel(replica_tokens=args.replica_tokens or 3000.0,
                        concurrency=args.concurrency,
                        prefill_tokens_per_second=args.prefill_tokens, timeout=args.timeout)
    print(f"e2e/bench/scaling --lab: {len(specs)} apps, Monday {args.start} for "
          f"{args.hours:g} h compressed x{args.compress:g} ({length:.0f} s), volumes "
          f"x{args.load_factor:g}, {model.replica_tokens:g} tokens/s a replica", flush=True)
    samples: dict[str, list[int]] = {k: [] for k in specs}
    gpu_seconds = dict.fromkeys(specs, 0.0)
    extra = ["--prometheus", env["TWINHULL_PROMETHEUS_URL"], "--metrics-interval", str(TICK),
             "--rate-window", f"{RATE_WINDOW:g}s", "--prewarm-period", "0"]
    with operator(env, policy=TIERS, extra=extra):
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(docs), text=True, check=True,
                       capture_output=True)
        try:
            wait(lambda: clusters_healthy(hub), 120, "every cluster Healthy")
            sim = subprocess.Popen(
                [sys.executable, str(E2E / "loadsim"), "--apps", str(args.apps), "--examples",
                 str(args.examples), "--start", args.start, "--hours", str(args.hours),
                 "--compress", str(args.compress), "--seed", str(args.seed), "--load-factor",
                 str(args.load_factor), "--replica-tokens", str(model.replica_tokens),
                 "--concurrency", str(model.concurrency), "--prefill-tokens",
                 str(model.prefill_tokens_per_second), "--timeout", str(model.timeout),
                 "--tail", "60"],
                env={**env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                assert sim.stdout is not None
                port = int(re.search(r"127\.0\.0\.1:(\d+)", sim.stdout.readline()).group(1))  # type: ignore[union-attr]
                start = time.monotonic()
                seen: dict[tuple[str, str], dict[str, float]] = {}
                while sim.poll() is None and time.monotonic() - start < length:
                    for key in specs:
                        ns, name = key.split("/")
                        md = cast(dict[str, Any], objects.get_namespaced_custom_object(
                            GROUP, VERSION, ns, "modeldeployments", name))
                        total = sum(z["desired"] for c in (md.get("status") or {}).get(
                            "clusters") or [] for z in c["zones"].values())
                        samples[key].append(total)
                        gpu_seconds[key] += total * specs[key].model.resources.gpus * TICK
                    seen = counters(port)  # the last reading counts (loadsim runs on)
                    time.sleep(TICK)
            finally:
                sim.terminate()
                sim.wait(timeout=10)
        finally:
            subprocess.run([*kubectl, "delete", "modeldeployments", "--all", "-n",
                            docs[0]["metadata"]["name"], "--wait=true", "--timeout=90s"],
                           capture_output=True)
    lab_total, model_total = Measures(), Measures()
    print(f"{'app':18} {'run':8} {'requests':>9} {'within%':>8} {'GPU-h':>8} {'dropped':>8} "
          f"{'revers.':>7}")
    apps = {a.name: a for a in load_apps(args.apps)}
    tiers = load_file(TIERS)
    for key, spec in specs.items():
        got = seen.get(tuple(key.split("/")), {})  # type: ignore[arg-type]
        lab = measures_from_counters({}, got, gpu_hours=gpu_seconds[key] * args.compress / 3600,
                                     reversals=reversals(samples[key]))
        modelled = offline(key, spec, points, length, model, apps, tiers, args)
        lab_total, model_total = lab_total + lab, model_total + modelled
        for label, m in (("lab", lab), ("model", modelled)):
            print(f"{key.split('/')[1]:18} {label:8} {m.requests:9d} {m.within_target:8.3f} "
                  f"{m.gpu_hours:8.1f} {m.dropped:8d} {m.reversals:7d}")
    for label, m in (("lab", lab_total), ("model", model_total)):
        print(f"{'all':18} {label:8} {m.requests:9d} {m.within_target:8.3f} "
              f"{m.gpu_hours:8.1f} {m.dropped:8d} {m.reversals:7d}")
    print(" ".join(f"{p}_within_target={m.within_target:.3f} {p}_gpu_hours={m.gpu_hours:.1f} "
                   f"{p}_dropped={m.dropped} {p}_reversals={m.reversals}"
                   for p, m in (("lab", lab_total), ("model", model_total))))
    return 0


def offline(key: str, spec: ModelDeploymentSpec, points: list[dict[str, Any]], length: float,
            model: ServerModel, apps: dict[str, Any], tiers: Any, args: argparse.Namespace
            ) -> Measures:
    """The model of one app's lab run."""
    import random

    app = apps[key.split("/")[1]]
    dist = token_sizes(app)
    rng = random.Random(f"{args.seed}:{key}")
    arrivals = arrivals_of(points, key, lambda: dist.sample(rng), length)
    scaling = (spec.scaling or Scaling()).model_copy(update={"mode": "Enforce",
                                                             "pre_warm": False})
    zones = sum(len(p.zones) for p in spec.placement)
    tier = tiers.resolve(spec.sla_tier)
    low, high = scaling.min_replicas_per_zone * zones, scaling.max_replicas_per_zone * zones
    m = simulate(arrivals, Twinhull(scaling, tier, zones), model=model,
                 target_seconds=float(tier.verification.max_latency_p95_seconds),
                 gpus=spec.model.resources.gpus, low=low, high=high,
                 initial=sum(n for p in spec.placement for n in p.zones.values()) or low,
                 cold_start=READY_AFTER, measure_from=0.0, end=length, tick=TICK,
                 rate_window=RATE_WINDOW, forecast_window=RATE_WINDOW)
    m.gpu_hours *= args.compress
    return m

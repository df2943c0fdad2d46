"""``e2e/bench/scaling --sweep``: seeds x volumes x cold starts, every policy at the
examples' targets and at multiples of them, intervals over the seeds, the matched
comparison at exactly 99.9 % within target, and the cost-SLO curves as a PNG.

Seed ``s`` uses trace variant ``VARIANTS[(s - 1) % 5]`` (base, shifted, holiday, burst,
growth) and measures one weekday that changes with the seed, after a week of history.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from scaling_engine import Measures
from scaling_run import (
    BASELINES,
    SLO,
    VARIANT_NAMES,
    cases,
    cost_at_slo,
    mean_ci,
    measures_dict,
    measures_of,
    run,
)
from servermodel import VllmParams

SWEPT = ("static", "hpa", "hpa_tokens", "keda", "twinhull", "twinhull_noprewarm")
"""Policies whose per-replica target is swept (the oracle searches its own; twinhull_live
runs at the examples' targets only)."""
Row = dict[str, Any]


def trace_of(seed: int) -> tuple[str, int]:
    """The trace variant and the first measured day of a seed (a weekday). Pure."""
    return (VARIANT_NAMES[(seed - 1) % len(VARIANT_NAMES)],
            7 + ((seed - 1) // len(VARIANT_NAMES) + 3 * seed) % 5)


def task(args: dict[str, Any], volume: float, seed: int) -> list[Row]:
    """Every cold start, policy and factor for one seed at one volume."""
    trace, first_day = trace_of(seed)
    apps = cases(apps=Path(args["apps"]), examples=Path(args["examples"]),
                 tiers=Path(args["tiers"]) if args["tiers"] else None, seed=seed,
                 load_factor=volume, days=args["days"], first_day=first_day, trace=trace,
                 overrides=args["set"])
    params = VllmParams()
    rows: list[Row] = []
    for cold in args["colds"]:
        runs = [(p, f) for p in SWEPT for f in args["factors"] if p in args["policies"]]
        runs += [(p, 1.0) for p in ("twinhull_live", "oracle") if p in args["policies"]]
        for policy, factor in runs:
            for case in apps:
                m, _ = run(case, policy, params=params, cold_start=cold, factor=factor,
                           respect_modes=args["respect_modes"])
                rows.append({"volume": volume, "cold": cold, "seed": seed, "trace": trace,
                             "policy": policy, "factor": factor, "app": case.name,
                             **measures_dict(m)})
    if args["rows_dir"]:  # a checkpoint: --report-from reads whatever finished
        out = Path(args["rows_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"x{volume:g}-seed{seed}.json").write_text(json.dumps(rows))
    return rows


def sweep(args: argparse.Namespace) -> int:
    if args.report_from:
        rows: list[Row] = [r for f in sorted(Path(args.report_from).glob("*.json"))
                           for r in json.loads(f.read_text())]
        report(rows, volumes=sorted({r["volume"] for r in rows}),
               colds=sorted({r["cold"] for r in rows}),
               factors=sorted({r["factor"] for r in rows}), plot=args.plot)
        print(f"(from {len({(r['volume'], r['seed']) for r in rows})} seed x volume runs "
              f"in {args.report_from}; seeds {sorted({r['seed'] for r in rows})})")
        return 0
    volumes = [float(v) for v in args.volumes.split(",")]
    colds = [float(c) for c in args.cold_starts.split(",")]
    factors = sorted({1.0, *(float(f) for f in args.factors.split(","))})
    shared = {"apps": str(args.apps), "examples": str(args.examples),
              "tiers": str(args.tiers) if args.tiers else None, "days": args.days,
              "set": list(args.set), "colds": colds, "factors": factors,
              "respect_modes": args.respect_modes,
              "policies": [p for p in args.policies.split(",") if p],
              "rows_dir": str(args.rows_dir) if args.rows_dir else None}
    seeds = list(range(args.first_seed, args.seeds + 1))
    jobs = [(v, s) for s in seeds for v in (volumes if s % 2 else volumes[::-1])]
    print(f"e2e/bench/scaling --sweep: {len(seeds)} seeds x volumes {volumes} x cold starts "
          f"{colds}, {args.days} day(s) measured each, factors {factors}, trace variants "
          f"cycling {', '.join(VARIANT_NAMES)}; modes "
          + ("respected" if args.respect_modes else "Suggest/Off run as Enforce"), flush=True)
    began = time.monotonic()
    rows = []
    workers = max(0, min(args.workers, 1))  # the machine is shared: one extra at most
    with ProcessPoolExecutor(max_workers=workers) if workers else _Inline() as pool:
        futures: list[Future[list[Row]]] = []
        mine: list[tuple[float, int]] = []
        for i, (v, s) in enumerate(jobs):
            if workers and i % 2:
                futures.append(pool.submit(task, shared, v, s))
            else:
                mine.append((v, s))
        for v, s in mine:  # this process takes half the work
            rows += task(shared, v, s)
            print(f"  seed {s} x{v:g} done ({time.monotonic() - began:.0f}s)", flush=True)
        for fut in futures:
            rows += fut.result()
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(rows))
    report(rows, volumes=volumes, colds=colds, factors=factors, plot=args.plot)
    print(f"({time.monotonic() - began:.0f}s wall)")
    return 0


class _Inline:
    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, *a: Any) -> Future[list[Row]]:
        raise AssertionError("no workers")


def _sum(rows: list[Row]) -> Measures:
    total = Measures()
    for r in rows:
        total = total + measures_of({k: r[k] for k in (
            "requests", "within", "dropped", "gpu_hours", "floor_hours", "reversals",
            "changes", "ttft_late", "tpot_late")})
    return total


def at_slo_per_seed(rows: list[Row], policy: str, volume: float, cold: float
                    ) -> dict[int, float]:
    """Per seed: the GPU-hours above floor at exactly the SLO, each app's target tuned on
    its own curve (interpolated), summed over the apps; inf if an app never reaches it."""
    by: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["policy"] == policy and r["volume"] == volume and r["cold"] == cold:
            m = _sum([r])
            by[(r["seed"], r["app"])].append((m.above_floor, m.within_target))
    out: dict[int, float] = defaultdict(float)
    for (seed, _), points in by.items():
        out[seed] += cost_at_slo(points)
    return dict(out)


def report(rows: list[Row], *, volumes: list[float], colds: list[float], factors: list[float],
           plot: Path | None) -> None:
    """Print the matrix, the matched comparison and the summary line; write the plot."""
    policies = [p for p in (*SWEPT, "twinhull_live", "oracle")
                if any(r["policy"] == p for r in rows)]
    summary: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    print("\nAt the examples' targets (factor 1): mean over seeds, 95 % CI; min app = the "
          "worst app's within target in any seed")
    print(f"{'volume':>6} {'cold':>5} {'policy':18} {'within %':>17} {'min app %':>9} "
          f"{'GPU-h >floor':>17} {'GPU-h':>8} {'dropped':>7} {'revers.':>7}")
    for v in volumes:
        for c in colds:
            for p in policies:
                sel = [r for r in rows if r["volume"] == v and r["cold"] == c
                       and r["policy"] == p and r["factor"] == 1.0]
                seeds = sorted({r["seed"] for r in sel})
                per = [_sum([r for r in sel if r["seed"] == s]) for s in seeds]
                if not per:
                    continue
                w, wci = mean_ci([m.within_target for m in per])
                a, aci = mean_ci([m.above_floor for m in per])
                g, _ = mean_ci([m.gpu_hours for m in per])
                d, _ = mean_ci([float(m.dropped) for m in per])
                rv, _ = mean_ci([float(m.reversals) for m in per])
                worst = min(_sum([r]).within_target for r in sel)
                print(f"{v:6g} {c:5g} {p:18} {w:9.3f} ± {wci:5.3f} {worst:9.3f} "
                      f"{a:9.1f} ± {aci:5.1f} {g:8.1f} {d:7.1f} {rv:7.1f}")
                s = summary[p]
                s["within"] += [m.within_target for m in per]
                s["above"] += [m.above_floor for m in per]
                s["gpu"] += [m.gpu_hours for m in per]
                s["dropped"] += [float(m.dropped) for m in per]
                s["reversals"] += [float(m.reversals) for m in per]
                s["worst"].append(worst)
    print("\nMatched: GPU-hours above floor at exactly 99.9 % within target (each app's "
          "target tuned on its own curve, summed; mean over the seeds where every app "
          "reaches it, 95 % CI; n = such seeds)")
    best_baseline: dict[tuple[float, float], str] = {}
    for v in volumes:
        for c in colds:
            costs = {p: at_slo_per_seed(rows, p, v, c) for p in policies}
            line = []
            for p in policies:
                finite = [x for x in costs[p].values() if math.isfinite(x)]
                m, ci = mean_ci(finite)
                line.append(f"{p} {m:.1f}±{ci:.1f} (n={len(finite)})")
                summary[p]["at_slo"] += finite
            print(f"  x{v:g} cold {c:g}s: " + "; ".join(line))
            tuned = {p: mean_ci([x for x in costs[p].values() if math.isfinite(x)])[0]
                     for p in BASELINES if costs.get(p)}
            reachable = {p: x for p, x in tuned.items() if math.isfinite(x)
                         and all(math.isfinite(y) for y in costs[p].values())}
            if reachable and "twinhull" in costs:
                best = min(reachable, key=lambda p: reachable[p])
                best_baseline[(v, c)] = best
                diff = [costs["twinhull"][s] - costs[best][s] for s in costs["twinhull"]
                        if s in costs[best] and math.isfinite(costs["twinhull"][s])
                        and math.isfinite(costs[best][s])]
                m, ci = mean_ci(diff)
                rel = m / reachable[best] * 100 if reachable[best] else math.nan
                print(f"    twinhull - {best} (best tuned baseline reaching it in every "
                      f"seed): {m:+.1f} ± {ci:.1f} GPU-h above floor ({rel:+.0f} %)")
                summary["twinhull"]["diff"] += diff
    paired(rows, volumes=volumes, colds=colds)
    if plot is not None:
        _plot(rows, volumes=volumes, colds=colds, policies=policies, path=plot)
        print(f"cost-SLO curves: {plot}")
    parts = []
    for p in policies:
        s = summary[p]
        w, wci = mean_ci(s["within"])
        a, aci = mean_ci(s["above"])
        z, zci = mean_ci(s["at_slo"])
        parts.append(
            f"{p}_within_target={w:.3f} {p}_within_ci95={wci:.3f} "
            f"{p}_gpu_hours={mean_ci(s['gpu'])[0]:.1f} {p}_gpu_hours_above_floor={a:.1f} "
            f"{p}_gpu_hours_above_floor_ci95={aci:.1f} "
            f"{p}_dropped={mean_ci(s['dropped'])[0]:.1f} "
            f"{p}_reversals={mean_ci(s['reversals'])[0]:.1f} "
            f"{p}_min_app_within={min(s['worst']):.3f} "
            f"{p}_gpu_hours_above_floor_at_slo={z:.1f} "
            f"{p}_gpu_hours_above_floor_at_slo_ci95={zci:.1f}")
    d, dci = mean_ci(summary["twinhull"]["diff"])
    parts.append(f"twinhull_minus_best_baseline_at_slo={d:.1f} "
                 f"twinhull_minus_best_baseline_at_slo_ci95={dci:.1f}")
    print(" ".join(parts))


def paired(rows: list[Row], *, volumes: list[float], colds: list[float]) -> None:
    """Per configuration and baseline: twinhull's cost at 99.9 % minus the baseline's,
    summed per seed over the apps where both reach it (mean, 95 % CI over the seeds), and
    the app x seed cases only one of them reaches; then per app, the seeds where each
    policy reaches 99.9 % and its mean cost there."""
    pts: dict[tuple[float, float, str, int, str], list[tuple[float, float]]] = (
        defaultdict(list))
    for r in rows:
        one = _sum([r])
        pts[(r["volume"], r["cold"], r["policy"], r["seed"], r["app"])].append(
            (one.above_floor, one.within_target))
    seeds = sorted({r["seed"] for r in rows})
    apps = sorted({r["app"] for r in rows})
    policies = [p for p in (*SWEPT, "oracle") if any(r["policy"] == p for r in rows)]
    print("\nPaired at 99.9 %: twinhull minus each tuned baseline, GPU-hours above floor a "
          "day summed over the apps where both reach it (mean over seeds, 95 % CI), and the "
          "app x seed cases only one reaches")
    for v in volumes:
        for c in colds:
            for b in [p for p in BASELINES if p in policies and p != "static"]:
                diffs, both, only_t, only_b = [], 0, 0, 0
                for seed in seeds:
                    d = 0.0
                    for a in apps:
                        t = cost_at_slo(pts[(v, c, "twinhull", seed, a)])
                        k = cost_at_slo(pts[(v, c, b, seed, a)])
                        if math.isfinite(t) and math.isfinite(k):
                            d, both = d + t - k, both + 1
                        elif math.isfinite(t):
                            only_t += 1
                        elif math.isfinite(k):
                            only_b += 1
                    diffs.append(d)
                m, ci = mean_ci(diffs)
                print(f"  x{v:g} cold {c:g}s twinhull - {b}: {m:+.1f} ± {ci:.1f} over {both} "
                      f"cases; only twinhull reaches {only_t}, only {b} {only_b}")
    print("\nPer app: seeds reaching 99.9 % / seeds, mean GPU-hours above floor at 99.9 % "
          "where reached")
    for v in volumes:
        for c in colds:
            print(f"  x{v:g} cold {c:g}s")
            for a in apps:
                parts = []
                for p in policies:
                    cs = [cost_at_slo(pts[(v, c, p, seed, a)]) for seed in seeds
                          if pts.get((v, c, p, seed, a))]
                    fin = [x for x in cs if math.isfinite(x)]
                    parts.append(f"{p} {len(fin)}/{len(cs)} {mean_ci(fin)[0]:.1f}")
                print(f"    {a:18} " + "; ".join(parts))


def _plot(rows: list[Row], *, volumes: list[float], colds: list[float],
          policies: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(volumes), len(colds), figsize=(5 * len(colds),
                                                                4 * len(volumes)),
                             squeeze=False)
    for i, v in enumerate(volumes):
        for j, c in enumerate(colds):
            ax = axes[i][j]
            for p in policies:
                pts = []
                for f in sorted({r["factor"] for r in rows if r["policy"] == p}):
                    sel = [r for r in rows if r["volume"] == v and r["cold"] == c
                           and r["policy"] == p and r["factor"] == f]
                    seeds = sorted({r["seed"] for r in sel})
                    per = [_sum([r for r in sel if r["seed"] == s]) for s in seeds]
                    if per:
                        pts.append((mean_ci([m.above_floor for m in per])[0],
                                    mean_ci([m.within_target for m in per])[0]))
                if pts:
                    pts.sort()
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                            label=p, linestyle="" if len(pts) == 1 else "-")
            ax.axhline(SLO, color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"volumes x{v:g}, cold start {c:g} s")
            ax.set_xlabel("GPU-hours above the min-replica floor (mean)")
            ax.set_ylabel("within target, % (mean over seeds)")
            ax.set_ylim(99.0, 100.02)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("e2e/bench/scaling --sweep: cost-SLO curves (points: per-replica target x "
                 "factor)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)

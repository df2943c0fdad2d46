"""The data-plane simulator's model (e2e/dataplane.py) and the scaling benchmark's policies
and engine (e2e/bench/scaling_*.py). Pure, no cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "e2e" / "bench"), str(ROOT / "e2e")]

from scaling_policies import (  # noqa: E402
    Hpa,
    Observation,
    Static,
    Twinhull,
    hpa,
    keda,
    oracle_schedule,
    static_replicas,
)
from scaling_sim import measures_from_counters, peak_rate, reversals, simulate  # noqa: E402

from dataplane import CellPods, Feed, Pod, PodInfo, Pool, ServerModel, exposition  # noqa: E402
from twinhull.api.deployment import Scaling  # noqa: E402

MODEL = ServerModel(replica_tokens=1000.0, concurrency=2, prefill_tokens_per_second=10000.0,
                    prompt_share=0.8, timeout=60.0)


def test_a_request_alone_gets_its_prefill_as_time_to_first_token() -> None:
    pool = Pool(MODEL, 3.0, ready=1)
    pool.arrive(0.0, 5000.0)
    pool.advance(10.0)
    assert (pool.requests, pool.within, pool.success) == (1, 1, 1)
    assert pool.ttft_sum == pytest.approx(5000 * 0.8 / 10000)
    assert pool.served == pytest.approx(5000.0)


def test_requests_share_a_replica_then_queue_and_wait_longer() -> None:
    pool = Pool(MODEL, 3.0, ready=1)
    for _ in range(3):  # two run (the concurrency), the third waits
        pool.arrive(0.0, 1000.0)
    assert pool.waiting == 1 and len(pool.running) == 2
    pool.advance(1.0)  # both at 500 tokens/s: half done
    assert pool.waiting == 1
    pool.advance(2.0)  # both done at 2 s; the third starts after a 2 s wait
    assert pool.waiting == 0 and pool.success == 2
    assert pool.ttft_count == 3
    assert pool.ttft_sum == pytest.approx(3 * 0.08 + 2.0)
    pool.arrive(2.0, 1000.0)  # the fourth shares the replica with the third
    pool.arrive(2.0, 1000.0)  # the fifth waits until both are done at 4 s
    assert pool.waiting == 1
    pool.advance(100.0)
    assert pool.ttft_sum == pytest.approx(5 * 0.08 + 2.0 + 2.0)
    assert pool.within == 5 and pool.success == 5  # 2.08 s is within 3 s


def test_a_long_wait_is_a_drop_and_no_replica_drops_at_once() -> None:
    pool = Pool(ServerModel(replica_tokens=100.0, concurrency=1, timeout=60.0), 3.0, ready=1)
    pool.arrive(0.0, 100_000.0)  # 1,000 s of work
    pool.arrive(1.0, 100.0)
    pool.advance(70.0)
    assert pool.dropped == 1 and pool.waiting == 0
    empty = Pool(MODEL, 3.0, ready=0)
    empty.arrive(0.0, 100.0)
    assert empty.dropped == 1


def test_ttft_grows_with_the_queue_and_misses_the_target() -> None:
    pool = Pool(ServerModel(replica_tokens=1000.0, concurrency=1), 3.0, ready=1)
    for i in range(5):
        pool.arrive(0.0 + i * 0.001, 2000.0)  # 2 s each, one at a time
    pool.advance(100.0)
    assert pool.within == 2  # waits 0 and 2 s; then 4, 6, 8 s
    assert pool.requests == 5


def test_new_replicas_take_queued_requests_and_counting_starts_at_count_from() -> None:
    pool = Pool(ServerModel(replica_tokens=1000.0, concurrency=1), 3.0, ready=1,
                count_from=5.0)
    pool.arrive(0.0, 10_000.0)
    pool.arrive(6.0, 1000.0)
    assert pool.waiting == 1
    pool.set_ready(7.0, 2)
    assert pool.waiting == 0
    pool.advance(100.0)
    assert (pool.requests, pool.within) == (1, 1)


def test_an_errors_image_fails_every_request() -> None:
    pool = Pool(MODEL, 3.0, ready=1, errors=True)
    pool.arrive(0.0, 100.0)
    pool.advance(5.0)
    assert (pool.failure, pool.success, pool.within) == (1, 0, 0)


def test_a_feed_spaces_requests_evenly() -> None:
    feed = Feed(lambda: 4000.0)
    arrivals = feed.arrivals(0.0, 10.0, 4000.0) + feed.arrivals(10.0, 10.0, 2000.0)
    assert [round(t, 3) for t, _ in arrivals[:3]] == [1.0, 2.0, 3.0]
    assert len(arrivals) == 15


def test_the_simulators_own_counts_use_its_own_names_only() -> None:
    pool = Pool(MODEL, 3.0, ready=1)
    pool.arrive(0.0, 1000.0)
    pool.advance(5.0)
    text = exposition({("ns", "d", "east", "east-a", "primary"): pool})
    for metric in ("twinhull_sim_prompt_tokens_total", "twinhull_sim_dropped_requests_total",
                   "twinhull_sim_requests_within_target_total",
                   "twinhull_sim_request_failure_total", "twinhull_sim_waiting",
                   'twinhull_sim_time_to_first_token_seconds_bucket{namespace="ns",'
                   'twinhull_deployment="d",cluster="east",zone="east-a",role="primary",'
                   'le="0.1"} 1'):
        assert metric in text
    assert "vllm:" not in text, "runtime series come from the pods, not from here"


def _cell(*errors: bool, runtime: str = "vllm") -> tuple[CellPods, list[Pod]]:
    import threading

    lock = threading.Lock()
    pods = [Pod(PodInfo(f"u{i}", f"p{i}", f"127.11.1.{i + 2}", 8000, runtime, "m", bad), lock,
                MODEL.prompt_share) for i, bad in enumerate(errors)]
    cell = CellPods()
    cell.pods = pods
    return cell, pods


def _page_value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def test_a_cells_requests_are_spread_over_its_pods_and_counted_as_their_runtime_does() -> None:
    cell, pods = _cell(False, False)
    pool = Pool(MODEL, 3.0, ready=2, listener=cell)
    for i in range(10):
        pool.arrive(float(i), 1000.0)
    pool.advance(100.0)
    cell.gauges(pool.waiting)
    pages = [p.exporter.text() for p in pods]
    done = [_page_value(t, 'vllm:request_success_total{engine="0",finished_reason="stop"')
            for t in pages]
    assert done == [5.0, 5.0] and pool.success == 10
    served = sum(_page_value(t, "vllm:generation_tokens_total{") for t in pages)
    assert served == pytest.approx(pool.generation, abs=2), "every token on some pod's page"


def test_a_pod_running_a_failing_image_fails_the_requests_it_takes() -> None:
    cell, pods = _cell(False, True)
    pool = Pool(MODEL, 3.0, ready=2, listener=cell)
    for i in range(10):
        pool.arrive(float(i), 1000.0)
    pool.advance(100.0)
    assert (pool.success, pool.failure) == (5, 5)
    bad = pods[1].exporter.text()
    assert _page_value(bad, 'http_requests_total{handler="/v1/completions",method="POST",'
                            'status="5xx"}') == 5.0


def obs(now: float, current: int, *, rps: float = 0.0, waiting: float = 0.0) -> Observation:
    return Observation(now=now, current=current, ready=current, requests_per_second=rps,
                       tokens_per_second=0.0, waiting=waiting)


def test_hpa_keeps_the_count_within_the_tolerance() -> None:
    policy = hpa(1, 100, target_tokens=1000, mean_tokens=1000)  # 1 request/s a replica
    assert policy.decide(obs(0, 4, rps=4.3)) == 4  # ratio 1.075: within 10 %
    assert policy.decide(obs(15, 4, rps=4.5)) == 5  # ratio 1.125: ceil(4.5)


def test_hpa_scale_up_is_limited_to_4_pods_or_double_per_15_seconds() -> None:
    policy = hpa(1, 100, target_tokens=1000, mean_tokens=1000)
    assert policy.decide(obs(0, 2, rps=50)) == 6  # max(2 + 4, 2 * 2)
    assert policy.decide(obs(15, 6, rps=50)) == 12  # max(6 + 4, 12)
    assert policy.decide(obs(30, 12, rps=50)) == 24
    assert policy.decide(obs(45, 24, rps=50)) == 48
    assert policy.decide(obs(60, 48, rps=50)) == 48  # 50 / 48: within the tolerance
    capped = hpa(1, 10, target_tokens=1000, mean_tokens=1000)
    assert capped.decide(obs(0, 8, rps=50)) == 10


def test_hpa_scale_down_waits_for_the_highest_recommendation_of_300_seconds() -> None:
    policy = hpa(2, 100, target_tokens=1000, mean_tokens=1000)
    assert policy.decide(obs(0, 8, rps=8)) == 8
    for t in range(15, 300, 15):
        assert policy.decide(obs(t, 8, rps=3)) == 8, t
    assert policy.decide(obs(300, 8, rps=3)) == 3  # the 8 at 0 s is 300 s old: out
    assert policy.decide(obs(315, 3, rps=0.1)) == 3  # the 3s of the window hold
    low = hpa(2, 100, target_tokens=1000, mean_tokens=1000)
    low.decide(obs(0, 3, rps=3))
    assert low.decide(obs(300, 3, rps=0)) == 2  # ceil(0) = 0, but never below minReplicas


def test_keda_scales_on_waiting_requests_per_replica() -> None:
    policy = keda(2, 20, target_queue=4)
    assert isinstance(policy, Hpa)
    assert policy.decide(obs(0, 2, waiting=40)) == 6  # ceil(40 / 4) = 10, limited to 2 + 4
    assert policy.decide(obs(15, 6, waiting=40)) == 10
    assert policy.decide(obs(30, 10, waiting=0)) == 10  # down waits for the window


def test_oracle_starts_replicas_a_cold_start_ahead_and_keeps_them_while_needed() -> None:
    demand = [0.0] * 10 + [3000.0 * 15] + [0.0] * 10  # 3 replicas' worth in tick 10
    schedule = oracle_schedule(demand, tick=15, replica_tokens=1000, utilisation=1.0,
                               cold_ticks=2, low=1, high=8, window_ticks=1)
    assert schedule[:8] == [1] * 8
    assert schedule[8:11] == [3, 3, 3]
    assert schedule[11:] == [1] * 10


def test_static_replicas_serve_the_peak_with_headroom_within_bounds() -> None:
    assert static_replicas(10_000, target=2500, headroom_percent=20, low=2, high=16) == 5
    assert static_replicas(100_000, target=2500, headroom_percent=20, low=2, high=8) == 8
    assert static_replicas(0, target=2500, headroom_percent=20, low=2, high=8) == 2


def test_reversals_count_direction_changes() -> None:
    assert reversals([1, 2, 3, 3, 2, 2, 3, 1]) == 3
    assert reversals([4, 4, 4]) == 0
    assert reversals([1, 2, 5, 8]) == 0


def test_peak_rate_is_the_highest_one_minute_rate() -> None:
    arrivals = [(float(t), 100.0) for t in range(0, 600)]  # 100 tokens/s
    arrivals += [(300.0 + t / 10, 100.0) for t in range(600)]  # +1,000/s for 60 s
    assert peak_rate(arrivals, start=0, end=600) == pytest.approx(1100, rel=0.01)


def test_simulate_static_counts_gpu_hours_and_requests() -> None:
    arrivals = [(float(t), 500.0) for t in range(0, 7200, 2)]  # 250 tokens/s
    m = simulate(arrivals, Static(2), model=MODEL, target_seconds=3.0, gpus=4, low=1,
                 high=4, initial=2, cold_start=120, measure_from=3600, end=7200)
    assert m.requests == 1800 and m.within == 1800 and m.dropped == 0
    assert m.gpu_hours == pytest.approx(2 * 4 * 1.0)
    assert m.reversals == 0


def test_simulate_cold_replicas_cost_gpus_before_they_serve() -> None:
    arrivals = [(float(t) / 4, 1000.0) for t in range(0, 4 * 600)]  # 4,000 tokens/s
    m = simulate(arrivals, Static(1), model=MODEL, target_seconds=3.0, gpus=1, low=1,
                 high=8, initial=1, cold_start=120, measure_from=0, end=600)
    assert m.within < m.requests / 2  # one replica for four replicas' demand


def test_twinhull_policy_calls_the_planner_within_bounds() -> None:
    from twinhull.policy import load_file

    tier = load_file().resolve("critical")
    policy = Twinhull(Scaling(target_tokens_per_second_per_replica=2500,
                              min_replicas_per_zone=1, max_replicas_per_zone=3), tier, 4)
    high = Observation(now=0, current=4, ready=4, requests_per_second=0,
                       tokens_per_second=20_000, waiting=0)
    assert policy.decide(high) == 8  # 20,000 x 1.2 / 2,500 = 9.6, limited to 4 + 4
    assert policy.history


def test_lab_measures_from_loadsim_counters() -> None:
    m = measures_from_counters({"requests": 10, "within": 9, "dropped": 0},
                               {"requests": 1010, "within": 1008, "dropped": 1},
                               gpu_hours=3.0, reversals=1)
    assert (m.requests, m.within, m.dropped) == (1000, 999, 1)
    assert m.within_target == pytest.approx(99.9)


def test_the_lab_step_splits_demand_by_weight_and_ready_replicas() -> None:
    from dataplane import World, demand_at, step

    world = World(ready={("ns", "d", "east", "east-a", "primary"): (1, False),
                         ("ns", "d", "east", "east-b", "primary"): (3, False),
                         ("ns", "d", "west", "west-a", "primary"): (2, True)},
                  weights={("ns", "d"): {"east": 50, "west": 50, "fallback": 0}},
                  targets={("ns", "d"): 3.0})
    points = [{"at": 0, "deployment": "ns/d", "tokensPerSecond": 8000},
              {"at": 30, "deployment": "ns/d", "tokensPerSecond": 0}]
    pools: dict = {}
    feeds: dict = {}
    model = ServerModel(replica_tokens=3000.0, concurrency=16, queue_limit=64)
    for t in range(1, 61):
        step(world, pools, feeds, demand_at(points, t - 1), float(t), 1.0, model=model,
             size=lambda _: lambda: 4000.0)
    east_a, east_b, west = (pools[("ns", "d", c, z, "primary")] for c, z in
                            (("east", "east-a"), ("east", "east-b"), ("west", "west-a")))
    assert east_a.served == pytest.approx(30 * 1000, rel=0.15)
    assert east_b.served == pytest.approx(30 * 3000, rel=0.15)
    assert west.failure > 0 and west.success == 0  # an -errors image
    assert east_a.dropped == east_b.dropped == 0
    assert "twinhull_sim_waiting" in exposition(pools)

"""The offline scaling benchmark on the vLLM-like server model (e2e/bench/servermodel.py,
scaling_engine.py, scaling_run.py, traces.py): the model's properties, the trace variants,
the oracle's schedule, and one short run of every policy whose results must hold the
oracle as a lower bound. Pure, no cluster."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "e2e" / "bench"), str(ROOT / "e2e")]

from scaling_policies import floor_schedule, sliding_max  # noqa: E402
from scaling_run import SLO, cases, cost_at_slo, mean_ci, run  # noqa: E402
from servermodel import VllmParams, VllmPool  # noqa: E402
from traces import VARIANTS, variant  # noqa: E402

from workload import DAY, generate, load_apps  # noqa: E402

PARAMS = VllmParams()
APPS = ROOT / "e2e" / "workloads" / "apps.yaml"


def probe_ttft(running: int, *, probe_tokens: float = 20_000.0) -> tuple[float, float]:
    """The TTFT of one request arriving at a replica decoding ``running`` sequences
    (1,200 prompt and 300 generated tokens each, all past their prompt), and the step
    time once it decodes too."""
    pool = VllmPool(PARAMS, 3.0, 1.0, ready=1)
    for _ in range(running):
        pool.arrive(0.0, 1500.0)
    pool.advance(6.0)
    assert pool.prefilling == 0 and pool.running == running
    pool.arrive(6.0, probe_tokens)
    serial = pool.serial
    while serial in pool.info and pool.info[serial][3] == 0.0:
        pool.advance(pool.t + 0.01)
    ttft = pool.info[serial][3] - 6.0
    s, _ = pool.step()
    return ttft, s


def test_ttft_and_time_per_token_grow_with_the_running_batch() -> None:
    results = [probe_ttft(b) for b in (0, 20, 60, 120)]
    ttfts = [t for t, _ in results]
    tpots = [s for _, s in results]
    assert ttfts == sorted(ttfts) and ttfts[-1] > 1.15 * ttfts[0], ttfts
    assert tpots == sorted(tpots) and tpots[-1] > 2 * tpots[0], tpots


def test_a_lone_sequence_decodes_at_tens_not_thousands_of_tokens_per_second() -> None:
    pool = VllmPool(PARAMS, 100.0, 1.0, ready=1)
    pool.arrive(0.0, 5000.0)  # 4,000 prompt, 1,000 generated
    pool.advance(1000.0)
    assert pool.finished == 1
    assert 30 < 1 / pool.tpot_sum < 200  # tokens per second of one sequence


def test_prompt_tokens_cost_less_than_generated_ones() -> None:
    def seconds(prompt_share: float) -> float:
        params = VllmParams(prompt_share=prompt_share)
        pool = VllmPool(params, 100.0, 1.0, ready=1)
        pool.arrive(0.0, 4000.0)
        while pool.running:
            pool.advance(pool.t + 1.0)
        return pool.t
    assert seconds(0.95) * 5 < seconds(0.05)


def test_kv_cache_pressure_queues_requests_before_the_sequence_limit() -> None:
    pool = VllmPool(PARAMS, 3.0, 1.0, ready=1)
    for _ in range(30):
        pool.arrive(0.0, 20_000.0)  # 20k tokens each: 10 fill the 200k cache
    assert pool.running == 10 and pool.waiting == 20
    assert pool.running < PARAMS.max_num_seqs
    pool.set_ready(0.0, 3)
    assert pool.running == 30 and pool.waiting == 0


def test_the_queue_drops_after_the_client_timeout() -> None:
    pool = VllmPool(PARAMS, 3.0, 1.0, ready=1)
    for _ in range(40):
        pool.arrive(0.0, 60_000.0)
    pool.advance(PARAMS.timeout + 1)
    assert pool.dropped > 0 and pool.requests == 40


@pytest.mark.parametrize("name", [v for v in VARIANTS if v != "base"])
def test_every_trace_variant_differs_from_the_base_in_the_measured_days_only(name: str
                                                                             ) -> None:
    app = next(a for a in load_apps(APPS) if a.name == "ide-assistant")
    base = generate(app, 9, seed=3)
    begin, end = 8 * DAY, 9 * DAY  # a Tuesday
    changed = variant(base, name, begin=begin, end=end, seed=3, app=app.name)
    assert [a for a in changed if a[0] < begin] == [a for a in base if a[0] < begin]
    during = [a for a in changed if begin <= a[0] < end]
    assert during != [a for a in base if begin <= a[0] < end]
    assert during == sorted(during)
    if name == "holiday":
        assert len(during) < 0.5 * sum(1 for a in base if begin <= a[0] < end)
    if name in ("burst", "growth"):
        assert len(during) > sum(1 for a in base if begin <= a[0] < end)


def test_floor_schedule_covers_the_need_at_least_cost() -> None:
    needed = [1, 1, 3, 1, 1, 1, 1, 1, 2, 1, 3, 1]
    cold = 2
    schedule = floor_schedule(needed, cold)
    for k, need in enumerate(needed):  # replicas alive cold ticks earlier are Ready now
        assert min(schedule[max(0, k - cold):k + 1]) >= need or k < cold
    # the gap between the needs of 2 at ticks 8 and 10 is shorter than a cold start:
    # bridged; the one from tick 3 to 7 is not
    assert schedule[8:11] == [3, 3, 3] and schedule[3] == 1
    assert sliding_max([1, 3, 2, 0], 2) == [1, 3, 3, 2]


def test_cost_at_the_slo_interpolates_between_the_sweep_points() -> None:
    points = [(10.0, 99.0), (20.0, 99.8), (30.0, 100.0), (40.0, 100.0)]
    assert cost_at_slo(points) == pytest.approx(25.0)
    assert cost_at_slo([(5.0, 99.95)]) == 5.0
    assert math.isinf(cost_at_slo([(5.0, 90.0)]))
    m, ci = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and ci == pytest.approx(4.303 * 1.0 / math.sqrt(3))


def test_one_day_every_policy_and_the_oracle_is_a_lower_bound() -> None:
    apps = cases(apps=APPS, examples=ROOT / "examples", tiers=None, seed=1,
                 load_factor=150.0, days=1, first_day=7)
    assert {c.name for c in apps} >= {"aiops-platform", "ide-assistant", "code-review"}
    names = ("hpa", "hpa_tokens", "keda", "twinhull", "oracle")
    got = {(c.name, p): run(c, p, params=PARAMS, cold_start=300.0)[0] for c in apps
           for p in names}
    for c in apps:
        oracle = got[(c.name, "oracle")]
        assert oracle.within_target >= SLO, c.name
        assert oracle.gpu_hours >= oracle.floor_hours
        for p in names[:-1]:
            m = got[(c.name, p)]
            assert m.requests == oracle.requests, "the same trace for every policy"
            if m.within_target >= SLO:
                assert oracle.above_floor <= m.above_floor + 0.5, (c.name, p)
    floors = {c.name: got[(c.name, "hpa")].floor_hours for c in apps}
    assert all(got[(n, p)].floor_hours == f for n, f in floors.items() for p in names)

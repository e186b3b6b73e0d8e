"""bench/: the pure helpers of the latency, CDNOW and scale jobs, and the inputs (no
timing asserted)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from agents.processor import Processor
from agents.records import RawMessage, key_partition
from bench.common import input_of, retail
from bench.latency import Workload
from bench.live import backlog_at, coverage_latencies, keys_by_partition, percentiles
from bench.scale import purchase_stream
from schemas.decode import Rejected, decode


def test_percentiles_are_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert percentiles(xs) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "p99": 3.0, "max": 3.0}
    assert percentiles([2.0, 1.0], (50,)) == {"p50": 1.0, "max": 2.0}
    assert percentiles([]) == {}


def test_an_event_counts_from_the_first_poll_that_saw_its_offset() -> None:
    sends = {(0, 0): 1.0, (0, 1): 1.1, (0, 2): 1.2, (1, 0): 1.05}
    polls = [(1.5, {0: 0}), (2.0, {0: 1, 1: 0}), (3.0, {0: 1, 1: 0})]
    lat, missing = coverage_latencies(sends, polls)
    assert lat == {(0, 0): 0.5, (0, 1): 2.0 - 1.1, (1, 0): 2.0 - 1.05}
    assert missing == 1  # (0, 2) never seen


def test_polls_out_of_order_and_offsets_skipped_in_one_poll() -> None:
    sends = {(3, o): float(o) for o in range(5)}
    polls = [(10.0, {3: 4}), (5.0, {3: 1})]
    lat, missing = coverage_latencies(sends, polls)
    assert missing == 0
    assert lat[(3, 0)] == 5.0 and lat[(3, 1)] == 4.0 and lat[(3, 4)] == 6.0


def test_backlog_is_what_was_sent_but_not_seen_by_then() -> None:
    sends = {(0, 0): 1.0, (0, 1): 2.0, (0, 2): 3.5, (1, 0): 2.5}
    polls = [(2.2, {0: 0}), (3.0, {0: 1}), (4.0, {0: 2, 1: 0})]
    assert backlog_at(sends, polls, 3.0) == 1  # (1, 0); (0, 2) not sent yet
    assert backlog_at(sends, polls, 3.9) == 2
    assert backlog_at(sends, polls, 4.0) == 0
    assert backlog_at(sends, [], 10.0) == 4


def test_warm_up_keys_cover_every_partition() -> None:
    keys = keys_by_partition(8)
    assert sorted(keys) == list(range(8))
    assert all(key_partition(k, 8) == p for p, k in keys.items())


def test_the_latency_workload_closes_only_open_accounts_and_each_raises_a_decline() -> None:
    wl = Workload(customers=50, close_share=0.1, seed=3)
    events = [wl.event(i) for i in range(200)]
    closed = [e["customer_id"] for e, closes in events if closes]
    assert closed and len(closed) == len(set(closed))
    times = [e["occurred_at"] for e, _ in events]
    assert times == sorted(times)
    assert not any(isinstance(decode(orjson.dumps(e)), Rejected) for e, _ in events)
    # Through the worker's hot path: one decline alert per closed account, nothing else.
    proc, table, offsets = Processor(partitions=4), {}, [0] * 4
    msgs = []
    for e, _ in events:
        k = e["customer_id"].encode()
        p = key_partition(k, 4)
        msgs.append(RawMessage("t", p, offsets[p], k, orjson.dumps(e)))
        offsets[p] += 1
    alerts = []
    for j in range(0, len(msgs), 100):
        r = proc.process(msgs[j : j + 100], table.get, datetime.now(UTC))
        assert r.rejected == 0
        table.update(r.states)
        alerts += [orjson.loads(v) for _, v in r.alerts]
    assert sorted(a["customer_id"] for a in alerts) == sorted(closed)
    assert {a["kind"] for a in alerts} == {"decline"}


def test_no_purchase_after_an_account_is_closed() -> None:
    wl = Workload(customers=20, close_share=0.2, seed=5)
    closed: set[str] = set()
    for i in range(60):
        e, closes = wl.event(i)
        assert e["customer_id"] not in closed
        if closes:
            closed.add(e["customer_id"])


def test_the_scale_stream_gives_every_customer_a_purchase_first() -> None:
    out = list(purchase_stream(customers=10, events=25))
    assert [c for c, _ in out[:10]] == [f"S{i:07d}" for i in range(10)]
    assert len(out) == 25 and {c for c, _ in out} <= {f"S{i:07d}" for i in range(10)}
    assert not any(isinstance(decode(v), Rejected) for _, v in out)


def test_the_retail_mix_is_deterministic_valid_in_time_order_and_mostly_purchases() -> None:
    events = retail(3000, 20, seed=7)
    assert events == retail(3000, 20, seed=7)
    assert events != retail(3000, 20, seed=8)
    assert len(events) == 3000 and len({e["event_id"] for e in events}) == 3000
    assert not any(isinstance(decode(orjson.dumps(e)), Rejected) for e in events)
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    types = [e["type"] for e in events]
    assert 0.85 < types.count("purchase") / len(types) < 0.99
    assert {"call", "complaint", "refund", "survey"} <= set(types)
    # Complaints are followed by id: a closing report comes after its opening one, of
    # the same customer, and most opened complaints are closed.
    opened: dict[object, object] = {}
    closed = 0
    for e in events:
        if e["type"] != "complaint":
            continue
        if e["status"] == "open":
            opened[e["complaint_id"]] = e["customer_id"]
        else:
            assert opened[e["complaint_id"]] == e["customer_id"]
            closed += 1
    assert opened and closed >= len(opened) / 2
    input_of(events, 4, "retail")  # the bench's own validity check


def test_retail_customers_buy_in_rhythms_of_their_own() -> None:
    days: dict[object, list[int]] = {}
    for e in retail(4000, 20, seed=3):
        if e["type"] == "purchase":
            t = datetime.fromisoformat(str(e["occurred_at"]))
            days.setdefault(e["customer_id"], []).append(t.toordinal())
    mean_gaps = sorted((d[-1] - d[0]) / (len(d) - 1) for d in days.values() if len(d) > 5)
    assert len(mean_gaps) >= 15
    assert mean_gaps[-1] > 2 * mean_gaps[0]  # not one rhythm for all


def test_the_bench_times_each_collection_and_restores_cpythons_gc_settings() -> None:
    import gc

    from agents.metrics import GC_THRESHOLD
    from bench.common import gc_pauses, pause_summary, worker_gc

    before = gc.get_threshold()
    with worker_gc(), gc_pauses() as pauses:
        assert gc.get_threshold() == GC_THRESHOLD and gc.get_freeze_count() > 0
        gc.collect()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert len(pauses[2]) >= 1 and all(s >= 0 for s in pauses[2])
    assert pause_summary({0: [], 2: [0.001, 0.003]}) == {
        0: "0 collections",
        2: "2 collections, p50 1.00 ms, p99 3.00 ms, max 3.00 ms, total 4 ms",
    }


def test_the_holdout_ceiling_ranks_a_separating_feature_perfectly_and_noise_at_chance() -> None:
    import numpy as np

    from bench.holdout import cross_validated_auc

    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.7).astype(float)
    ones = np.ones(len(y))
    signal = np.column_stack([ones, y + rng.normal(0, 0.1, len(y))])
    noise = np.column_stack([ones, rng.normal(0, 1, len(y))])
    assert cross_validated_auc(signal, y) > 0.99
    assert abs(cross_validated_auc(noise, y) - 0.5) < 0.05


def test_gc_pauses_are_summarised_by_the_buckets_their_quantiles_fall_under() -> None:
    from bench.latency import gc_summary

    cumulative = [(0.001, 90.0), (0.01, 99.0), (0.05, 99.0), (0.1, 100.0), (float("inf"), 100.0)]
    s = gc_summary(cumulative, 0.4)
    assert (s["collections"], s["p50_le_s"], s["p99_le_s"], s["max_le_s"]) == (
        100,
        0.001,
        0.01,
        0.1,
    )
    assert gc_summary([(0.001, 0.0), (float("inf"), 0.0)], 0.0) == {
        "collections": 0,
        "total_s": 0.0,
    }

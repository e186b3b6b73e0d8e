"""The worker keeps the RFM population sketches of its partitions as batches pass."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from agents.processor import Processor
from agents.records import RawMessage, Stored
from touchstream.datasets import sample_events
from touchstream.domain.scoring import RfmSketches, cutoffs_from, point_of

NOW = datetime(2000, 1, 1, tzinfo=UTC)


def run(
    proc: Processor,
    table: dict[str, bytes],
    events: list[dict],
    offsets: dict[int, int] | None = None,
) -> None:
    """Two partitions (by the customer id's last digit), batches of 97 messages."""

    def scan(p: int):
        return [(k, v) for k, v in table.items() if Stored.partition_of(v) == p]

    offsets = {0: 0, 1: 0} if offsets is None else offsets
    if not events:
        table.update(proc.process([], table.get, NOW, scan, partitions=[0, 1]).states)
    for i in range(0, len(events), 97):
        msgs = []
        for e in events[i : i + 97]:
            p = int(e["customer_id"][-1]) % 2
            msgs.append(RawMessage("t", p, offsets[p], e["customer_id"].encode(), orjson.dumps(e)))
            offsets[p] += 1
        table.update(proc.process(msgs, table.get, NOW, scan).states)


def test_the_sketches_hold_every_buyer_once_whatever_the_batches() -> None:
    events = list(sample_events(customers=40))
    proc, table = Processor(), {}
    run(proc, table, events)
    buyers = [s for s in (Stored.decode(v).state for v in table.values()) if s.purchases]
    assert proc.population().count == len(buyers)
    direct = RfmSketches().apply((None, point_of(s)) for s in buyers)
    assert proc.population().to_record() == direct.to_record()


def test_a_restarted_worker_rebuilds_the_same_sketches_from_the_table() -> None:
    events = list(sample_events(customers=40))
    table: dict[str, bytes] = {}
    offsets = {0: 0, 1: 0}
    run(Processor(), table, events[: len(events) // 2], offsets)
    restarted = Processor()  # a new process: nothing in memory but the table
    run(restarted, table, events[len(events) // 2 :], offsets)
    fresh = Processor()
    run(fresh, table, [])
    assert fresh.population().to_record() == restarted.population().to_record()
    assert cutoffs_from(fresh.population()) == cutoffs_from(restarted.population())


def test_forgetting_a_revoked_partition_drops_its_customers_from_the_population() -> None:
    proc, table = Processor(), {}
    run(proc, table, list(sample_events(customers=40)))
    before = proc.population().count
    proc.forget([0])
    assert 0 < proc.population().count < before


def test_cutoffs_are_quintiles_unless_fixed_thresholds_are_configured() -> None:
    from agents.processor import cutoffs_row_for
    from touchstream.config import Settings

    proc, table = Processor(), {}
    run(proc, table, list(sample_events(customers=40)))
    quintile = cutoffs_row_for(proc.population(), proc.stream_time, Settings())
    fixed = cutoffs_row_for(
        proc.population(),
        proc.stream_time,
        Settings(
            rfm_fixed_recency_days=[365, 180, 90, 30],
            rfm_fixed_frequency=[2, 3, 5, 8],
            rfm_fixed_monetary=[50, 100, 250, 1000],
        ),
    )
    assert quintile is not None and fixed is not None
    assert quintile[1:3] == ("quantile", proc.population().count)
    assert fixed[1] == "fixed" and fixed[7:11] == (2, 3, 5, 8)
    as_of_day = max(proc.stream_time.values()) // 86_400_000
    assert fixed[3:7] == tuple(float(as_of_day - d) for d in (365, 180, 90, 30))
    assert cutoffs_row_for(Processor().population(), {}, Settings()) is None

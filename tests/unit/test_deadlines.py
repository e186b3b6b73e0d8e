"""Silence deadlines in the worker: fired by stream time, rebuilt from the table after a
restart, and ticked by the wall clock in live mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.deadlines import DeadlineIndex
from agents.processor import Processor
from agents.records import RawMessage, Stored

NOW = datetime(2000, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)


def purchase(cid: str, n: int, at: datetime) -> dict:
    return {
        "event_id": f"{cid}-{n}",
        "customer_id": cid,
        "type": "purchase",
        "occurred_at": at.isoformat(),
        "amount": "20",
        "currency": "USD",
    }


class Worker:
    """A Processor over a dict table, one partition, offsets counted."""

    def __init__(
        self,
        table: dict[str, bytes],
        offset: int = 0,
        index_slice: int | None = None,
        index_limit: int | None = None,
    ) -> None:
        self.proc = Processor(index_slice=index_slice, index_limit=index_limit)
        self.table, self.offset = table, offset
        self.alerts: list[dict] = []

    def scan(self, p: int):
        return [(k, v) for k, v in self.table.items() if Stored.partition_of(v) == p]

    def send(self, *events: dict, wall: datetime | None = None) -> None:
        msgs = []
        for e in events:
            msgs.append(RawMessage("t", 0, self.offset, e["customer_id"].encode(), orjson.dumps(e)))
            self.offset += 1
        wall_ms = None if wall is None else int(wall.timestamp() * 1000)
        r = self.proc.process(msgs, self.table.get, NOW, self.scan, wall_ms=wall_ms, partitions=[0])
        self.table.update(r.states)
        self.alerts += [orjson.loads(v) for _, v in r.alerts]

    def stage(self, cid: str) -> str | None:
        return Stored.decode(self.table[cid]).state.stage


def test_another_customers_events_move_stream_time_past_a_silent_customers_deadline() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    w.send(purchase("busy", 1, T0 + 29 * DAY))
    assert w.stage("quiet") == "exploration"  # default gap 30 days: decline after 90
    w.send(purchase("busy", 2, T0 + 91 * DAY))
    assert w.stage("quiet") == "decline"
    assert [(a["customer_id"], a["kind"], a["at"]) for a in w.alerts] == [
        ("quiet", "decline", "2024-03-31T12:00:00Z")
    ]  # dated at the deadline, not at day 91


def test_a_deadline_fires_only_once_stream_time_has_passed_it_by_the_allowed_lateness() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    w.send(purchase("busy", 1, T0 + 90 * DAY + timedelta(minutes=30)))
    assert w.stage("quiet") == "exploration"
    w.send(purchase("busy", 2, T0 + 90 * DAY + timedelta(minutes=61)))
    assert w.stage("quiet") == "decline"


def test_a_restarted_worker_fires_the_deadlines_it_only_knows_from_the_table() -> None:
    first = Worker({})
    first.send(purchase("quiet", 1, T0), purchase("busy", 1, T0 + DAY))
    restarted = Worker(first.table, offset=first.offset)  # nothing in memory but the table
    restarted.send(purchase("busy", 2, T0 + 100 * DAY))
    assert restarted.stage("quiet") == "decline"


def test_a_restart_indexing_slice_by_slice_holds_deadlines_until_whole_then_ends_the_same() -> None:
    first = Worker({})
    first.send(*(purchase(f"q{i:02}", 1, T0 + i * timedelta(hours=1)) for i in range(20)))
    first.send(purchase("busy", 1, T0 + DAY))
    ends = {}
    for index_slice in (None, 3):
        w = Worker(dict(first.table), offset=first.offset, index_slice=index_slice)
        # q00 buys again after its deadline, "new" is new: both change while indexing
        w.send(
            purchase("busy", 2, T0 + 100 * DAY),
            purchase("q00", 2, T0 + 95 * DAY),
            purchase("new", 1, T0 + 100 * DAY),
        )
        if index_slice is not None:
            assert w.proc.building == [0]
            assert w.stage("q05") == "exploration" and w.proc.deadlines_pending() == 0  # held
            whole = []
            while w.proc.building:
                whole += w.proc.build_indexes()
            assert whole == [0]
            assert w.proc.building == [] and w.stage("q05") == "exploration"
        w.send(purchase("busy", 3, T0 + 100 * DAY + timedelta(minutes=1)))
        ends[index_slice] = (
            {cid: Stored.decode(raw).state for cid, raw in w.table.items()},
            sorted((a["customer_id"], a["kind"], a["at"]) for a in w.alerts),
            w.proc.sketches[0].to_record(),
            w.proc.customers_held(),
            w.proc.deadlines_pending(),
        )
    assert ends[3] == ends[None]
    states, alerts, _, held, _ = ends[3]
    assert held == 22 and {s.stage for c, s in states.items() if c.startswith("q")} == {
        "decline",
        "formation",  # q00, back
    }
    declines = [at for c, kind, at in alerts if c.startswith("q") and kind == "decline"]
    assert len(declines) == 20 and "2024-03-31T12:00:00Z" in declines  # q00's at its deadline


@pytest.mark.parametrize("index_slice", [None, 2])
def test_a_bounded_index_holds_only_the_earliest_deadlines_and_still_fires_every_one(
    index_slice: int | None,
) -> None:
    first = Worker({})
    first.send(*(purchase(f"q{i:02}", 1, T0 + i * timedelta(hours=5)) for i in range(20)))
    first.send(purchase("busy", 1, T0 + DAY))
    ends = {}
    for limit in (None, 3):
        w = Worker(dict(first.table), first.offset, index_slice=index_slice, index_limit=limit)
        w.send(purchase("busy", 2, T0 + 30 * DAY))  # no deadline due yet
        while w.proc.building:
            w.proc.build_indexes()
        if limit is not None:
            assert w.proc.deadlines_pending() == 3  # the three earliest, not all 21
        # One batch takes stream time past every quiet customer's deadline (day 90 + 5 h
        # each), q10 buys meanwhile; then, as the worker does, the index is read again
        # (at once, or slice by slice between batches) until it is whole.
        w.send(purchase("busy", 3, T0 + 200 * DAY), purchase("q10", 2, T0 + 150 * DAY))
        while w.proc.building:
            if w.proc.build_indexes():
                w.send()
        ends[limit] = (
            {cid: Stored.decode(raw).state for cid, raw in w.table.items()},
            sorted((a["customer_id"], a["kind"], a["at"]) for a in w.alerts),
        )
    assert ends[3] == ends[None]
    declines = [c for c, kind, _ in ends[3][1] if kind == "decline" and c.startswith("q")]
    assert len(declines) == 20


def test_a_deadline_index_out_of_step_with_the_table_follows_the_stored_state() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0), purchase("busy", 1, T0 + DAY))
    # As if a batch that failed half-way had indexed a deadline the table never got.
    w.proc._deadlines[0].set("quiet", int((T0 + 10 * DAY).timestamp() * 1000))
    w.send(purchase("busy", 2, T0 + 20 * DAY))
    assert w.stage("quiet") == "exploration"  # the stored state's deadline is day 90
    w.send(purchase("busy", 3, T0 + 100 * DAY))
    assert w.stage("quiet") == "decline"


def test_in_live_mode_the_wall_clock_fires_deadlines_on_a_quiet_partition() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    w.send(wall=T0 + 89 * DAY)
    assert w.stage("quiet") == "exploration"
    w.send(wall=T0 + 90 * DAY + timedelta(hours=2))
    assert w.stage("quiet") == "decline"


def test_without_the_wall_clock_a_quiet_partition_waits_for_event_time() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    w.send()  # an empty batch in event-time mode: nothing moves
    assert w.stage("quiet") == "exploration"


def test_the_deadline_index_stays_under_twice_its_customers_however_often_deadlines_move() -> None:
    index = DeadlineIndex()
    for step in range(200):
        for c in range(100):
            index.set(f"C{c}", 1_000 + step * 7 + c)
    assert len(index.latest) == 100
    assert len(index) <= 2 * 100 + 1024


def test_the_deadline_index_hands_out_only_each_customers_latest_deadline_in_time_order() -> None:
    index = DeadlineIndex([(50, "a"), (60, "b")])
    index.set("a", 70)  # moved: 50 is stale
    index.set("c", 40)
    index.set("b", None)  # no deadline any more
    assert index.pop_due(100) == (40, "c")
    assert index.pop_due(100) == (70, "a")
    assert index.pop_due(100) is None
    assert index.latest == {}


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.one_of(st.none(), st.integers(0, 1_000))), max_size=300
    ),
    st.integers(0, 1_000),
)
def test_the_deadline_index_agrees_with_a_plain_dict_of_latest_deadlines(
    moves: list[tuple[int, int | None]], due_by: int
) -> None:
    index, model = DeadlineIndex(), {}
    for c, deadline in moves:
        index.set(f"C{c}", deadline)
        if deadline is None:
            model.pop(f"C{c}", None)
        else:
            model[f"C{c}"] = deadline
    popped = []
    while (due := index.pop_due(due_by)) is not None:
        popped.append(due)
    assert popped == sorted((d, c) for c, d in model.items() if d <= due_by)


# -- closing a period: clock messages and watermarks -----------------------------------


def clock(worker: Worker, until: datetime, value: bytes | None = None) -> None:
    from touchstream.domain.messages import CLOCK_KEY, clock_value

    raw = clock_value(int(until.timestamp() * 1000)) if value is None else value
    r = worker.proc.process(
        [RawMessage("t", 0, worker.offset, CLOCK_KEY, raw)], worker.table.get, NOW, worker.scan
    )
    worker.offset += 1
    worker.table.update(r.states)
    worker.alerts += [orjson.loads(v) for _, v in r.alerts]
    worker.last = r


def test_a_clock_message_fires_every_deadline_up_to_its_time_on_a_quiet_partition() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    clock(w, T0 + 89 * DAY)
    assert w.stage("quiet") == "exploration"
    clock(w, T0 + 90 * DAY)  # exactly the deadline: no lateness to wait for
    assert w.stage("quiet") == "decline"
    assert [(a["kind"], a["at"]) for a in w.alerts] == [("decline", "2024-03-31T12:00:00Z")]
    assert w.last.rows["stream_clock"][0][1] == int((T0 + 90 * DAY).timestamp() * 1000)
    assert w.last.rejected == 0 and w.last.accepted == 0


def test_a_clock_message_never_moves_time_back_and_a_repeat_changes_nothing() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    clock(w, T0 + 200 * DAY)
    before = dict(w.table)
    clock(w, T0 + 10 * DAY)
    clock(w, T0 + 200 * DAY)
    assert w.table == before and w.proc.watermark[0] == int((T0 + 200 * DAY).timestamp() * 1000)


def test_a_malformed_clock_message_is_dead_lettered_with_the_expected_shape() -> None:
    w = Worker({})
    clock(w, T0, value=b'{"clock": "yesterday"}')
    assert w.last.rejected == 1
    reason = orjson.loads(w.last.dead_letters[0][1])["reason"]
    assert reason.startswith("invalid clock message") and '{"clock": "<RFC 3339 time>"}' in reason


def test_a_watermark_for_an_idle_partition_fires_its_deadlines_without_an_event() -> None:
    w = Worker({})
    w.send(purchase("quiet", 1, T0))
    mark = int((T0 + 95 * DAY).timestamp() * 1000)
    r = w.proc.process([], w.table.get, NOW, w.scan, watermarks={0: mark})
    w.table.update(r.states)
    assert w.stage("quiet") == "decline"
    assert r.deadlines_fired == 1

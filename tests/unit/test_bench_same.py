"""bench/same.py and the same-logic table: the peers' per-event step, the equal-work
check against the processor, the ratios (no timing asserted)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from agents.processor import Processor
from agents.records import RawMessage
from bench.__main__ import JobResult, Run, same_logic_rows
from bench.common import input_of, retail
from bench.same import Figures, equal_work, figures, last_values, step
from touchstream.domain.lifecycle import DEFAULT_RULES


def _peer_states(messages, placement) -> dict[str, bytes]:
    table: dict[str, bytes] = {}
    for (k, v), (p, o) in zip(messages, placement, strict=True):
        new = step(table.get, k, v, p, o, DEFAULT_RULES)
        if new is not None:
            table[new[0]] = new[1]
    return table


def _processor_states(messages, placement) -> dict[str, bytes]:
    proc = Processor(DEFAULT_RULES)
    table: dict[str, bytes] = {}
    msgs = [RawMessage("t", p, o, k, v) for (k, v), (p, o) in zip(messages, placement, strict=True)]
    for j in range(0, len(msgs), 500):
        r = proc.process(msgs[j : j + 500], table.get, datetime.now(UTC), lambda p: ())
        table.update(r.states)
    return table


def test_the_per_event_step_leaves_every_customer_as_the_processor_does() -> None:
    inp = input_of(retail(3000, 20), 4, "retail")
    peer = _peer_states(inp.messages, inp.placement)
    check = equal_work(
        figures(_processor_states(inp.messages, inp.placement).values()), figures(peer.values())
    )
    assert check.equal, check.line()
    assert check.got.customers == 20 and check.got.events == 3000
    assert check.line().startswith("equal work")


def test_a_redelivered_offset_or_a_foreign_key_stores_nothing() -> None:
    inp = input_of(retail(50, 3), 1, "retail")
    table = _peer_states(inp.messages, inp.placement)
    (k, v), (p, o) = inp.messages[-1], inp.placement[-1]
    assert step(table.get, k, v, p, o, DEFAULT_RULES) is None
    assert step(table.get, b"someone-else", v, p, o + 1, DEFAULT_RULES) is None
    assert step(table.get, k, b"{not json", p, o + 1, DEFAULT_RULES) is None


def test_a_changelog_keeps_the_last_value_of_each_key_and_forgets_deleted_ones() -> None:
    records = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4"), (b"c", None)]
    assert last_values(records) == [b"3", b"2"]


def test_a_customer_with_other_figures_or_missing_makes_the_work_unequal() -> None:
    one = Figures(2, 1, 1, Decimal("10.00"), Decimal("4.00"))
    expected = {"A": (one, "exploration"), "B": (one, "decline")}
    assert equal_work(expected, dict(expected)).equal
    assert equal_work(expected, dict(expected)).same_stage == 2
    other = {"A": (one._replace(purchases=2), "exploration"), "C": (one, None)}
    check = equal_work(expected, other)
    assert not check.equal
    assert (check.differing, check.missing, check.extra) == (1, 1, 1)
    assert check.expected.net_spend == Decimal("12.00")
    assert "NOT equal" in check.line() and "A:" in check.line()


def test_the_same_logic_table_gives_touchstream_over_each_peer_in_rate_and_cpu() -> None:
    def job(name: str, rate: float, cpu: float) -> JobResult:
        return JobResult(name, [Run(rate, "test", cpu_us_per_event=cpu)])

    results = {
        "raw": job("raw", 100_000, 5),
        "quix-same": job("quix-same", 2_000, 300),
        "faust-same": job("faust-same", 1_000, 600),
        "processor": job("processor", 10_000, 60),
    }
    header, *rows = same_logic_rows(results)
    assert header[2:4] == ["vs quix-same", "vs faust-same"]
    assert rows[0] == ["processor", "10,000", "5.00x", "10.00x", "0.10x", "60", "5.00x", "10.00x"]
    assert [r[0] for r in rows] == ["processor", "quix-same", "faust-same"]


def test_without_a_same_logic_peer_there_is_no_same_logic_table() -> None:
    assert same_logic_rows({"raw": JobResult("raw", [Run(1.0, "test")])}) == []

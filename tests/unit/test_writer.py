"""sinks/errors.py and BatchingWriter: what a failed insert means, how refused rows are
found and set aside, and how a backfill's rows are split by partition. The real sinks'
refusals are in tests/integration/test_sinks.py; here a sink that refuses what a rule
says counts the inserts the writer makes."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest
from chdb._exceptions import ChdbError
from clickhouse_driver import errors as ch_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.base import MAX_PARTITIONS_PER_INSERT, BatchingWriter, Row, Sink, insert_blocks
from sinks.errors import RowsRefused, SinkFatal, SinkTransient, classify, one_line
from sinks.tables import DEAD_LETTERS, EVENTS

AT = datetime(2024, 3, 1, tzinfo=UTC)


def server_error(code: int, message: str) -> ch_errors.ServerException:
    return ch_errors.ServerException(f"DB::Exception: {message}. Stack trace:\n\n0. x", code)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (server_error(516, "default: Authentication failed"), SinkFatal),
        (server_error(193, "Wrong password for user default"), SinkFatal),
        (server_error(60, "Table t.events doesn't exist."), SinkFatal),
        (server_error(16, "There is no column 'x' in table"), SinkFatal),
        (server_error(81, "Database t doesn't exist"), SinkFatal),
        (server_error(164, "Cannot execute query in readonly mode"), SinkFatal),
        (
            server_error(252, "Too many parts (300). Merges are processing significantly slower"),
            SinkTransient,
        ),
        (
            server_error(252, "Too many partitions for single INSERT block (more than 100)"),
            RowsRefused,
        ),
        (server_error(241, "Memory limit (for query) exceeded"), SinkTransient),
        (server_error(69, "Argument out of bound"), RowsRefused),
        (
            ch_errors.TypeMismatchError(
                "Type mismatch in VALUES section. Column occurred_at: argument out of range"
            ),
            RowsRefused,
        ),
        (ch_errors.NetworkError("Code: 210. Connection refused (127.0.0.1:9000)"), SinkTransient),
        (ch_errors.SocketTimeoutError("Code: 209. timed out"), SinkTransient),
        (ConnectionResetError("reset by peer"), SinkTransient),
        (EOFError("Unexpected EOF while reading bytes"), SinkTransient),
        (
            ChdbError("Code: 60. DB::Exception: Unknown table expression identifier 'x.events'."),
            SinkFatal,
        ),
        (
            ChdbError(
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more "
                "than 100). The limit is controlled by 'max_partitions_per_insert_block'"
            ),
            RowsRefused,
        ),
        (
            pa.ArrowInvalid(
                "Decimal type with precision 19 does not fit into precision inferred "
                "from first array element: 18"
            ),
            RowsRefused,
        ),
        (struct.error("'I' format requires 0 <= number <= 4294967295"), RowsRefused),
        (RuntimeError("something nobody has seen"), SinkTransient),
    ],
)
def test_each_clickhouse_error_is_classified_as_transient_refused_rows_or_fatal(error, kind):
    assert type(classify(error)) is kind


def test_a_server_error_becomes_one_line_without_the_stack_trace():
    text = one_line(server_error(60, "Table t.events doesn't exist."))
    assert text == "Code: 60. DB::Exception: Table t.events doesn't exist."
    assert str(classify(server_error(60, "Table t.events doesn't exist."))) == text
    assert len(one_line(RuntimeError("x" * 5000))) <= 400


class RuleSink(Sink):
    """Refuses an insert (as the driver does: the whole block) when any row breaks
    ``refuse``; then raises ``then`` for every later insert, if set."""

    database = "t"

    def __init__(self, refuse: Callable[[str, Row], bool] = lambda t, r: False) -> None:
        self.refuse = refuse
        self.tables: dict[str, list[Row]] = {}
        self.inserts = 0
        self.fail_with: Exception | None = None

    def execute(self, sql: str) -> None:
        pass

    def query(self, sql: str) -> tuple[list[str], list[Row]]:
        return [], []

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        self.inserts += 1
        if self.fail_with is not None:
            raise classify(self.fail_with)
        if any(self.refuse(table, r) for r in rows):
            raise classify(
                ch_errors.TypeMismatchError(
                    "Code: 53. Type mismatch in VALUES section. "
                    "Column amount: argument out of range"
                )
            )
        self.tables.setdefault(table, []).extend(rows)


def event_row(i: int, amount: Decimal = Decimal("1.5"), ms: int = 1_700_000_000_000) -> Row:
    return (f"e{i}", f"c{i % 7}", "purchase", ms, "", amount, "EUR", "{}", 0, i, 1)


def test_refused_rows_are_found_by_halving_and_go_to_dead_letters_the_rest_is_written():
    bad = {17, 700}
    sink = RuleSink(lambda table, r: table == "events" and r[9] in bad)
    writer = BatchingWriter(sink, clock=lambda: AT)
    writer.add("events", [event_row(i) for i in range(1000)])
    assert writer.flush() == 998
    assert sorted(r[9] for r in sink.tables["events"]) == [i for i in range(1000) if i not in bad]
    assert sink.inserts <= 1 + 2 * 2 * 10 + 1  # about 2 log2(n) per refused row, + dead letters
    dead = sorted(sink.tables["dead_letters"], key=lambda r: r[3])
    assert [r[3] for r in dead] == ["customer_id=c0 event_id=e700", "customer_id=c3 event_id=e17"]
    for row in dead:
        assert len(row) == len(DEAD_LETTERS.columns)
        topic, partition, offset, _key, raw, reason, received_at, _ = row
        assert topic == "clickhouse:events" and partition == 0 and 0 <= offset < 2**63
        assert reason.startswith("ClickHouse refused this events row: Code: 53.")
        assert "argument out of range" in reason
        assert orjson.loads(raw)["occurred_at"] == "2023-11-14T22:13:20Z"
        assert received_at == AT
    assert writer.rows_refused == 2 and writer.pending == 0


def test_a_refused_row_written_again_rewrites_the_same_dead_letter_key():
    sink = RuleSink(lambda table, r: table == "events" and r[9] == 3)
    writer = BatchingWriter(sink, clock=lambda: AT)
    for _ in range(2):
        writer.add("events", [event_row(3), event_row(4)])
        writer.flush()
    first, second = sink.tables["dead_letters"]
    assert first[:3] == second[:3]  # (topic, partition, offset): one row after FINAL


def test_a_transient_error_keeps_every_row_buffered_for_the_retry():
    sink = RuleSink()
    sink.fail_with = ch_errors.NetworkError("Code: 210. Connection refused")
    writer = BatchingWriter(sink)
    writer.add("events", [event_row(i) for i in range(10)])
    with pytest.raises(SinkTransient):
        writer.flush()
    assert sink.inserts == 1  # not halved: the rows are not the problem
    assert writer.pending == 10
    sink.fail_with = None
    assert writer.flush() == 10 and writer.pending == 0


def test_a_fatal_error_is_raised_without_setting_rows_aside():
    sink = RuleSink()
    sink.fail_with = server_error(60, "Table t.events doesn't exist.")
    writer = BatchingWriter(sink)
    writer.add("events", [event_row(i) for i in range(10)])
    with pytest.raises(SinkFatal, match="Code: 60"):
        writer.flush()
    assert writer.pending == 10 and writer.rows_refused == 0 and "dead_letters" not in sink.tables


def test_a_refused_dead_letter_is_logged_not_retried_forever(caplog):
    sink = RuleSink(lambda table, r: True)
    writer = BatchingWriter(sink, clock=lambda: AT)
    writer.add("events", [event_row(1)])
    assert writer.flush() == 0
    assert writer.pending == 0 and "cannot be stored" in caplog.text


# -- inserts split by partition ------------------------------------------------------------


def month_ms(i: int) -> int:
    return int(datetime(2010 + i // 12, i % 12 + 1, 15, tzinfo=UTC).timestamp() * 1000)


def test_a_backfill_of_120_months_goes_in_inserts_of_at_most_100_months_each_month_whole():
    rows = [event_row(i, ms=month_ms(i % 120)) for i in range(360)]
    blocks = insert_blocks("events", rows)
    assert len(blocks) == 2
    months = [{month_ms(r[9] % 120) for r in b} for b in blocks]
    assert [len(m) for m in months] == [100, 20] and not months[0] & months[1]
    assert sorted(r[9] for b in blocks for r in b) == list(range(360))
    for b in blocks:  # in their order within a block
        assert [r[9] for r in b] == sorted(r[9] for r in b)


def test_rows_of_up_to_100_months_or_of_an_unpartitioned_table_stay_one_insert():
    rows = [event_row(i, ms=month_ms(i % 100)) for i in range(500)]
    assert insert_blocks("events", rows) == [rows]
    states = [("c",) * 23] * 500
    assert insert_blocks("customer_state", states) == [states]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
        ),
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 120),
    st.booleans(),
)
def test_every_row_is_in_one_block_and_no_block_has_more_months_than_the_limit(
    times, limit, as_datetimes
):
    column = EVENTS.column_names.index("occurred_at")
    rows = [
        event_row(i, ms=t if as_datetimes else int(t.timestamp() * 1000))
        for i, t in enumerate(times)
    ]
    blocks = insert_blocks("events", rows, limit)
    assert sorted(r[9] for b in blocks for r in b) == list(range(len(rows)))
    seen: set[tuple[int, int]] = set()
    for b in blocks:
        ts = [
            t if isinstance(t, datetime) else datetime.fromtimestamp(t / 1000, UTC)
            for t in (r[column] for r in b)
        ]
        months = {(t.year, t.month) for t in ts}
        assert len(months) <= limit and not months & seen  # a month is in one block only
        seen |= months
    assert MAX_PARTITIONS_PER_INSERT == 100

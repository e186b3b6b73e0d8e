"""touchstream/domain/codec.py: a customer's stored bytes give back exactly its state."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from touchstream.domain import codec
from touchstream.domain.codec import COMPACT, WIDE
from touchstream.domain.customer import CustomerState, Working
from touchstream.domain.defection import TYPES
from touchstream.domain.issues import OPEN, REJECTED, RESOLVED, Complaint
from touchstream.domain.lifecycle import EXIT_PATTERN, STABILITY

STAGES = [None, "exploration", "formation", "stability", "decline", "churned"]


def round_trip(s: CustomerState, partition: int = 1, offset: int = 2) -> CustomerState:
    raw = codec.encode(s, partition, offset)
    work, p, o = codec.decode(raw)
    assert (p, o) == (partition, offset)
    assert codec.partition_of(raw) == partition
    return work.freeze()


def test_values_too_large_for_the_compact_header_are_stored_whole_in_the_wide_one():
    s = CustomerState(
        "big",
        version=2**40,
        purchases=70_000,
        refunds=2**33,
        transitions=100_000,
        episode=70_000,
        relationships=66_000,
        alert_level=300,
        relationship_start_day=-(2**40),
    )
    raw = codec.encode(s, 2**31 - 1, 2**62)
    assert raw[0] == WIDE
    assert codec.partition_of(raw) == 2**31 - 1
    assert round_trip(s, 2**31 - 1, 2**62) == s
    assert codec.encode(CustomerState("small"), 3, 4)[0] == COMPACT


def test_purchase_days_far_apart_or_before_1970_round_trip():
    for days in [
        (5,),
        (0, 255),
        (0, 256),
        (0, 70_000),
        (-800_000, -5, 3, 2_900_000),
        (9, 3, 7),
        (1, 1),
    ]:
        s = CustomerState("c", purchase_days=days, recent_spend=((days[-1], 1.5),))
        assert round_trip(s) == s, days


def test_recent_spend_on_other_days_than_the_latest_purchase_days_round_trips():
    s = CustomerState(
        "c", purchase_days=(10, 11, 12, 13), recent_spend=((10, 2.5), (12, 0.1 + 0.2), (400, -0.0))
    )
    assert round_trip(s) == s
    latest = CustomerState("c", purchase_days=(10, 11, 12), recent_spend=((11, 2.0), (12, 3.0)))
    assert round_trip(latest) == latest


def test_a_signal_code_the_codec_does_not_know_round_trips_as_text():
    s = CustomerState(
        "c",
        signals=(
            (5, "complaint:price:5"),
            (6, "a new kind of signal"),
            (2**45, "call:billing"),
            (2**45, "ünïcode"),
        ),
    )
    assert round_trip(s) == s


def test_a_customer_id_and_amounts_keep_their_exact_text():
    s = CustomerState(
        "ü-" + "x" * 126,
        purchase_total=Decimal("10.50"),
        refund_total=Decimal("0E-7"),
        first_day_spend=Decimal("1E+2"),
    )
    back = round_trip(s)
    assert back == s
    assert [str(v) for v in (back.purchase_total, back.refund_total, back.first_day_spend)] == [
        "10.50",
        "0E-7",
        "1E+2",
    ]


def test_a_working_copy_is_stored_like_its_frozen_state():
    s = CustomerState(
        "c",
        version=3,
        purchase_days=(1, 2),
        recent_ids=(7, 9),
        next_deadline_ms=123,
        stage=STABILITY,
    )
    assert codec.encode(Working.of(s), 0, 0) == codec.encode(s, 0, 0)


def test_a_ten_purchase_customer_is_stored_in_under_250_bytes():
    s = CustomerState(
        "C000123",
        version=10,
        purchases=10,
        purchase_total=Decimal("1234.56"),
        first_purchase_ms=1_735_689_600_000,
        last_purchase_ms=1_765_000_000_000,
        purchase_days=tuple(range(20_089, 20_429, 34)),
        first_day_spend=Decimal("123.45"),
        recent_ids=tuple(range(10)),
        stage=STABILITY,
        next_deadline_ms=1_770_000_000_000,
        recent_spend=tuple((d, 100.5) for d in range(20_259, 20_429, 34)),
    )
    assert len(codec.encode(s, 3, 123_456)) < 250


ms = st.integers(-(2**50), 2**50)
small = st.integers(0, 2**40)
optional_ms = st.none() | ms


@st.composite
def states(draw) -> CustomerState:
    """Any state, not only the ones events make (every stored field at any value)."""
    money = st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**20), max_value=10**20
    )
    floats = st.floats(allow_nan=False)
    return CustomerState(
        customer_id=draw(st.text(min_size=1, max_size=128)),
        version=draw(small),
        first_event_ms=draw(ms),
        last_event_ms=draw(ms),
        purchases=draw(small),
        purchase_total=draw(money),
        refunds=draw(small),
        refund_total=draw(money),
        first_purchase_ms=draw(optional_ms),
        last_purchase_ms=draw(optional_ms),
        purchase_days=tuple(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40))),
        first_day_spend=draw(money),
        recent_ids=tuple(draw(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=64))),
        stage=draw(st.sampled_from(STAGES)),
        stage_since_ms=draw(ms),
        declined_from=draw(st.sampled_from(STAGES)),
        relationships=draw(small),
        relationship_start_day=draw(st.integers(-(2**31), 2**31 - 1)),
        transitions=draw(small),
        exit_pattern=draw(st.sampled_from([None, *EXIT_PATTERN.values()])),
        next_deadline_ms=draw(optional_ms),
        recent_spend=tuple(
            draw(st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), floats), max_size=8))
        ),
        signals=tuple(
            draw(
                st.lists(
                    st.tuples(
                        ms,
                        st.sampled_from(
                            [
                                "complaint:service:3",
                                "call_unresolved",
                                "survey:dissatisfied",
                                "x:y",
                                "",
                                "call_unresolved:billing",
                                "call:price",
                            ]
                        ),
                    ),
                    max_size=30,
                )
            )
        ),
        defection_type=draw(st.sampled_from([None, *TYPES, "unknown"])),
        defection_confidence=draw(floats),
        alert_level=draw(st.integers(0, 3)),
        episode=draw(small),
        risk_at_ms=draw(ms),
        complaints=tuple(draw(st.lists(complaints(), max_size=8))),
        discount_days=tuple(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=32))),
        risk_checked_ms=draw(ms),
    )


@st.composite
def complaints(draw) -> Complaint:
    reports = draw(
        st.lists(st.tuples(ms, st.sampled_from([OPEN, RESOLVED, REJECTED])), min_size=1, max_size=6)
    )
    return Complaint(
        draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from(["price", "product", "service", "other"])),
        draw(st.integers(1, 5)),
        tuple(reports),
    )


@settings(max_examples=300, deadline=None)
@given(s=states(), partition=st.integers(0, 2**31 - 1), offset=st.integers(-1, 2**63 - 1))
def test_any_state_round_trips_exactly_with_any_position(s, partition, offset):
    assert round_trip(s, partition, offset) == s


# Bytes written by the first stored format (1 compact, 2 wide), before complaints were
# followed by id: a customer with two discounted purchases and an open product complaint.
FORMAT_1 = bytes.fromhex(
    "01030063000000070000000022e5c48c01000000468a648d01000000ba64f88c01000000000000000000"
    "000022e5c48c01000000468a648d010000000e09ff8d010000040001000100020000000b4d0000000200"
    "0000000000000000000000030f0304000204004334323132302e35302c31302c33302e35300b00000016"
    "00000021000000010b4d00000a0a0b000000000000003e400000000000003e4003005aebf98c01000000"
    "e1f50500000000000ba96419081519"
)
FORMAT_2 = bytes.fromhex(
    "0203000000630000000000000000000000000100000022e5c48c01000000468a648d01000000ba64f88c"
    "01000000000000000000000022e5c48c01000000468a648d010000000e09ff8d01000004000000000000"
    "0001000000000000000100000000000000020000000000000000000000000000000b4d00000000000000"
    "000000000000000200000000000000000000000003000f00030004000000000000000200040000004334"
    "323132302e35302c31302c33302e35300b0000001600000021000000010b4d00000a0a0b000000000000"
    "003e400000000000003e4003005aebf98c01000000e1f50500000000000ba96419081519"
)


def test_every_earlier_stored_format_still_decodes_and_is_rewritten_in_the_latest():
    for raw, version in ((FORMAT_1, 7), (FORMAT_2, 2**40)):
        work, partition, offset = codec.decode(raw)
        assert (partition, offset, work.version) == (3, 99, version)
        assert work.customer_id == "C42" and work.stage == "formation"
        assert work.purchase_days == [19723, 19733, 19743, 19754]
        assert work.purchase_total == Decimal("120.50")
        assert work.next_deadline_ms == 1_709_380_800_000
        # Discounted purchases moved out of the signal log to their own list.
        assert work.discount_days == (1_705_000_000_000 // 86_400_000, 19754)
        assert work.signals == (
            (1_705_100_000_000, "complaint:product:3"),
            (1_705_100_000_000, "complaint_open"),
        )
        assert work.complaints == () and work.risk_checked_ms == 0
        again = codec.encode(work, partition, offset)
        assert again[0] in (COMPACT, WIDE)
        assert codec.decode(again)[0].freeze() == work.freeze()


@settings(max_examples=300, deadline=None)
@given(s=states(), partition=st.integers(0, 2**31 - 1), offset=st.integers(-1, 2**63 - 1))
def test_the_index_view_of_any_stored_state_equals_its_decoded_fields(s, partition, offset):
    raw = codec.encode(s, partition, offset)
    view = codec.index_view(raw)
    work = codec.decode(raw)[0]
    assert view == (
        work.next_deadline_ms,
        work.purchase_days,
        work.purchase_total,
        work.refund_total,
    )


def test_the_index_view_reads_every_earlier_stored_format():
    for raw in (FORMAT_1, FORMAT_2):
        view = codec.index_view(raw)
        assert view.next_deadline_ms == 1_709_380_800_000
        assert view.purchase_days == [19723, 19733, 19743, 19754]
        assert (view.purchase_total, view.refund_total) == (Decimal("120.50"), Decimal("10"))

"""The stored form of a customer's state: compact bytes (the shell's table value).

Pure: a ``CustomerState`` (or a ``Working`` copy) and the shell's position (partition,
offset) to bytes and back, exactly. The first byte names the format (``FORMAT``): new
code reads every earlier format (a changelog written by the previous release restores
into the next one), and writes the latest.

Layout: one ``struct`` header (every scalar field, ``None`` as flag bits, enums as small
codes, lengths), then the variable parts: customer id, the three decimals as text, event
id fingerprints (4 bytes each), purchase days and the other sorted integer lists as a
first value and small deltas, spend as doubles, signal codes as one byte each. Integers
too large for the compact header select the wide one; nothing is ever truncated.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from decimal import Decimal
from itertools import accumulate
from operator import sub
from typing import Any, NamedTuple, get_args

from schemas.events import SATISFACTION_LEVELS, Account, Call, Complaint, Refund
from touchstream.domain import defection, issues, lifecycle
from touchstream.domain.customer import CustomerState, Working

_new = object.__new__

# Header fields after the format byte, and their struct codes (compact, wide).
_HEAD = (
    ("partition", "H", "I"),
    ("offset", "I", "q"),
    ("version", "I", "Q"),
    ("first_event_ms", "q", "q"),
    ("last_event_ms", "q", "q"),
    ("stage_since_ms", "q", "q"),
    ("risk_at_ms", "q", "q"),
    ("first_purchase_ms", "q", "q"),
    ("last_purchase_ms", "q", "q"),
    ("next_deadline_ms", "q", "q"),
    ("purchases", "H", "Q"),
    ("refunds", "H", "Q"),
    ("relationships", "H", "Q"),
    ("transitions", "H", "Q"),
    ("episode", "H", "Q"),
    ("relationship_start_day", "i", "q"),
    ("alert_level", "B", "Q"),
    ("stage", "B", "B"),
    ("declined_from", "B", "B"),
    ("exit_pattern", "B", "B"),
    ("defection_type", "B", "B"),
    ("nones", "B", "B"),
    ("defection_confidence", "d", "d"),
    ("cid_len", "B", "H"),
    ("totals_len", "B", "H"),
    ("ids", "B", "H"),
    ("days", "H", "Q"),
    ("spend", "B", "H"),
    ("signals", "B", "H"),
    ("escaped", "B", "H"),
)
# Added by format 3/4: complaints followed by id, discounted days, the risk-check mark.
_HEAD_3 = (*_HEAD, ("risk_checked_ms", "q", "q"), ("complaints", "B", "H"), ("discounts", "B", "H"))
V1_COMPACT, V1_WIDE, COMPACT, WIDE = 1, 2, 3, 4


def _struct(head: tuple[tuple[str, str, str], ...], wide: bool) -> struct.Struct:
    return struct.Struct("<" + "".join(w if wide else c for _, c, w in head))


FORMAT = {
    V1_COMPACT: _struct(_HEAD, False),
    V1_WIDE: _struct(_HEAD, True),
    COMPACT: _struct(_HEAD_3, False),
    WIDE: _struct(_HEAD_3, True),
}
_COMPACT, _WIDE = FORMAT[COMPACT], FORMAT[WIDE]
_PARTITION = {
    V1_COMPACT: struct.Struct("<H"),
    V1_WIDE: struct.Struct("<I"),
    COMPACT: struct.Struct("<H"),
    WIDE: struct.Struct("<I"),
}
_COMPLAINT = struct.Struct("<IBBB")  # key, category, severity, reports
_I32, _I64 = struct.Struct("<i"), struct.Struct("<q")

_STAGES = (
    None,
    lifecycle.EXPLORATION,
    lifecycle.FORMATION,
    lifecycle.STABILITY,
    lifecycle.DECLINE,
    lifecycle.CHURNED,
)
_PATTERNS = (None, *lifecycle.EXIT_PATTERN.values())
_DEFECTIONS = (None, *defection.TYPES, "unknown")


def _signal_codes() -> tuple[str, ...]:
    """Every code ``defection.signals_of`` can leave (others are stored as text)."""

    def values(model: Any, name: str) -> tuple[str, ...]:
        return get_args(model.model_fields[name].annotation)

    codes = [f"complaint:{c}:{s}" for c in values(Complaint, "category") for s in range(1, 6)]
    codes += [
        "complaint_open",
        "complaint_rejected",
        "call_long_wait",
        "call_unresolved",
        "purchase:discount",
    ]
    codes += [f"call:{r}" for r in values(Call, "reason")]
    codes += [f"refund:{r}" for r in values(Refund, "reason")]
    codes += [f"account:{c}" for c in values(Account, "change")]
    codes += [f"survey:{k}" for k, v in SATISFACTION_LEVELS.items() if v < 0]
    # Appended, never reordered: a code's number is part of every stored format.
    codes += [f"call_unresolved:{r}" for r in values(Call, "reason")]
    return (None, *codes)  # type: ignore[arg-type]  # 0: the code follows as text


_SIGNALS = _signal_codes()
_CATEGORIES: tuple[str, ...] = get_args(Complaint.model_fields["category"].annotation)
_CATEGORY_CODE = {c: i for i, c in enumerate(_CATEGORIES)}
_STAGE_CODE, _PATTERN_CODE, _DEFECTION_CODE, _SIGNAL_CODE = (
    {v: i for i, v in enumerate(values)} for values in (_STAGES, _PATTERNS, _DEFECTIONS, _SIGNALS)
)
_WIDER = ((2, "H"), (3, "I"))  # kind, array typecode of the deltas
_SIZE = {2: 2, 3: 4}
_U16 = struct.Struct("<H")
_LATEST_DAYS = b"\x00"  # kind 0: recent_spend's days are the latest purchase days


def _ints(xs: Sequence[int], first: struct.Struct) -> bytes:
    """A list of integers, usually ascending: a kind byte, then the first one and the
    deltas in the narrowest unsigned type that holds them all (kind 1: bytes, 2: 16 bits,
    3: 32 bits), or else every value as an int64 (kind 4)."""
    head = first.pack(xs[0])
    try:
        return b"\x01" + head + bytes(map(sub, xs[1:], xs[:-1]))
    except ValueError:  # a delta outside 0..255
        pass
    deltas = list(map(sub, xs[1:], xs[:-1]))
    for kind, code in _WIDER:
        try:
            return bytes((kind,)) + head + array(code, deltas).tobytes()
        except OverflowError:
            continue
    return b"\x04" + array("q", xs).tobytes()


def _read_ints(raw: bytes, pos: int, n: int, first: struct.Struct) -> tuple[list[int], int]:
    kind = raw[pos]
    pos += 1
    if kind == 4:
        a = array("q")
        a.frombytes(raw[pos : pos + 8 * n])
        return a.tolist(), pos + 8 * n
    (x,) = first.unpack_from(raw, pos)
    pos += first.size
    if kind == 1:
        end = pos + n - 1
        return list(accumulate(raw[pos:end], initial=x)), end
    end = pos + _SIZE[kind] * (n - 1)
    deltas = array(_WIDER[kind - 2][1])
    deltas.frombytes(raw[pos:end])
    return list(accumulate(deltas, initial=x)), end


def encode(s: CustomerState | Working, partition: int, offset: int) -> bytes:
    """The bytes of ``s`` with the shell's position (``partition`` first: see
    ``partition_of``)."""
    cid = s.customer_id.encode()
    # Decimal text has no comma: the three amounts as one field.
    totals = f"{s.purchase_total},{s.refund_total},{s.first_day_spend}".encode()
    ids, days, spend, signals = s.recent_ids, s.purchase_days, s.recent_spend, s.signals
    fp, lp, nd = s.first_purchase_ms, s.last_purchase_ms, s.next_deadline_ms
    escaped = [c.encode() for _, c in signals if c not in _SIGNAL_CODE] if signals else ()
    values = (
        partition,
        offset,
        s.version,
        s.first_event_ms,
        s.last_event_ms,
        s.stage_since_ms,
        s.risk_at_ms,
        fp or 0,
        lp or 0,
        nd or 0,
        s.purchases,
        s.refunds,
        s.relationships,
        s.transitions,
        s.episode,
        s.relationship_start_day,
        s.alert_level,
        _STAGE_CODE[s.stage],
        _STAGE_CODE[s.declined_from],
        _PATTERN_CODE[s.exit_pattern],
        _DEFECTION_CODE[s.defection_type],
        (fp is None) | (lp is None) << 1 | (nd is None) << 2,
        s.defection_confidence,
        len(cid),
        len(totals),
        len(ids) >> 2 if ids.__class__ is bytearray else len(ids),
        len(days),
        len(spend),
        len(signals),
        len(escaped),
        s.risk_checked_ms,
        len(s.complaints),
        len(s.discount_days),
    )
    try:
        head = b"\x03" + _COMPACT.pack(*values)
    except struct.error:
        head = b"\x04" + _WIDE.pack(*values)
    parts = [head, cid, totals, ids if ids.__class__ is bytearray else array("I", ids).tobytes()]
    if days:
        parts.append(_ints(days, _I32))
    if spend:
        spend_days, amounts = zip(*spend, strict=True)
        latest = days[-len(spend_days) :]
        if len(latest) == len(spend_days) and tuple(latest) == spend_days:
            parts.append(_LATEST_DAYS)  # as usual: nothing more to store
        else:
            parts.append(_ints(spend_days, _I32))
        parts.append(array("d", amounts).tobytes())
    if signals:
        times, codes = zip(*signals, strict=True)
        parts.append(_ints(times, _I64))
        parts.append(bytes([_SIGNAL_CODE.get(c, 0) for c in codes]))
        parts.extend(_U16.pack(len(c)) + c for c in escaped)
    if s.discount_days:
        parts.append(_ints(s.discount_days, _I32))
    for c in s.complaints:
        times, statuses = zip(*c.reports, strict=True)
        parts.append(_COMPLAINT.pack(c.key, _CATEGORY_CODE[c.category], c.severity, len(times)))
        parts.append(_ints(times, _I64))
        parts.append(bytes(statuses))
    return b"".join(parts)


def partition_of(raw: bytes) -> int:
    """The partition stored with a state, without decoding the rest."""
    return _PARTITION[raw[0]].unpack_from(raw, 1)[0]


class IndexView(NamedTuple):
    """What the shell rebuilds its deadline index and RFM sketches from: a stored
    state's silence deadline, purchase days and totals (``scoring.point_keys`` takes it
    as it takes a state)."""

    next_deadline_ms: int | None
    purchase_days: list[int]
    purchase_total: Decimal
    refund_total: Decimal


def index_view(raw: bytes) -> IndexView:
    """``IndexView`` of stored bytes, equal to what ``decode`` gives for those fields,
    without decoding the rest (about a quarter of the cost: a restart rebuilds the index
    from every stored customer)."""
    fmt = FORMAT[raw[0]]
    values = fmt.unpack_from(raw, 1)
    nones, n_cid, n_totals, n_ids, n_days = (values[i] for i in (21, 23, 24, 25, 26))
    pos = 1 + fmt.size + n_cid
    end = pos + n_totals
    purchase_total, refund_total, _ = raw[pos:end].decode().split(",")
    pos = end + 4 * n_ids
    days = _read_ints(raw, pos, n_days, _I32)[0] if n_days else []
    return IndexView(
        None if nones & 4 else values[9], days, Decimal(purchase_total), Decimal(refund_total)
    )


def _upgrade_v1(w: Working) -> None:
    """Format 1/2 kept discounted purchases in the signal log: move them to their own
    list. (Their complaint and call codes stay: the classifier still weighs them.)"""
    if any(c == "purchase:discount" for _, c in w.signals):
        w.discount_days = tuple(
            sorted({t // 86_400_000 for t, c in w.signals if c == "purchase:discount"})
        )
        w.signals = tuple((t, c) for t, c in w.signals if c != "purchase:discount")


def decode(raw: bytes) -> tuple[Working, int, int]:
    """A working copy of the stored state and the position stored with it."""
    version = raw[0]
    fmt = FORMAT[version]
    w = _new(Working)
    values = fmt.unpack_from(raw, 1)
    (
        partition,
        offset,
        w.version,
        w.first_event_ms,
        w.last_event_ms,
        w.stage_since_ms,
        w.risk_at_ms,
        fp,
        lp,
        nd,
        w.purchases,
        w.refunds,
        w.relationships,
        w.transitions,
        w.episode,
        w.relationship_start_day,
        w.alert_level,
        stage,
        declined_from,
        exit_pattern,
        defection_type,
        nones,
        w.defection_confidence,
        n_cid,
        n_totals,
        n_ids,
        n_days,
        n_spend,
        n_signals,
        _,
    ) = values[: len(_HEAD)]
    if version >= COMPACT:
        w.risk_checked_ms, n_complaints, n_discounts = values[len(_HEAD) :]
    else:
        w.risk_checked_ms = n_complaints = n_discounts = 0
    pos = 1 + fmt.size
    end = pos + n_cid
    w.customer_id = raw[pos:end].decode()
    pos, end = end, end + n_totals
    purchase_total, refund_total, first_day_spend = raw[pos:end].decode().split(",")
    w.purchase_total = Decimal(purchase_total)
    w.refund_total = Decimal(refund_total)
    w.first_day_spend = Decimal(first_day_spend)
    pos, end = end, end + 4 * n_ids
    w.recent_ids = bytearray(raw[pos:end])
    pos = end
    if n_days:
        w.purchase_days, pos = _read_ints(raw, pos, n_days, _I32)
    else:
        w.purchase_days = []
    if n_spend:
        if raw[pos] == 0:
            spend_days, pos = w.purchase_days[-n_spend:], pos + 1
        else:
            spend_days, pos = _read_ints(raw, pos, n_spend, _I32)
        amounts = array("d")
        amounts.frombytes(raw[pos : pos + 8 * n_spend])
        pos += 8 * n_spend
        w.recent_spend = tuple(zip(spend_days, amounts.tolist(), strict=True))
    else:
        w.recent_spend = ()
    if n_signals:
        times, pos = _read_ints(raw, pos, n_signals, _I64)
        codes: list[str] = [_SIGNALS[c] for c in raw[pos : pos + n_signals]]
        pos += n_signals
        for i, c in enumerate(codes):
            if c is None:  # stored as text after the codes
                (n,) = _U16.unpack_from(raw, pos)
                codes[i] = raw[pos + 2 : pos + 2 + n].decode()
                pos += 2 + n
        w.signals = tuple(zip(times, codes, strict=True))
    else:
        w.signals = ()
    if n_discounts:
        discount_days, pos = _read_ints(raw, pos, n_discounts, _I32)
        w.discount_days = tuple(discount_days)
    else:
        w.discount_days = ()
    complaints = []
    for _ in range(n_complaints):
        key, category, severity, n = _COMPLAINT.unpack_from(raw, pos)
        times, pos = _read_ints(raw, pos + _COMPLAINT.size, n, _I64)
        statuses = raw[pos : pos + n]
        pos += n
        complaints.append(
            issues.Complaint(
                key, _CATEGORIES[category], severity, tuple(zip(times, statuses, strict=True))
            )
        )
    w.complaints = tuple(complaints)
    w.first_purchase_ms = None if nones & 1 else fp
    w.last_purchase_ms = None if nones & 2 else lp
    w._deadline, w._deadline_rules = None if nones & 4 else nd, None
    w.stage, w.declined_from = _STAGES[stage], _STAGES[declined_from]
    w.exit_pattern, w.defection_type = _PATTERNS[exit_pattern], _DEFECTIONS[defection_type]
    w._gap_rules = None
    if version < COMPACT:
        _upgrade_v1(w)
    if pos != len(raw):
        raise ValueError(f"stored state: {len(raw) - pos} bytes left over")
    return w, partition, offset

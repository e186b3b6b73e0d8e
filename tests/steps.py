"""The domain's update on the frozen ``CustomerState``, for tests: ``step`` applies one
event, ``step_many`` and ``step_batch`` fold several, ``advance`` fires what stream time
makes due. Each is built on the worker's own ``apply`` / ``advance_working`` (one working
copy, one freeze), so the tests exercise the code that runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from schemas.events import Event, epoch_ms
from touchstream.domain.customer import Accepted, CustomerState, Duplicate, Output, Working, id_hash
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules
from touchstream.domain.update import advance_working, apply


def advance(
    state: CustomerState, now_ms: int, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Fire every silence deadline due by ``now_ms`` (stream time). Each transition is
    dated at its deadline, so it does not matter when the deadline is noticed."""
    if state.next_deadline_ms is None or state.next_deadline_ms > now_ms:
        return state, ()
    w = Working.of(state)
    outs = advance_working(w, now_ms, rules)
    return w.freeze(), tuple(outs)


def step(
    state: CustomerState | None, event: Event, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Apply one event to a customer's state. Duplicated event ids change nothing.

    Deadlines due by the event's time fire first, then the event counts (RFM), then
    it may move the lifecycle (purchases) or raise a churn risk (negative touchpoints).
    """
    s = state if state is not None else CustomerState(customer_id=event.customer_id)
    if id_hash(event.event_id) in s.recent_ids:  # step keeps ``s`` as it is
        return s, (Duplicate(event),)
    w = Working.of(s)
    n, outs = apply(w, event, epoch_ms(event.occurred_at), rules)  # type: ignore[misc]
    return w.freeze(), (*outs[:n], Accepted(event, w.version), *outs[n:])


def step_many(
    state: CustomerState | None, events: Iterable[Event], rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState | None, list[Output]]:
    """Fold one customer's events through ``step``, copying the state once."""
    w = None if state is None else Working.of(state)
    outputs: list[Output] = []
    for ev in events:
        if w is None:
            w = Working(ev.customer_id)
        r = apply(w, ev, epoch_ms(ev.occurred_at), rules)
        if r is None:
            outputs.append(Duplicate(ev))
        else:
            n, outs = r
            outputs.extend((*outs[:n], Accepted(ev, w.version), *outs[n:]))
    return (state if w is None else w.freeze()), outputs


def step_batch(
    states: Mapping[str, CustomerState], events: Iterable[Event]
) -> tuple[dict[str, CustomerState], list[Output]]:
    """Fold a batch through ``step``. Returns only the customers whose state changed.

    Each customer's events are applied in their order within the batch; customers do
    not affect each other, so the interleaving across customers never matters.
    """
    working: dict[str, Working] = {}
    outputs: list[Output] = []
    for ev in events:
        cid = ev.customer_id
        w = working.get(cid)
        if w is None:
            before = states.get(cid)
            w = Working.of(before) if before is not None else Working(cid)
        r = apply(w, ev, epoch_ms(ev.occurred_at))
        if r is None:
            outputs.append(Duplicate(ev))
            continue
        working[cid] = w
        n, outs = r
        outputs.extend((*outs[:n], Accepted(ev, w.version), *outs[n:]))
    return {c: w.freeze() for c, w in working.items()}, outputs

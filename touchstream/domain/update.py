"""How a customer's state changes: by an event, and by stream time passing.

``apply(working, event, t)`` is the reference and what the worker runs: dedup by event
id, deadlines due before the event fire first, the event counts (RFM), then it may move
the lifecycle (purchases) or close the account; trouble raises churn_risk through the
risk checks once it is live. ``advance_working`` fires what stream time makes due.
(The tests' ``step`` on a frozen ``CustomerState``, tests/steps.py, is built on these.)

Pure functions only: no I/O, no clock; time is the events' and the stream's.
"""

from __future__ import annotations

from schemas.events import Event
from touchstream.domain import alerts, defection, issues, lifecycle
from touchstream.domain.alerts import Alert
from touchstream.domain.customer import Output, Working, add_purchase
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules, Transition
from touchstream.domain.units import DAY_MS


def _move(w: Working, at_ms: int, to: str, reason: str, pattern: str | None = None) -> Transition:
    at_ms = max(at_ms, w.stage_since_ms)  # a very late event never dates a stage backwards
    tr = Transition(
        w.customer_id,
        at_ms,
        w.stage,
        to,
        reason,
        max(w.relationships, 1),
        w.transitions,
        pattern,
    )
    w.stage, w.stage_since_ms, w.transitions = to, at_ms, w.transitions + 1
    return tr


def _alert(
    w: Working,
    kind: str,
    at_ms: int,
    previous: str | None,
    d: defection.Defection | None,
    silent: int | None = None,
    open_issues: tuple[str, ...] = (),
) -> Alert | None:
    """Raise ``kind`` unless the open episode already went as far (no storm)."""
    if kind == "recovered":
        if w.alert_level == 0:
            return None
        episode, level = w.episode, 0
    else:
        if alerts.LEVEL[kind] <= w.alert_level:
            return None
        episode = w.episode + (1 if w.alert_level == 0 else 0)
        level = alerts.LEVEL[kind]
    dtype = d.type if d else (w.defection_type or "unknown")
    conf = d.confidence if d else w.defection_confidence
    evidence = d.evidence if d else ()
    if silent is None and w.last_purchase_ms is not None:
        silent = (at_ms - w.last_purchase_ms) // DAY_MS
    net_spend = w.net_spend
    alert = Alert(
        alert_id=f"{w.customer_id}/{episode}/{kind}",
        customer_id=w.customer_id,
        at_ms=at_ms,
        kind=kind,
        episode=episode,
        stage=w.stage or "",
        previous_stage=previous,
        defection_type=dtype,
        confidence=conf,
        severity=alerts.severity(net_spend),
        net_spend=net_spend,
        last_purchase_ms=w.last_purchase_ms,
        evidence=evidence,
        message=alerts.sentence(
            kind,
            w.customer_id,
            w.stage or "",
            net_spend,
            silent,
            dtype,
            conf,
            evidence,
            open_issues,
        ),
        version=w.version,
        open_issues=open_issues,
    )
    w.alert_level, w.episode = level, episode
    return alert


def _set_deadline(w: Working, rules: Rules) -> None:
    w._deadline_rules = rules  # computed when next read


def _fire_due(w: Working, due: int, rules: Rules) -> list[Output]:
    """``_advance`` to ``due``, without computing a stale deadline that cannot be due:
    silence is never due before the last purchase plus the shortest silence, and until
    then only the risk check is worked out."""
    if w._deadline_rules is not None:
        stage, last = w.stage, w.last_purchase_ms
        if last is None or stage is None or stage == lifecycle.CHURNED:
            silence_due = False
        else:
            shortest = (
                rules.churn_min_days if stage == lifecycle.DECLINE else rules.decline_min_days
            )
            silence_due = due >= last + int(shortest * DAY_MS)
        if not silence_due:  # then only a risk check can be due: the cheaper half
            r = w.risk_check_ms(rules)
            if r is None or r > due:
                return []
    d = w.next_deadline_ms
    return _advance(w, due, rules) if d is not None and d <= due else []


def _weaken(w: Working, at_ms: int, to: str, reason: str, rules: Rules) -> list[Output]:
    """Enter decline or churned, classify why, alert."""
    d = defection.classify(
        w.signals,
        at_ms,
        w.purchase_days,
        w.last_purchase_ms,
        w.complaints,
        w.discount_days,
        rules.quick_resolution_days,
    )
    w.risk_checked_ms = max(w.risk_checked_ms, at_ms)  # no churn risk while declining
    if to == lifecycle.CHURNED and w.defection_type not in (None, "unknown"):
        # Decided at the decline; later silence adds no evidence.
        d = defection.Defection(w.defection_type, w.defection_confidence, d.evidence, d.scores)
    previous = w.stage
    pattern = None
    if to == lifecycle.DECLINE:
        w.declined_from = previous
    else:
        pattern = w.exit_pattern = lifecycle.EXIT_PATTERN[w.declined_from or lifecycle.EXPLORATION]
    w.defection_type, w.defection_confidence = d.type, d.confidence
    tr = _move(w, at_ms, to, reason, pattern)
    alert = _alert(w, "decline" if to == lifecycle.DECLINE else "churned", at_ms, previous, d)
    _set_deadline(w, rules)
    return [tr] if alert is None else [tr, alert]


def _advance(w: Working, now_ms: int, rules: Rules) -> list[Output]:
    outs: list[Output] = []
    while (at := w.next_deadline_ms) is not None and at <= now_ms:
        check = w.risk_check_ms(rules)
        if check is not None and check <= at:
            outs.extend(_check_risk(w, check, rules))
            continue
        silent = (at - (w.last_purchase_ms or at)) // DAY_MS
        reason = f"no purchase for {silent} days (typical gap {w.typical_gap(rules):.0f} days)"
        to = lifecycle.DECLINE if w.stage in lifecycle.ACTIVE else lifecycle.CHURNED
        outs.extend(_weaken(w, at, to, reason, rules))
    return outs


def _check_risk(w: Working, at_ms: int, rules: Rules) -> list[Output]:
    """Raise churn_risk, dated ``at_ms``, if the trouble live then (decided from what
    happened by then only, so arrival order does not matter) weighs enough."""
    w.risk_checked_ms = at_ms
    w._deadline_rules = rules
    if (
        w.stage not in lifecycle.ACTIVE
        or w.alert_level
        or w.first_purchase_ms is None
        or w.first_purchase_ms > at_ms
        or w.relationship_start_day * DAY_MS > at_ms
    ):
        return []
    r = defection.risk(w.signals, w.complaints, at_ms, w.risk_at_ms, rules.unresolved_after_days)
    if r.score < alerts.CHURN_RISK_MIN_SCORE:
        return []
    d = defection.classify(
        w.signals,
        at_ms,
        w.purchase_days,
        None,
        w.complaints,
        w.discount_days,
        rules.quick_resolution_days,
    )
    d = defection.Defection(d.type, d.confidence, (*r.live, *r.support), d.scores)
    alert = _alert(w, "churn_risk", at_ms, w.stage, d, open_issues=r.live)
    if alert is None:
        return []
    w.risk_at_ms = at_ms
    return [alert]


def advance_working(w: Working, now_ms: int, rules: Rules = DEFAULT_RULES) -> list[Output]:
    """``advance`` on a working copy, in place."""
    return _advance(w, now_ms, rules)


def _on_purchase(
    w: Working, t: int, rules: Rules, previous_purchase_ms: int | None
) -> list[Output]:
    stage = w.stage
    if stage == lifecycle.STABILITY and w.alert_level != 1:
        return []  # the usual case: nothing below applies
    outs: list[Output] = []
    silent = None if previous_purchase_ms is None else (t - previous_purchase_ms) // DAY_MS
    if stage is not None and w.last_purchase_ms is not None and t < w.last_purchase_ms:
        return outs  # a late purchase: rhythm and stage already account for later ones
    if stage is None or stage == lifecycle.CHURNED:
        reactivation = stage == lifecycle.CHURNED
        day = t // DAY_MS
        w.relationships += 1
        w.relationship_start_day = day
        w._gap_rules = None
        w.declined_from = w.defection_type = None
        w.defection_confidence = 0.0
        w.recent_spend = tuple(x for x in w.recent_spend if x[0] >= day)
        w.risk_checked_ms = max(w.risk_checked_ms, t)  # a new relationship: fresh checks
        outs.append(
            _move(w, t, lifecycle.EXPLORATION, "reactivation" if reactivation else "first purchase")
        )
        if reactivation and (alert := _alert(w, "recovered", t, lifecycle.CHURNED, None, silent)):
            outs.append(alert)
    elif stage == lifecycle.DECLINE:
        back = w.declined_from or lifecycle.EXPLORATION
        w.declined_from = w.defection_type = None
        w.defection_confidence = 0.0
        w.risk_checked_ms = max(w.risk_checked_ms, t)  # trouble while declining is spent
        outs.append(_move(w, t, back, "purchase after decline"))
        if alert := _alert(w, "recovered", t, lifecycle.DECLINE, None, silent):
            outs.append(alert)
    elif w.alert_level == 1 and t - w.risk_at_ms >= alerts.RISK_RECOVERY_DAYS * DAY_MS:
        if alert := _alert(w, "recovered", t, stage, None, silent):
            outs.append(alert)
            w.risk_checked_ms = max(w.risk_checked_ms, t)
    if w.stage in (lifecycle.EXPLORATION, lifecycle.FORMATION):
        up = lifecycle.promotion(
            w.stage,
            w.relationship_days(),
            w.relationship_start_day * DAY_MS,
            t,
            w.recent_spend,
            rules,
        )
        if up is not None:
            outs.append(_move(w, t, up[0], up[1]))
    return outs


def _on_signal(w: Working, event: Event, t: int, rules: Rules) -> list[Output]:
    """An account closed starts the decline at once. (Other trouble raises churn_risk
    through the risk checks, once it is live: ``_check_risk``.)"""
    if w.stage not in lifecycle.ACTIVE:
        return []
    if event.type == "account" and event.change == "closed":
        if w.last_purchase_ms is not None and t < w.last_purchase_ms:
            return []  # closed before a purchase we already have: reopened since
        return _weaken(w, t, lifecycle.DECLINE, "account closed", rules)
    return []


def apply(
    w: Working, event: Event, t: int, rules: Rules = DEFAULT_RULES
) -> tuple[int, list[Output]] | None:
    """``step`` on a working copy, in place: None for a duplicate (``w`` unchanged),
    else ``(n, outputs)``: the transitions and alerts, the first ``n`` of them fired by
    deadlines before the event counted. ``t`` is ``epoch_ms(event.occurred_at)``."""
    if not w.remember(event.event_id):
        return None
    due = t - rules.allowed_lateness_ms
    if w._deadline_rules is None:
        d = w._deadline
        fired = _advance(w, due, rules) if d is not None and d <= due else None
    else:
        fired = _fire_due(w, due, rules)
    if w.version == 0 or t < w.first_event_ms:
        w.first_event_ms = t
    w.version += 1
    if t > w.last_event_ms:
        w.last_event_ms = t
    codes = defection.signals_of(event)
    if codes:
        w.signals = defection.record(w.signals, t, codes)
    if event.type == "complaint":  # compared on the event, so the type checker narrows it
        w.complaints = issues.report(
            w.complaints, event.complaint_id, event.category, event.severity, event.status, t
        )
    elif (
        event.type == "purchase"
        and event.discount is not None
        and event.discount >= defection.DISCOUNT_MIN
    ):
        w.discount_days = defection.add_discount_day(w.discount_days, t // DAY_MS)
    if event.type == "purchase":
        previous_purchase_ms = w.last_purchase_ms
        add_purchase(w, event.amount, t)
        more = _on_purchase(w, t, rules, previous_purchase_ms)
    else:
        if event.type == "refund":
            w.refunds += 1
            w.refund_total += event.amount
        more = _on_signal(w, event, t, rules)
    w._deadline_rules = rules  # the deadline is computed when next read
    if fired:
        return len(fired), fired + more
    return 0, more

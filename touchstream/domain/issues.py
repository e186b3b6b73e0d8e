"""Complaints followed to their outcome. Pure.

A complaint is reported more than once under one ``complaint_id``: opened, then resolved
or rejected, perhaps reopened. Each customer keeps its latest ``MAX_COMPLAINTS``
complaints, each with its reports as (time, status), sorted: the status at any moment is
that of the latest report by then. Nothing depends on the order the reports arrived in,
so a replay or a shuffled stream keeps the same complaints, and a decision taken as of a
past moment (a churn-risk check) sees what was true then (``status_at``).

The outcome of a customer's complaints (``outcome``): ``none``, ``unresolved`` (the
latest is open or was rejected), ``resolved``, ``resolved_quickly`` (closed within
``Rules.quick_resolution_days`` of being opened, never reopened): the repurchase pattern
of domain.md (9 / 19 / 54 / 82 %).
"""

from __future__ import annotations

import zlib
from bisect import insort
from typing import NamedTuple

from touchstream.domain.units import DAY_MS

MAX_COMPLAINTS = 8  # complaints kept per customer, the latest opened
MAX_REPORTS = 6  # reports kept per complaint: the first and the latest five

OPEN, RESOLVED, REJECTED = 0, 1, 2
STATUS = {"open": OPEN, "resolved": RESOLVED, "rejected": REJECTED}
OUTCOMES = ("none", "unresolved", "resolved", "resolved_quickly")


class Complaint(NamedTuple):
    key: int  # crc32 of the complaint_id
    category: str  # price | product | service | other
    severity: int  # 1..5, the highest reported
    reports: tuple[tuple[int, int], ...]  # (time ms, status), ascending

    @property
    def opened_ms(self) -> int:
        return self.reports[0][0]

    @property
    def status(self) -> int:
        return self.reports[-1][1]

    def status_at(self, at_ms: int) -> int | None:
        """The status as of ``at_ms`` (None: not reported yet)."""
        status = None
        for t, s in self.reports:
            if t > at_ms:
                break
            status = s
        return status

    @property
    def closed_ms(self) -> int | None:
        """The first resolution or rejection."""
        return next((t for t, s in self.reports if s != OPEN), None)

    @property
    def reopened(self) -> bool:
        closed = False
        for _, s in self.reports:
            if s != OPEN:
                closed = True
            elif closed:
                return True
        return False

    def resolved_within(self, days: float) -> bool:
        """Resolved (and still) within ``days`` of being opened, never reopened."""
        closed = self.closed_ms
        return (
            self.status == RESOLVED
            and closed is not None
            and not self.reopened
            and closed - self.opened_ms <= days * DAY_MS
        )


def complaint_key(complaint_id: str) -> int:
    return zlib.crc32(complaint_id.encode())


def report(
    complaints: tuple[Complaint, ...],
    complaint_id: str,
    category: str,
    severity: int,
    status: str,
    at_ms: int,
) -> tuple[Complaint, ...]:
    """``complaints`` with one report applied (a new complaint, or an update)."""
    key = complaint_key(complaint_id)
    entry = (at_ms, STATUS[status])
    for i, c in enumerate(complaints):
        if c.key == key:
            reports = list(c.reports)
            if entry in reports:
                return complaints
            insort(reports, entry)
            if len(reports) > MAX_REPORTS:
                del reports[1]  # keep the opening and the latest
            # The earliest report names the category, whatever arrived first.
            first = category if entry < c.reports[0] else c.category
            updated = c._replace(
                category=first, severity=max(c.severity, severity), reports=tuple(reports)
            )
            rest = (*complaints[:i], *complaints[i + 1 :])
            break
    else:
        updated = Complaint(key, category, severity, (entry,))
        rest = complaints
    merged = sorted((*rest, updated), key=lambda c: (c.opened_ms, c.key))
    return tuple(merged[-MAX_COMPLAINTS:])


def outcome(complaints: tuple[Complaint, ...], quick_days: float) -> str:
    """The outcome of the latest complaint (``OUTCOMES``)."""
    if not complaints:
        return "none"
    c = complaints[-1]
    if c.status != RESOLVED:
        return "unresolved"
    return "resolved_quickly" if c.resolved_within(quick_days) else "resolved"

"""The silence deadlines of one partition, so that stream time passing fires only the
customers that are due, without reading the others."""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class DeadlineIndex:
    """One partition's silence deadlines: a heap of (deadline, customer) and each
    customer's latest deadline. A heap entry that is no longer its customer's latest is
    stale and skipped without loading the customer; when stale entries outnumber the live
    ones the heap is rebuilt without them, so it stays under about twice the customers
    that have a deadline, however often their deadlines move."""

    __slots__ = ("heap", "horizon", "latest")

    def __init__(self, entries: Iterable[tuple[int, str]] = (), horizon: int | None = None) -> None:
        # None: every customer's deadline is here. A time: every deadline up to it is, and
        # later ones are not (kept in memory only up to a bound, the store has the rest):
        # once stream time passes it, the partition is read again (Processor).
        self.horizon = horizon
        self.latest = {cid: deadline for deadline, cid in entries}
        self.heap = [(deadline, cid) for cid, deadline in self.latest.items()]
        heapq.heapify(self.heap)

    def __len__(self) -> int:
        return len(self.heap)

    def set(self, cid: str, deadline: int | None) -> None:
        """``cid``'s deadline is now ``deadline`` (None: it has none)."""
        latest = self.latest
        if deadline is None or (self.horizon is not None and deadline > self.horizon):
            latest.pop(cid, None)  # its heap entry, if any, is stale now
            return
        if latest.get(cid) == deadline:
            return  # already indexed
        latest[cid] = deadline
        heapq.heappush(self.heap, (deadline, cid))
        if len(self.heap) > 2 * len(latest) + 1024:
            self.heap = [(d, c) for d, c in self.heap if latest.get(c) == d]
            heapq.heapify(self.heap)

    def pop_due(self, due_by: int) -> tuple[int, str] | None:
        """The earliest live deadline at or before ``due_by``, taken out; None if none."""
        heap, latest = self.heap, self.latest
        while heap and heap[0][0] <= due_by:
            deadline, cid = heapq.heappop(heap)
            if latest.get(cid) == deadline:
                del latest[cid]
                return deadline, cid
        return None

"""Validate-then-send: events from files or generators into the input topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from schemas.decode import Rejected, decode_obj
from schemas.events import epoch_ms
from touchstream.config import Settings
from touchstream.kafka import producer
from touchstream.security import kafka_options


@dataclass
class SendReport:
    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last offset + 1


def send_events(
    s: Settings,
    items: Iterable[tuple[int, Any]],
    progress: Console | None = None,
    raw_extra: Iterable[tuple[bytes | None, bytes]] = (),
    total: int | None = None,
) -> SendReport:
    """Send each valid object keyed by its customer_id. ``raw_extra`` are (key, value)
    pairs sent unvalidated (the demo's bad samples, to show the dead letters)."""
    report = SendReport()
    # The worker's own future bound, against the time of sending: caught here, not later.
    now_ms, skew_ms = epoch_ms(datetime.now(UTC)), int(s.max_future_skew_s * 1000)
    p = producer(s.bootstrap, kafka_options(s))
    futures = []
    bar = Progress(
        TextColumn("producing"),
        BarColumn(),
        MofNCompleteColumn(),
        console=progress,
        disable=progress is None,
        transient=False,
    )
    with bar:
        task = bar.add_task("produce", total=total)
        for line, obj in items:
            if isinstance(obj, Exception):
                report.rejected.append((line, f"not valid JSON: {obj}"))
                continue
            ev = decode_obj(obj, now_ms, skew_ms)
            if isinstance(ev, Rejected):
                report.rejected.append((line, ev.reason))
                continue
            futures.append(
                p.send(s.input_topic, key=ev.customer_id.encode(), value=orjson.dumps(obj))
            )
            report.sent += 1
            if report.sent % 2000 == 0:
                bar.update(task, completed=report.sent)
        for key, value in raw_extra:
            futures.append(p.send(s.input_topic, key=key, value=value))
        p.flush()
        bar.update(task, completed=report.sent)
    for f in futures:
        md = f.get(timeout=30)
        end = report.end_offsets
        end[md.partition] = max(end.get(md.partition, 0), md.offset + 1)
    p.close()
    return report

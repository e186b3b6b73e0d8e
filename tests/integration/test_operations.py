"""What operators see of a real worker: GET /metrics counts what was sent, GET /health
turns 503 while ClickHouse has been down longer than the limit and 200 again once it is
back, and with TOUCHSTREAM_LOG_FORMAT=json every log line is one JSON object."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from touchstream.config import Settings
from touchstream.datasets import sample_events
from touchstream.local_servers import ClickHouseServer, Tansu, free_port
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAILING_LIMIT_S = 2.0


@dataclass
class Ops:
    s: Settings
    ch: ClickHouseServer
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.s.web_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/health")
        return status, json.loads(body)

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Sample name -> labels -> value."""
        status, body = self.get("/metrics")
        assert status == 200
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    def until(self, what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
        """``probe()``'s first answer that is not None, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.log.read_text()[-3000:]}")
            try:
                got = probe()
            except (OSError, urllib.error.URLError) as e:  # the web server is not up yet
                got, last = None, e
            if got is not None:
                return got
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


@pytest.fixture(scope="module")
def ops(broker: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    tmp = tmp_path_factory.mktemp("ops")
    with ClickHouseServer(tmp / "ch") as ch:
        s = settings_for(broker, ch.url(unique("ops")), tmp, partitions=2).model_copy(
            update={
                "web_port": free_port(),
                "health_clickhouse_failing_s": FAILING_LIMIT_S,
                "log_format": "json",
            }
        )
        log = tmp / "worker.log"
        with running_worker(s, log) as proc:
            o = Ops(s, ch, proc, log)
            o.until("the worker ready", lambda: o.health()[1]["ready"] or None)
            yield o


def one(series: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float:
    return series[tuple(sorted(labels.items()))]


def test_metrics_count_the_events_sent_the_dead_letter_by_class_and_no_lag_after_the_drain(
    ops: Ops,
) -> None:
    events = list(sample_events(customers=12))
    report = send_events(ops.s, enumerate(events, 1), raw_extra=[(b"S00000", b"{not json")])
    wait_committed(ops.s, report.end_offsets, ops.proc, ops.log)

    def drained() -> dict[str, Any] | None:
        m = ops.metrics()
        lag = m.get("touchstream_consumer_lag", {})
        return m if len(lag) == 2 and not any(lag.values()) else None

    m = ops.until("consumer lag 0 on both partitions", drained)
    events_total = m["touchstream_events_total"]
    assert one(events_total, outcome="accepted") == len(events)
    assert one(events_total, outcome="rejected") == 1
    assert one(events_total, outcome="duplicate") == 0
    dead = m["touchstream_dead_letters_total"]
    assert one(dead, reason="malformed") == 1
    assert sum(dead.values()) == 1
    assert one(m["touchstream_clickhouse_rows_written_total"], table="events") == len(events)
    assert one(m["touchstream_clickhouse_rows_written_total"], table="dead_letters") == 1
    assert m["touchstream_customers"][()] == len({e["customer_id"] for e in events})
    assert m["touchstream_deadlines_pending"][()] > 0
    assert m["touchstream_batch_process_seconds_count"][()] >= 1
    assert one(m["touchstream_clickhouse_insert_seconds_count"], table="events") >= 1
    assert m["touchstream_partitions_assigned"][()] == 2
    assert m["touchstream_fatal_errors_total"][()] == 0
    status, body = ops.health()
    assert status == 200 and body["ready"] and body["partitions_assigned"] == 2
    assert body["last_batch_age_s"] is not None and body["last_clickhouse_write_age_s"] is not None


def test_health_turns_503_while_clickhouse_is_down_longer_than_the_limit_and_200_once_back(
    ops: Ops,
) -> None:
    events = list(sample_events(customers=4, seed=11))
    for e in events:
        e["event_id"] = f"outage-{e['event_id']}"
    ops.ch.stop()
    try:
        report = send_events(ops.s, enumerate(events, 1))

        def unhealthy() -> dict[str, Any] | None:
            status, body = ops.health()
            return body if status == 503 else None

        body = ops.until("GET /health 503", unhealthy)
        assert not body["healthy"] and body["clickhouse_failing_s"] > FAILING_LIMIT_S
        assert "ClickHouse writes have failed" in body["problems"][0]
        m = ops.metrics()
        assert m["touchstream_healthy"][()] == 0
        assert one(m["touchstream_clickhouse_insert_failures_total"], kind="transient") >= 1
        assert sum(m["touchstream_consumer_lag"].values()) > 0  # nothing committed meanwhile
    finally:
        ops.ch.start()
    ops.until("GET /health 200", lambda: ops.health()[0] == 200 or None, timeout=90)
    wait_committed(ops.s, report.end_offsets, ops.proc, ops.log)
    assert ops.health()[1]["clickhouse_failing_s"] is None


def test_json_logs_are_one_object_per_line_with_time_level_logger_and_message(ops: Ops) -> None:
    lines = [line for line in ops.log.read_text().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line
    entries = [json.loads(line) for line in lines]
    assert any(e["logger"] == "faust.worker" and "Ready" in e["message"] for e in entries)

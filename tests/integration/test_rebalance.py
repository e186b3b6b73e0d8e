"""Workers join and leave a running group while events flow: every rebalance revokes and
reassigns partitions under batches in flight. No worker may stop on its own, every
offset gets committed, and every event counts exactly once in ClickHouse. The first two
workers keep their table on RocksDB (partition databases closed at each revocation and
opened again, behind by what the others wrote meanwhile), the third in memory."""

from __future__ import annotations

import re
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from sinks import open_sink
from touchstream.kafka import committed_offsets, producer
from touchstream.localstack import ClickHouseServer, Tansu, stop_process

from .conftest import running_worker, settings_for, unique

pytestmark = pytest.mark.integration

START = datetime(2024, 1, 1, tzinfo=UTC)


class Stream:
    """Purchases of 200 customers at a steady rate, from a thread, until stopped."""

    def __init__(self, bootstrap: str, topic: str, per_second: float = 250) -> None:
        self.bootstrap, self.topic, self.interval = bootstrap, topic, 1 / per_second
        self.sent: list[dict[str, str]] = []
        self.end: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        p = producer(self.bootstrap)
        futures = []
        i = 0
        while not self._stop.is_set():
            e = {
                "event_id": f"e{i}",
                "customer_id": f"c{i % 200}",
                "type": "purchase",
                "occurred_at": (START + timedelta(minutes=i)).isoformat(),
                "amount": "1.00",
                "currency": "EUR",
            }
            futures.append(p.send(self.topic, key=e["customer_id"].encode(), value=orjson.dumps(e)))
            self.sent.append(e)
            i += 1
            time.sleep(self.interval)
        p.flush()
        for f in futures:
            md = f.get(timeout=30)
            self.end[md.partition] = max(self.end.get(md.partition, 0), md.offset + 1)
        p.close()

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def test_workers_joining_and_leaving_a_busy_group_crash_none_and_count_every_event_once(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    # One record per changelog batch: partitions move, and Tansu's wrong log end would
    # stop their table recovery early otherwise (docs/operations.md).
    s = settings_for(broker, clickhouse.url(unique("rebal")), tmp_path, partitions=6).model_copy(
        update={"producer_max_batch_size": 1}
    )
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]

    def worker(n: int):  # noqa: ANN202
        store = "rocksdict://" if n < 2 else "memory://"
        w = s.model_copy(update={"data_dir": str(tmp_path / f"worker-{n}"), "store": store})
        return running_worker(w, logs[n])

    def alive(procs: list, what: str) -> None:  # noqa: ANN001
        for n, proc in procs:
            assert proc.poll() is None, f"worker {n} exited {what}:\n" + logs[n].read_text()[-4000:]

    with ExitStack() as stack:
        first = stack.enter_context(worker(0))
        time.sleep(8)  # in the group before the data arrives
        with Stream(s.bootstrap, s.input_topic) as stream:
            time.sleep(10)
            second = stack.enter_context(worker(1))
            time.sleep(15)  # joined (Tansu holds a JoinGroup for half the session timeout)
            alive([(0, first), (1, second)], "after the second joined")
            third = stack.enter_context(worker(2))
            time.sleep(15)
            alive([(0, first), (1, second), (2, third)], "after the third joined")
            stop_process(second, 30)  # one leaves (SIGTERM: it commits and leaves the group)
            assert second.returncode == 0, logs[1].read_text()[-4000:]
            time.sleep(15)
        alive([(0, first), (2, third)], "after the second left")
        deadline = time.monotonic() + 300
        while True:
            done = committed_offsets(s.bootstrap, s.app_id, s.input_topic, stream.end)
            if all(done.get(p, 0) >= e for p, e in stream.end.items()):
                break
            alive([(0, first), (2, third)], "while the stream was drained")
            assert time.monotonic() < deadline, (
                f"committed {done} of {stream.end}:\n"
                + logs[0].read_text()[-3000:]
                + logs[2].read_text()[-3000:]
            )
            time.sleep(1)
        alive([(0, first), (2, third)], "at the end")
    events = stream.sent
    with open_sink(s.clickhouse_url) as sink:
        db = sink.database
        n_events = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
        states = {
            c: (v, p)
            for c, v, p in sink.query(
                f"SELECT customer_id, version, purchases FROM {db}.customer_state FINAL"
            )[1]
        }
        dead = sink.query(f"SELECT count() FROM {db}.dead_letters FINAL")[1][0][0]
    per_customer: dict[str, int] = {}
    for e in events:
        per_customer[e["customer_id"]] = per_customer.get(e["customer_id"], 0) + 1
    assert len(events) > 5000
    assert n_events == len(events)
    assert states == {c: (n, n) for c, n in per_customer.items()}  # each event applied once
    assert dead == 0
    texts = [log.read_text() for log in logs]
    for n, text in enumerate(texts):
        assert "We experienced a crash" not in text and "IllegalStateError" not in text, n
    # The group did rebalance: the first worker saw later generations than its first.
    assert max(int(g) for g in re.findall(r"\(generation (\d+)\)", texts[0])) >= 2

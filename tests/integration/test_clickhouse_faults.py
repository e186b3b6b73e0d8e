"""ClickHouse frozen (SIGSTOP) for 30 s mid-stream, then killed and restarted: the worker
waits with its offsets uncommitted, never exits, catches up, and in the end every event
counts exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from touchstream.local_servers import ClickHouseServer, Tansu, stop_process

from .conftest import settings_for, spawn_worker, unique
from .faults import clean_logs, committed, drain, progress, touchpoints, wait_for
from .streams import Stream
from .verify import verify

pytestmark = pytest.mark.integration

FROZEN_S = 30


def test_clickhouse_frozen_for_30_s_then_killed_and_restarted_delays_the_stream_and_loses_nothing(
    broker: Tansu, tmp_path: Path
) -> None:
    logs = [tmp_path / "worker.log"]
    with ClickHouseServer(tmp_path / "ch") as ch:
        s = settings_for(broker, ch.url(unique("chfault")), tmp_path)
        all_offsets = dict.fromkeys(range(s.partitions), 10**12)
        proc = spawn_worker(s, logs[0])
        try:
            with Stream(s.bootstrap, s.input_topic, touchpoints(10**6, 400, seed=9), 300) as stream:
                progress(s, [proc], logs)
                # Frozen: connections stay open and every request hangs (a stalled server,
                # not a refused connection).
                ch.proc.send_signal(signal.SIGSTOP)
                try:
                    frozen_at = time.monotonic()
                    # Batches whose writes were done before the freeze may still commit
                    # (commits run every few seconds); none after that.
                    wait_for(
                        "alive 10 s into the freeze",
                        lambda: time.monotonic() - frozen_at >= 10,
                        [proc],
                        logs,
                        FROZEN_S,
                    )
                    during = committed(s, all_offsets)
                    wait_for(
                        f"alive {FROZEN_S} s into the freeze",
                        lambda: time.monotonic() - frozen_at >= FROZEN_S,
                        [proc],
                        logs,
                        FROZEN_S + 5,
                    )
                    assert committed(s, all_offsets) == during, (
                        "offsets were committed while ClickHouse was frozen"
                    )
                    assert stream.count > during, "nothing was waiting: the freeze held nothing up"
                finally:
                    ch.proc.send_signal(signal.SIGCONT)
                progress(s, [proc], logs)
                # Killed and started again (same data, same ports): writes fail until it
                # is back, and are retried.
                failures = logs[0].read_text().count("ClickHouse write failed")
                ch.proc.kill()
                ch.proc.wait(30)
                # Down until the worker has failed (and kept) three writes of its batches.
                wait_for(
                    "retrying its writes",
                    lambda: logs[0].read_text().count("ClickHouse write failed") >= failures + 3,
                    [proc],
                    logs,
                    60,
                )
                ch.start()
                progress(s, [proc], logs)
                stream.stop()
            drain(s, stream.end, [proc], logs)
        finally:
            stop_process(proc, 30)
        assert proc.returncode == 0, "the worker must keep running until it is stopped"
        report = verify(s.clickhouse_url, s.input_topic, stream.sent)
    assert report.events > 10_000  # 300 a second through both faults
    assert "ClickHouse write failed" in logs[0].read_text()
    clean_logs(logs)

"""Workers join and leave a running group while events flow: every rebalance revokes and
reassigns partitions under batches in flight. No worker may stop on its own, every
offset gets committed, and every event counts exactly once in ClickHouse, whether the
worker that goes leaves the group (SIGTERM) or is killed (SIGKILL) and its partitions
wait out the session timeout. The first two workers keep their table on RocksDB
(partition databases closed at each revocation and opened again, behind by what the
others wrote meanwhile), the third in memory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from touchstream.local_servers import ClickHouseServer, Tansu, stop_process

from .conftest import running_worker, settings_for, unique
from .faults import clean_logs, drain, generation, kill9, progress, settled, touchpoints, wait_for
from .streams import Stream
from .verify import verify

pytestmark = pytest.mark.integration


def leave_by_sigterm(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 30)  # it commits and leaves the group
    assert proc.returncode == 0


def group_under_load(
    broker: Tansu,
    clickhouse: ClickHouseServer,
    tmp_path: Path,
    initial: int,
    leave: Callable[[subprocess.Popen[bytes]], None],
) -> list[Path]:
    """``initial`` workers (started together), then more join one by one up to three while
    events stream in; then the second one goes by ``leave``. Drained and verified;
    returns the logs."""
    # One record per changelog batch: partitions move, and Tansu's wrong log end would
    # stop their table recovery early otherwise (docs/operations.md).
    s = settings_for(broker, clickhouse.url(unique("rebal")), tmp_path, partitions=6).model_copy(
        update={"producer_max_batch_size": 1, "session_timeout_s": 6.0}
    )
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    topic, n_parts = s.input_topic, s.partitions
    took: dict[str, float] = {}
    with ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []

        def join(k: int = 1) -> None:
            """``k`` more workers, started at once; until the group has settled."""
            n = len(procs)
            before = max((generation(log) for log in logs[:n]), default=-1)
            for m in range(n, n + k):
                store = "rocksdict://" if m < 2 else "memory://"
                w = s.model_copy(update={"data_dir": str(tmp_path / f"worker-{m}"), "store": store})
                procs.append(stack.enter_context(running_worker(w, logs[m])))
            took[f"join {n}"] = wait_for(
                f"a group of {n + k} sharing the partitions",
                lambda: settled(logs[: n + k], topic, n_parts, before),
                procs,
                logs,
                120,
            )

        join(initial)
        stream = stack.enter_context(
            Stream(s.bootstrap, topic, touchpoints(10**6, 300, seed=initial), per_second=250)
        )
        took["progress"] = progress(s, procs, logs)
        while len(procs) < 3:
            join()
            took[f"progress {len(procs)}"] = progress(s, procs, logs)
        gone, rest = procs[1], [procs[0], procs[2]]
        before = max(generation(log) for log in logs)
        leave(gone)
        assert gone.returncode in (0, -9), gone.returncode  # it went the way it was sent
        took["leave"] = wait_for(
            "the other two sharing the partitions",
            lambda: settled([logs[0], logs[2]], topic, n_parts, before),
            rest,
            logs,
            120,
        )
        took["progress after"] = progress(s, rest, logs)
        stream.stop()
        took["drain"] = drain(s, stream.end, rest, logs)
        for proc in rest:
            assert proc.poll() is None, "a worker stopped on its own"
    report = verify(s.clickhouse_url, topic, stream.sent)
    assert report.events > 2000
    clean_logs(logs)
    print({k: round(v, 1) for k, v in took.items()}, f"{report.events} events")
    return logs


def test_workers_joining_and_leaving_a_busy_group_crash_none_and_count_every_event_once(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    logs = group_under_load(broker, clickhouse, tmp_path, 1, leave_by_sigterm)
    # The group did rebalance: the first worker saw later generations than its first.
    assert generation(logs[0]) >= 3  # Tansu counts from 0


def test_a_worker_killed_in_a_busy_group_of_three_loses_and_doubles_nothing(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    logs = group_under_load(broker, clickhouse, tmp_path, 2, kill9)
    assert generation(logs[0]) >= 2

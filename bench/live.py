"""What the latency and CDNOW jobs share: one real `touchstream worker` process writing to
a real ClickHouse server, and a poller that sees, from outside, when rows are queryable.

``live_worker`` starts Debian's ClickHouse server (18.16 here, clickhouse-driver: an
outside reader cannot see chdb, which lives inside the worker process) on free ports
with its own data directory, runs ``touchstream migrate`` (tables and topics), then one
``touchstream worker`` subprocess with TOUCHSTREAM_CLOCK=event. ``warm_up`` sends one
malformed message to each input partition and waits until the worker has written their
dead letters: from then on it holds every partition and writes, so the measurements do
not include interpreter start, group join (Tansu holds a JoinGroup for half the session
timeout) or the first batch; and no customer or event row is made by the warm-up.

``OffsetPoller`` asks ClickHouse ``SELECT kafka_partition, max(kafka_offset) FROM
<db>.events GROUP BY kafka_partition`` every ``period`` seconds in a thread. An event is
queryable once its partition's max offset reached its offset (the worker inserts a
batch's event rows in one block, in offset order per partition), so its time in
ClickHouse is known to within one poll period plus one query.

The pure helpers (``coverage_latencies``, ``backlog_at``, ``percentiles``) have unit
tests (tests/unit/test_bench_helpers.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from touchstream.config import Settings

ROOT = Path(__file__).resolve().parents[1]

# (time.monotonic() after the answer, partition -> max offset)
Poll = tuple[float, Mapping[int, int]]


# --- pure helpers ----------------------------------------------------------------------


def percentiles(xs: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of ``xs`` (``p50``, ...) and ``max``; {} for no data."""
    if not xs:
        return {}
    s = sorted(xs)
    n = len(s)
    out = {}
    for q in qs:
        rank = max(1, -(-q * n // 100))  # ceil(q/100 * n), at least 1
        out[f"p{q:g}"] = s[min(n, int(rank)) - 1]
    out["max"] = s[-1]
    return out


def _by_partition(sends: Mapping[tuple[int, int], float]) -> dict[int, list[tuple[int, float]]]:
    parts: dict[int, list[tuple[int, float]]] = {}
    for (p, o), t in sends.items():
        parts.setdefault(p, []).append((o, t))
    for v in parts.values():
        v.sort()
    return parts


def coverage_latencies(
    sends: Mapping[tuple[int, int], float], polls: Sequence[Poll]
) -> tuple[dict[tuple[int, int], float], int]:
    """For each sent event ((partition, offset) -> send time), the first poll whose max
    offset of that partition reached its offset, minus its send time; and how many events
    no poll covered."""
    ordered = sorted(polls, key=lambda x: x[0])
    out: dict[tuple[int, int], float] = {}
    missing = 0
    for p, items in _by_partition(sends).items():
        i = 0
        for t, maxes in ordered:
            m = maxes.get(p, -1)
            while i < len(items) and items[i][0] <= m:
                out[(p, items[i][0])] = t - items[i][1]
                i += 1
            if i == len(items):
                break
        missing += len(items) - i
    return out, missing


def backlog_at(sends: Mapping[tuple[int, int], float], polls: Sequence[Poll], at: float) -> int:
    """Events sent by ``at`` that the last poll answered by ``at`` did not see in
    ClickHouse: the worker's backlog then, as an outside reader sees it."""
    seen: Mapping[int, int] = {}
    for t, maxes in polls:
        if t <= at:
            seen = maxes
    return sum(1 for (p, o), t in sends.items() if t <= at and o > seen.get(p, -1))


# --- the live pipeline -----------------------------------------------------------------


@dataclass
class LiveWorker:
    settings: Any  # touchstream.config.Settings
    proc: subprocess.Popen[bytes]
    log: Path
    ch_port: int
    database: str
    spawned: float  # time.monotonic() at spawn

    def client(self) -> Any:
        from clickhouse_driver import Client

        return Client(
            host="127.0.0.1",
            port=self.ch_port,
            database=self.database,
            connect_timeout=5,
            send_receive_timeout=60,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            from bench.common import tail

            raise RuntimeError(
                f"the worker exited with code {self.proc.returncode}; log "
                f"{self.log}:\n{tail(self.log)}"
            )


def worker_env(s: Settings) -> dict[str, str]:
    """TOUCHSTREAM_* for the worker and migrate (as tests/integration/conftest.worker_env),
    and the event clock."""
    return s.environment(
        (
            "broker",
            "clickhouse_url",
            "app_id",
            "input_topic",
            "dlq_topic",
            "alerts_topic",
            "transitions_topic",
            "partitions",
            "data_dir",
            "batch_within_s",
            "clock",
            "web_port",
        )
    )


@contextmanager
def live_worker(
    broker_url: str, workdir: Path, partitions: int = 8, batch_within_s: float | None = None
) -> Iterator[LiveWorker]:
    """A ClickHouse server, ``touchstream migrate``, one worker process; all stopped on
    exit. The worker's log is ``workdir / "worker.log"``."""
    from bench.common import tail
    from touchstream.config import Settings
    from touchstream.local_servers import ClickHouseServer, free_port, stop_process

    workdir.mkdir(parents=True, exist_ok=True)
    name = f"bench_live_{uuid.uuid4().hex[:8]}"
    with ClickHouseServer(workdir / "clickhouse") as ch:
        extra: dict[str, Any] = {}
        if batch_within_s is not None:
            extra["batch_within_s"] = batch_within_s
        s = Settings(
            broker=broker_url,
            clickhouse_url=ch.url(name),
            app_id=name.replace("_", "-"),
            input_topic=f"{name}.in",
            dlq_topic=f"{name}.dlq",
            alerts_topic=f"{name}.alerts",
            transitions_topic=f"{name}.transitions",
            partitions=partitions,
            data_dir=str(workdir / "worker"),
            clock="event",
            web_port=free_port(),
            # No scheduled churn fit: it is a separate process that takes a core for
            # minutes on this 2-core machine, not the stream's own latency.
            fit_interval_s=0,
            **extra,
        )
        env = worker_env(s)
        r = subprocess.run(
            [sys.executable, "-m", "touchstream.cli", "migrate"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"touchstream migrate failed:\n{r.stdout}\n{r.stderr}")
        log = workdir / "worker.log"
        spawned = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "touchstream.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            yield LiveWorker(s, proc, log, ch.port, name, spawned)
        finally:
            stop_process(proc, 30)
            if proc.returncode not in (0, -15):
                print(
                    f"worker exit code {proc.returncode}; log tail:\n{tail(log, 1500)}",
                    file=sys.stderr,
                )


def keys_by_partition(partitions: int, prefix: str = "warmup") -> dict[int, bytes]:
    """One key per partition under Kafka's default (murmur2) partitioner."""
    from agents.records import key_partition

    out: dict[int, bytes] = {}
    i = 0
    while len(out) < partitions:
        k = f"{prefix}-{i}".encode()
        out.setdefault(key_partition(k, partitions), k)
        i += 1
    return out


async def _send_raw(bootstrap: str, topic: str, items: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k) for k, v in items]
        return [await f for f in futs]
    finally:
        await p.stop()


def warm_up(lw: LiveWorker, timeout: float = 180) -> float:
    """One malformed message per partition; wait until the worker wrote all their dead
    letters. Seconds from the worker's spawn to then."""
    s = lw.settings
    keys = keys_by_partition(s.partitions)
    asyncio.run(
        _send_raw(
            s.bootstrap, s.input_topic, [(k, b"bench warm-up: not an event") for k in keys.values()]
        )
    )
    client = lw.client()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            lw.check_alive()
            rows = client.execute(
                f"SELECT DISTINCT partition FROM {lw.database}.dead_letters "
                f"WHERE topic = '{s.input_topic}'"
            )
            if len(rows) >= s.partitions:
                return time.monotonic() - lw.spawned
            time.sleep(0.1)
    finally:
        client.disconnect()
    from bench.common import tail

    raise TimeoutError(
        f"the worker wrote no warm-up dead letters in {timeout:.0f}s; log {lw.log}:\n{tail(lw.log)}"
    )


class OffsetPoller:
    """Polls the events table's max offset per partition in a thread (module doc)."""

    def __init__(self, lw: LiveWorker, period: float = 0.05) -> None:
        self.lw, self.period = lw, period
        self.polls: list[Poll] = []
        self.query_s: list[float] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="offset-poller", daemon=True)
        self.sql = (
            f"SELECT kafka_partition, max(kafka_offset) FROM {lw.database}.events "
            "GROUP BY kafka_partition"
        )

    def _run(self) -> None:
        client = self.lw.client()
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                rows = client.execute(self.sql)
                t1 = time.monotonic()
                self.polls.append((t1, {int(p): int(o) for p, o in rows}))
                self.query_s.append(t1 - t0)
                self._stop.wait(max(0.0, self.period - (t1 - t0)))
        except BaseException as e:
            self._error = e
        finally:
            client.disconnect()

    def latest(self) -> Mapping[int, int]:
        if self._error is not None:
            raise RuntimeError(f"ClickHouse poller failed: {self._error!r}")
        return self.polls[-1][1] if self.polls else {}

    def covers(self, end: Mapping[int, int]) -> bool:
        """Every partition's events up to ``end`` (partition -> last offset + 1) seen."""
        seen = self.latest()
        return all(seen.get(p, -1) >= e - 1 for p, e in end.items() if e > 0)

    def __enter__(self) -> OffsetPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_covers(
        self, end: Mapping[int, int], timeout: float, on_progress: Any = None
    ) -> float | None:
        """Block until ``covers(end)``: the time of the first poll that saw it (None: not
        within ``timeout``). Fails if the worker exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.lw.check_alive()
            if self.covers(end):
                return self.polls[-1][0]
            if on_progress is not None:
                seen = self.latest()
                on_progress(sum(min(seen.get(p, -1) + 1, e) for p, e in end.items()))
            time.sleep(self.period)
        return None


def process_figures(pid: int) -> dict[str, float | None]:
    """The worker's VmRSS and VmHWM (MB) and CPU seconds so far."""
    from bench.common import cpu_seconds

    out: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None, "cpu_s": cpu_seconds(pid)}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out

"""``python -m bench``: events per second of touchstream against the practical limit and
its peers, on this machine, in one run.

The input is made once (``--mix``):

  retail       the default, the headline figures: a retailer's customers, each buying in
               a steady but irregular rhythm of its own (mean gap gamma-distributed over
               the customers, amounts lognormal), a few percent service calls,
               complaints (opened, most resolved later by complaint_id), refunds and
               surveys; about one lifecycle transition per 50 events
  purchase     uniform purchases over a year, about 10 per customer: customers decline and
               recover far more often than in a real stream, a stress case
  sim          touchstream simulate's planted defectors (first N events): a stress case too

The processor job prints the transitions and alerts per 1,000 events of the mix, and its
garbage collection pauses per generation (``--gc worker``: under the worker's settings).

One Tansu broker (free port) serves every job; each job reads its
own topic (``--partitions`` partitions, produced once with aiokafka), each run with a
fresh consumer group, one job at a time:

  raw          aiokafka consumer group + orjson.loads of every value: the practical limit
  faust-naive  a minimal Faust app, per-event table update (bench/faust_naive.py)
  quix         Quix Streams, same aggregation, RocksDB state (bench/quix_job.py)
  faust-same   the naive Faust app running touchstream's own per-event logic (decode and
               validate, the customer's encoded state decoded, the domain's step, encoded
               and stored: bench/same.py), no ClickHouse (bench/faust_same.py)
  quix-same    Quix Streams running the same logic, the encoded state in its RocksDB
               state (bench/quix_same.py); each same-logic run's final states are read
               back from its changelog and checked against the processor's
  touchstream  the real `touchstream worker` (embedded chdb sink), every offset committed
               (which happens only after the batch's rows reached ClickHouse)
  touchstream-ch  the same worker writing to a ClickHouse server (Debian's 18.16, started
               by the bench) through clickhouse-driver: the production path
  touchstream-2w  two such workers in one group, sharing the partitions
  processor    agents.processor.Processor in process over the same messages (no Kafka, no
               ClickHouse), once: the hot path alone, and the state bytes per customer

Opt-in jobs, run only when named in --only (bench/extra.py): latency (event -> ClickHouse
and -> alert at --rate, default half of this run's touchstream median), cdnow (CDNOW to
queryable in a ClickHouse server), scale (state RSS for --scale-customers customers).

Subprocess jobs are timed from their consumer group's committed offsets (polled every
0.2 s): from the first commit seen to the last, so interpreter start, group join and
recovery stay out of the figure. Timings on a shared machine are noisy: medians, ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from bench.common import (
    MIXES,
    Input,
    create_topic,
    default_customers,
    gc_pauses,
    loadavg,
    machine,
    make_input,
    median,
    pause_summary,
    produce,
    stop,
    tail,
    wait_committed,
    worker_gc,
)
from bench.extra import EXTRA_JOBS, details, run_extra

if TYPE_CHECKING:
    from touchstream.config import Settings

ROOT = Path(__file__).resolve().parents[1]
JOBS = (
    "raw",
    "faust-naive",
    "faust-same",
    "quix",
    "quix-same",
    "touchstream",
    "touchstream-ch",
    "touchstream-2w",
    "processor",
)
console = Console(width=None if sys.stdout.isatty() else 130)


@dataclass
class Run:
    events_per_s: float
    method: str
    wall_s: float | None = None  # spawn (or consumer start) to done, startup included
    peak_rss_mb: float | None = None
    cpu_us_per_event: float | None = None  # the job process's CPU, all threads


@dataclass
class JobResult:
    name: str
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return median([r.events_per_s for r in self.runs]) if self.runs else None

    @property
    def cpu(self) -> float | None:
        """Median CPU µs per event of the runs that have it."""
        xs = [r.cpu_us_per_event for r in self.runs if r.cpu_us_per_event is not None]
        return median(xs) if xs else None


@dataclass
class Ctx:
    bootstrap: str
    broker_url: str
    inp: Input
    workdir: Path
    timeout: float
    quix_python: str
    notes: dict[str, float] = field(default_factory=dict)
    worker_gc: bool = False  # the processor job under the worker's GC settings
    gc_pauses: dict[int, list[float]] = field(default_factory=dict)  # the processor job's
    clickhouse: Any = None  # a ClickHouseServer, started by the first job that needs it
    # The same-logic peers' customers, read back from their changelogs, per job and run.
    same: dict[str, list[Any]] = field(default_factory=dict)
    processor_table: dict[str, bytes] | None = None  # the processor job's final states

    @property
    def gc_label(self) -> str:
        return "the worker's GC settings" if self.worker_gc else "CPython's GC defaults"

    def clickhouse_server(self) -> Any:
        from touchstream.local_servers import ClickHouseServer

        if self.clickhouse is None:
            self.clickhouse = ClickHouseServer(self.workdir / "clickhouse")
        return self.clickhouse


# --- jobs ------------------------------------------------------------------------------


async def _raw(bootstrap: str, topic: str, total: int) -> Run:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
    )
    t_start = time.monotonic()
    await c.start()
    try:
        # The clock starts when the first fetch has been handled; the messages of that
        # fetch are not counted (the time to fetch them was not measured).
        n, first, counted = 0, None, 0
        loads = orjson.loads
        while n < total:
            batch = await c.getmany(timeout_ms=500, max_records=2_000)
            for msgs in batch.values():
                for m in msgs:
                    loads(m.value)
                n += len(msgs)
            if n and first is None:
                first, counted, cpu0 = time.monotonic(), n, time.process_time()
        last, cpu1 = time.monotonic(), time.process_time()
    finally:
        await c.stop()
    assert first is not None
    if total - counted < total / 2:  # input too small for the first fetch to be left out
        return Run(
            total / (last - t_start), "consumer start to last (small input)", wall_s=last - t_start
        )
    return Run(
        (total - counted) / (last - first),
        "after the first fetch, to the last",
        wall_s=last - t_start,
        cpu_us_per_event=(cpu1 - cpu0) / (total - counted) * 1e6,
    )


def job_raw(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return asyncio.run(_raw(ctx.bootstrap, topic, sum(end.values())))


def _spawn(cmd: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _measure(
    ctx: Ctx,
    name: str,
    i: int,
    cmd: list[str],
    env: dict[str, str] | list[dict[str, str]] | None,
    group: str,
    topic: str,
    end: dict[int, int],
    log: Path,
) -> Run:
    """Spawn the job (one process per env when ``env`` is a list: workers of one group)
    and time it by its group's commits."""
    total = sum(end.values())
    envs = env if isinstance(env, list) else [env]
    logs = [log] if len(envs) == 1 else [log.with_suffix(f".{k}") for k in range(len(envs))]
    started = time.monotonic()
    procs = [_spawn(cmd, e, lg) for e, lg in zip(envs, logs, strict=True)]
    try:
        with console.status(f"{name} run {i + 1}: starting") as status:

            def show(done: int, total: int) -> None:
                status.update(
                    f"{name} run {i + 1}: {done:,} / {total:,} committed, "
                    f"{time.monotonic() - started:.0f}s"
                )

            prog = wait_committed(
                ctx.bootstrap,
                group,
                topic,
                end,
                procs,
                started,
                ctx.timeout,
                logs[0],
                on_progress=show,
            )
    finally:
        for proc in procs:
            stop(proc)
    rate, method = prog.rate(total)
    assert prog.done is not None
    return Run(
        rate,
        method,
        wall_s=prog.done - started,
        peak_rss_mb=prog.peak_rss / 2**20 if prog.peak_rss else None,
        cpu_us_per_event=prog.cpu_us_per_event(total),
    )


def _run_faust(
    ctx: Ctx, name: str, topic: str, end: dict[int, int], i: int, *extra: str
) -> tuple[Run, str]:
    """``python -m bench.<name>`` (a Faust peer), measured; returns its app id too."""
    run_dir = ctx.workdir / f"{name}-{i}"
    run_dir.mkdir(parents=True)
    app_id = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable,
        "-m",
        f"bench.{name.replace('-', '_')}",
        "--broker",
        ctx.broker_url,
        "--topic",
        topic,
        "--app-id",
        app_id,
        "--datadir",
        str(run_dir / "data"),
        "--partitions",
        str(ctx.inp.partitions),
        *extra,
    ]
    return _measure(ctx, name, i, cmd, None, app_id, topic, end, run_dir / "log"), app_id


def job_faust_naive(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return _run_faust(ctx, "faust-naive", topic, end, i)[0]


def lateness_ms() -> int:
    """The worker's allowed lateness (its default setting), as the processor job uses."""
    from touchstream.config import Settings

    return int(Settings.model_fields["lateness_s"].default * 1000)


async def _read_topic(bootstrap: str, topic: str, idle_s: float) -> list[tuple[Any, Any]]:
    """Every record of ``topic`` from the start, (key, value), until nothing more comes
    for ``idle_s`` (Tansu's ListOffsets(latest) cannot be trusted for the end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[tuple[Any, Any]] = []
        quiet = time.monotonic()
        while time.monotonic() - quiet < idle_s:
            batch = await c.getmany(timeout_ms=500, max_records=10_000)
            for msgs in batch.values():
                out.extend((m.key, m.value) for m in msgs)
            if batch:
                quiet = time.monotonic()
        return out
    finally:
        await c.stop()


def changelog_customers(bootstrap: str, topic: str, idle_s: float = 3.0) -> dict[str, Any]:
    """A same-logic peer's customers (``bench.same.figures``) from its table's changelog:
    the last value of each key, touchstream's encoded state."""
    from bench.same import figures, last_values

    return figures(last_values(asyncio.run(_read_topic(bootstrap, topic, idle_s))))


def quix_changelog(bootstrap: str, group: str) -> str:
    """The changelog topic Quix Streams made for ``group``'s state."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        names = [t for t in admin.list_topics() if t.startswith("changelog") and group in t]
    finally:
        admin.close()
    if len(names) != 1:
        raise RuntimeError(f"no single changelog topic of {group}: {names}")
    return names[0]


def job_faust_same(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    run, app_id = _run_faust(ctx, "faust-same", topic, end, i, "--lateness-ms", str(lateness_ms()))
    with console.status("faust-same: reading its changelog back"):
        got = changelog_customers(ctx.bootstrap, f"{app_id}-customers-changelog")
    ctx.same.setdefault("faust-same", []).append(got)
    return run


def quix_unavailable(python: str) -> str | None:
    """Why Quix Streams cannot run under ``python`` (None: it can)."""
    r = subprocess.run(
        [
            python,
            "-c",
            "import quixstreams, confluent_kafka; "
            "print(quixstreams.__version__, confluent_kafka.libversion()[0])",
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"quixstreams does not import under {python} ({last}). It pins "
            "pydantic<2.14 and pydantic-settings<2.16, which touchstream's environment "
            "does not accept: install it in its own venv (python -m venv /tmp/venv-quix"
            " && /tmp/venv-quix/bin/pip install quixstreams) and pass --quix-python "
            "/tmp/venv-quix/bin/python"
        )
    return None


def _run_quix(
    ctx: Ctx, name: str, script: str, topic: str, end: dict[int, int], i: int, *extra: str
) -> tuple[Run, str]:
    """A bench/ Quix script under ``--quix-python``, measured; returns its group too."""
    run_dir = ctx.workdir / f"{name}-{i}"
    run_dir.mkdir(parents=True)
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    cmd = [
        ctx.quix_python,
        str(ROOT / "bench" / script),
        "--bootstrap",
        ctx.bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--state-dir",
        str(run_dir / "state"),
        *extra,
    ]
    return _measure(ctx, name, i, cmd, None, group, topic, end, run_dir / "log"), group


def job_quix(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return _run_quix(ctx, "quix", "quix_job.py", topic, end, i)[0]


def quix_same_unavailable(python: str) -> str | None:
    """Why bench/quix_same.py cannot run under ``python`` (None: it can): quixstreams,
    and touchstream's contract and domain imported from this checkout."""
    if why := quix_unavailable(python):
        return why
    r = subprocess.run(
        [
            python,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import bench.same",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"touchstream's domain does not import under {python} ({last}): install "
            "what it needs there (/tmp/venv-quix/bin/pip install --no-deps -e . orjson; "
            "pydantic comes with quixstreams), see docs/benchmarks.md"
        )
    return None


def job_quix_same(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    run, group = _run_quix(
        ctx, "quix-same", "quix_same.py", topic, end, i, "--lateness-ms", str(lateness_ms())
    )
    with console.status("quix-same: reading its changelog back"):
        got = changelog_customers(ctx.bootstrap, quix_changelog(ctx.bootstrap, group))
    ctx.same.setdefault("quix-same", []).append(got)
    return run


def touchstream_env(s: Settings) -> dict[str, str]:
    """TOUCHSTREAM_* for a worker process (as tests/integration/conftest.worker_env)."""
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
        )
    )


def _touchstream(
    ctx: Ctx,
    topic: str,
    end: dict[int, int],
    i: int,
    label: str,
    sink: str = "chdb",
    workers: int = 1,
) -> Run:
    from touchstream.config import Settings
    from touchstream.kafka import ensure_topics

    name = f"bench-ts-{uuid.uuid4().hex[:8]}"
    run_dir = ctx.workdir / f"{label}-{i}"
    run_dir.mkdir(parents=True)
    url = (
        f"chdb://{(run_dir / 'chdb').resolve()}"
        if sink == "chdb"
        else ctx.clickhouse_server().url(name.replace("-", "_"))
    )
    s = Settings(
        broker=ctx.broker_url,
        clickhouse_url=url,
        app_id=name,
        input_topic=topic,
        dlq_topic=f"{name}.dlq",
        alerts_topic=f"{name}.alerts",
        transitions_topic=f"{name}.transitions",
        partitions=ctx.inp.partitions,
        data_dir=str(run_dir / "worker"),
    )
    ensure_topics(
        s.bootstrap, dict.fromkeys((s.dlq_topic, s.alerts_topic, s.transitions_topic), s.partitions)
    )
    envs = [
        touchstream_env(s.model_copy(update={"data_dir": f"{s.data_dir}-{k}"}))
        for k in range(workers)
    ]
    cmd = [sys.executable, "-m", "touchstream.cli", "worker"]
    return _measure(ctx, label, i, cmd, envs, s.app_id, topic, end, run_dir / "log")


def job_touchstream(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return _touchstream(ctx, topic, end, i, "touchstream")


def job_touchstream_server(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return _touchstream(ctx, topic, end, i, "touchstream-ch", sink="server")


def job_touchstream_two(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    return _touchstream(ctx, topic, end, i, "touchstream-2w", sink="server", workers=2)


@dataclass
class Replay:
    """What an in-process replay of the input through the processor gives."""

    events_per_s: float
    table: dict[str, bytes]
    rows: int  # ClickHouse rows produced
    cpu_us: float  # CPU microseconds per event
    transitions: int  # lifecycle transitions sent (the transitions topic)
    alerts: int  # churn alerts sent
    gc_pauses: dict[int, list[float]]  # generation -> seconds of each collection

    def per_1000(self, n: int) -> tuple[float, float]:
        """Transitions and alerts per 1,000 events."""
        return self.transitions * 1000 / max(1, n), self.alerts * 1000 / max(1, n)


def replay_processor(
    inp: Input, batch: int = 5000, profiler: Any = None, gc_as_worker: bool = False
) -> Replay:
    """The worker's hot path in process over the input, batches of ``batch`` (the
    worker's batch_max), a dict as the table; every garbage collection timed.
    ``gc_as_worker``: the worker's GC settings (touchstream/cli.py), else CPython's."""
    from agents.metrics import after_batch
    from agents.processor import Processor
    from agents.records import RawMessage, Stored
    from touchstream.config import Settings
    from touchstream.domain.lifecycle import Rules

    lateness = Settings.model_fields["lateness_s"].default
    proc = Processor(Rules(allowed_lateness_ms=int(lateness * 1000)))
    table: dict[str, bytes] = {}

    def scan(p: int):
        return [(c, raw) for c, raw in table.items() if Stored.partition_of(raw) == p]

    msgs = [
        RawMessage("touchpoints", p, o, k, v)
        for (k, v), (p, o) in zip(inp.messages, inp.placement, strict=True)
    ]
    rows = rejected = transitions = alerts = 0
    with worker_gc(gc_as_worker), gc_pauses() as pauses:
        cpu0, t0 = time.process_time(), time.perf_counter()
        for j in range(0, len(msgs), batch):
            chunk, now = msgs[j : j + batch], datetime.now(UTC)
            if profiler is not None:
                profiler.enable()
            r = proc.process(chunk, table.get, now, scan)
            if profiler is not None:
                profiler.disable()
            table.update(r.states)
            if gc_as_worker:
                after_batch()
            rows += sum(len(v) for v in r.rows.values())
            rejected += r.rejected
            transitions += len(r.transitions)
            alerts += len(r.alerts)
        elapsed = time.perf_counter() - t0
        cpu_us = (time.process_time() - cpu0) / max(1, len(msgs)) * 1e6
    if rejected:
        raise RuntimeError(f"the processor rejected {rejected} bench messages")
    return Replay(len(msgs) / elapsed, table, rows, cpu_us, transitions, alerts, pauses)


def job_processor(ctx: Ctx, topic: str, end: dict[int, int], i: int) -> Run:
    with console.status(f"processor: replaying {ctx.inp.n:,} events in process"):
        r = replay_processor(ctx.inp, gc_as_worker=ctx.worker_gc)
    ctx.notes["state_bytes"] = sum(map(len, r.table.values())) / max(1, len(r.table))
    ctx.notes["rows_per_event"] = r.rows / max(1, ctx.inp.n)
    ctx.notes["transitions_per_1000"], ctx.notes["alerts_per_1000"] = r.per_1000(ctx.inp.n)
    ctx.notes["gc_seconds"] = sum(map(sum, r.gc_pauses.values()))
    ctx.notes["replay_seconds"] = ctx.inp.n / r.events_per_s
    ctx.gc_pauses = r.gc_pauses
    ctx.processor_table = r.table
    for g, line in pause_summary(r.gc_pauses).items():
        console.print(f"processor GC generation {g} ({ctx.gc_label}): {line}")
    return Run(r.events_per_s, "in process, perf_counter", cpu_us_per_event=r.cpu_us)


RUNNERS: dict[str, Callable[[Ctx, str, dict[int, int], int], Run]] = {
    "raw": job_raw,
    "faust-naive": job_faust_naive,
    "faust-same": job_faust_same,
    "quix": job_quix,
    "quix-same": job_quix_same,
    "touchstream": job_touchstream,
    "touchstream-ch": job_touchstream_server,
    "touchstream-2w": job_touchstream_two,
    "processor": job_processor,
}


def naive_state_bytes(inp: Input) -> float:
    """Bytes per customer of the peers' table value (JSON {count, sum, last})."""
    agg: dict[str, dict[str, object]] = {}
    for _, v in inp.messages:
        e = orjson.loads(v)
        s = agg.get(e["customer_id"]) or {"count": 0, "sum": 0.0, "last": ""}
        agg[e["customer_id"]] = {
            "count": s["count"] + 1,  # type: ignore[operator]
            "sum": s["sum"] + float(e.get("amount") or 0),  # type: ignore[operator]
            "last": max(s["last"], e["occurred_at"]),
        }  # type: ignore[type-var]
    return sum(len(orjson.dumps(a)) for a in agg.values()) / max(1, len(agg))


def check_same(ctx: Ctx, results: dict[str, JobResult], extra: dict[str, object]) -> None:
    """Every same-logic run's customers against the processor's (replayed here when the
    processor job did not run), printed, in the details and in the job's notes."""
    from bench.same import equal_work, figures

    table = ctx.processor_table
    if table is None:
        with console.status("equal-work check: replaying the processor"):
            table = replay_processor(ctx.inp).table
    expected = figures(table.values())
    for name, runs in ctx.same.items():
        checks = [equal_work(expected, got) for got in runs]
        lines = [c.line() for c in checks]
        for k, line in enumerate(lines):
            colour = "green" if checks[k].equal else "red"
            console.print(f"[{colour}]{name} run {k + 1} against the processor:[/] {line}")
        results[name].notes["equal_work"] = lines
        results[name].notes["equal_work_all_runs"] = all(c.equal for c in checks)
        worst = next((k for k, c in enumerate(checks) if not c.equal), 0)
        extra[f"{name}: final states against the processor's, {len(checks)} run(s)"] = (
            f"run {worst + 1}: {lines[worst]}" if not checks[worst].equal else lines[0]
        )


# --- report ----------------------------------------------------------------------------


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}x" if a / b < 0.1 else f"{a / b:.2f}x"


SAME_PEERS = ("quix-same", "faust-same")
TOUCHSTREAM_JOBS = ("touchstream-ch", "touchstream", "touchstream-2w", "processor")


def same_logic_rows(results: dict[str, JobResult]) -> list[list[str]]:
    """The same-logic comparison: each touchstream job and each same-logic peer that
    ran, its median events/s against each peer's and raw's, its CPU µs per event and
    each peer's CPU per event over it (above 1: touchstream spends less per event)."""
    peers = [results[p] for p in SAME_PEERS if p in results and results[p].median]
    if not peers:
        return []
    raw = results.get("raw")
    rows = []
    for name in (*TOUCHSTREAM_JOBS, *SAME_PEERS):
        r = results.get(name)
        if r is None or not r.median:
            continue
        cpu = r.cpu
        rows.append(
            [
                name,
                fmt_rate(r.median),
                *(fmt_ratio(r.median, p.median) for p in peers),
                fmt_ratio(r.median, raw.median if raw else None),
                "-" if cpu is None else f"{cpu:.0f}",
                *("-" if cpu is None or p.cpu is None else f"{p.cpu / cpu:.2f}x" for p in peers),
            ]
        )
    header = [
        "job",
        "median events/s",
        *(f"vs {p.name}" for p in peers),
        "vs raw",
        "CPU µs/event",
        *(f"{p.name} CPU / this" for p in peers),
    ]
    return [header, *rows]


def report(results: dict[str, JobResult], inp: Input, extra: dict[str, object]) -> None:
    raw = results.get("raw")
    naive = results.get("faust-naive")
    base_raw = raw.median if raw else None
    base_naive = naive.median if naive else None
    t = Table(
        title=f"events/s, {inp.n:,} events, {inp.customers:,} customers, "
        f"{inp.partitions} partitions, mix {inp.mix}",
        title_justify="left",
    )
    for col in (
        "job",
        "median events/s",
        "vs raw",
        "vs faust-naive",
        "runs (events/s)",
        "CPU µs/event",
        "wall s (incl. start)",
        "peak RSS MB",
    ):
        t.add_column(col, justify="left" if col in ("job", "runs (events/s)") else "right")
    for name, r in results.items():
        if r.skipped:
            t.add_row(name, "skipped", "", "", r.skipped[:60], "", "", "")
            continue
        walls = [x.wall_s for x in r.runs if x.wall_s is not None]
        rss = [x.peak_rss_mb for x in r.runs if x.peak_rss_mb is not None]
        cpu = [x.cpu_us_per_event for x in r.runs if x.cpu_us_per_event is not None]
        t.add_row(
            name,
            fmt_rate(r.median),
            fmt_ratio(r.median, base_raw),
            fmt_ratio(r.median, base_naive),
            ", ".join(fmt_rate(x.events_per_s) for x in r.runs),
            f"{median(cpu):.0f}" if cpu else "-",
            f"{median(walls):.1f}" if walls else "-",
            f"{max(rss):.0f}" if rss else "-",
        )
    console.print(t)
    same = same_logic_rows(results)
    if same:
        s = Table(
            title="touchstream against the peers running its per-event logic (the peers "
            "write no ClickHouse, touchstream's worker jobs do; the processor job neither)",
            title_justify="left",
        )
        for col in same[0]:
            s.add_column(col, justify="left" if col == "job" else "right")
        for row in same[1:]:
            s.add_row(*row)
        console.print(s)
    for name, r in results.items():
        if r.skipped:
            console.print(f"[yellow]{name} skipped:[/] {r.skipped}")
    d = Table(title="touchstream details", title_justify="left", show_header=False)
    d.add_column("what")
    d.add_column("value", justify="right")
    for k, v in extra.items():
        d.add_row(k, str(v))
    console.print(d)


# --- main ------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--events", default=200_000, show_default=True, help="input messages")
@click.option(
    "--customers",
    type=int,
    default=None,
    help="distinct customers [default: retail, one per 175 events; purchase and sim, 20,000]",
)
@click.option("--partitions", default=8, show_default=True, help="partitions of each topic")
@click.option(
    "--runs",
    default=3,
    show_default=True,
    help="runs per job (processor: 1, it is deterministic CPU work)",
)
@click.option(
    "--only",
    default="",
    help=f"comma list of jobs: {','.join(JOBS)}; opt-in: {','.join(EXTRA_JOBS)}",
)
@click.option(
    "--mix",
    type=click.Choice(list(MIXES)),
    default="retail",
    show_default=True,
    help="retail: a retailer's customers, each buying in a rhythm of its own, a few "
    "percent calls, complaints, refunds and surveys; purchase: uniform purchases; sim: "
    "touchstream simulate's planted defectors (first N events of --customers customers)",
)
@click.option(
    "--gc",
    "gc_mode",
    type=click.Choice(["default", "worker"]),
    default="default",
    show_default=True,
    help="processor job: CPython's GC settings, or the worker's (start-up heap frozen, "
    "thresholds 50,000, 20, 20); its GC pauses are printed either way",
)
@click.option(
    "--quix-python",
    default=lambda: os.environ.get("BENCH_QUIX_PYTHON", sys.executable),
    help="interpreter with quixstreams installed [env BENCH_QUIX_PYTHON; default: this one]",
)
@click.option("--timeout", default=0.0, help="seconds per run (0: 120 + events/250)")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="also write the results as JSON here",
)
@click.option("--keep", is_flag=True, help="keep the work directory (logs, stores)")
@click.option(
    "--rate",
    default=0.0,
    help="latency job: offered events/s (0: half of the "
    "touchstream-ch job's median in this run, else the touchstream job's)",
)
@click.option("--seconds", default=60.0, show_default=True, help="latency job: seconds sent")
@click.option(
    "--scale-customers", default=1_000_000, show_default=True, help="scale job: customers"
)
def main(
    events: int,
    customers: int | None,
    partitions: int,
    runs: int,
    only: str,
    mix: str,
    gc_mode: str,
    quix_python: str,
    timeout: float,
    json_out: str | None,
    keep: bool,
    rate: float,
    seconds: float,
    scale_customers: int,
) -> None:
    """Throughput of touchstream against the practical limit (raw) and its peers."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from touchstream.local_servers import Tansu

    selected = [j.strip() for j in only.split(",") if j.strip()] or list(JOBS)
    unknown = set(selected) - set(JOBS) - set(EXTRA_JOBS)
    if unknown:
        raise click.BadParameter(f"unknown job(s) {sorted(unknown)}; known: {JOBS + EXTRA_JOBS}")
    selected = [j for j in JOBS + EXTRA_JOBS if j in selected]
    t_bench = time.monotonic()
    m = machine()
    console.print(
        f"[bold]machine[/] {m['nproc']} cores, {m['memory']}, {m['cpu']}, "
        f"Python {m['python']}, Linux {m['kernel']}; load average {loadavg()}"
    )
    t0 = time.monotonic()
    if customers is None:
        customers = default_customers(events, mix)
    inp = make_input(events, customers, partitions, mix)
    console.print(
        f"input: {inp.n:,} {mix} events of {inp.customers:,} customers, "
        f"{inp.mean_value_bytes:.0f} bytes per value on average, made in "
        f"{time.monotonic() - t0:.1f}s"
    )
    timeout = timeout or 120 + inp.n / 250
    results: dict[str, JobResult] = {}
    notes: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="touchstream-bench-"))
    ctx: Ctx | None = None
    try:
        with Tansu(workdir / "broker") as broker:
            version = tail(broker.log_path, 200).splitlines()[:1]
            console.print(
                f"broker: {' '.join(version) or 'tansu'} at {broker.bootstrap}; work dir {workdir}"
            )
            ctx = Ctx(
                broker.bootstrap,
                broker.url,
                inp,
                workdir,
                timeout,
                quix_python,
                notes,
                worker_gc=gc_mode == "worker",
            )
            for name in selected:
                res = results[name] = JobResult(name)
                if name in EXTRA_JOBS:
                    # The latency job's worker writes to a ClickHouse server: half of
                    # that job's max when it ran, else of the chdb one.
                    ts_res = next(
                        (
                            results[j]
                            for j in ("touchstream-ch", "touchstream")
                            if j in results and results[j].median
                        ),
                        None,
                    )
                    try:
                        res.notes = run_extra(
                            name,
                            broker.url,
                            workdir,
                            ts_res.median if ts_res else None,
                            rate,
                            seconds,
                            scale_customers,
                            partitions,
                            console,
                        )
                    except Exception as e:  # one job failing must not lose the others
                        res.skipped = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                        console.print(f"[red]{name} failed:[/] {e}")
                    continue
                unavailable = {"quix": quix_unavailable, "quix-same": quix_same_unavailable}
                if name in unavailable and (why := unavailable[name](quix_python)):
                    res.skipped = why
                    console.print(f"[yellow]{name} skipped:[/] {why}")
                    continue
                topic, end = "", inp.end_offsets()
                if name != "processor":
                    topic = f"bench.{name}.{uuid.uuid4().hex[:6]}"
                    create_topic(broker.bootstrap, topic, partitions)
                    t0 = time.monotonic()
                    end = produce(broker.bootstrap, topic, inp)
                    console.print(
                        f"{name}: produced {inp.n:,} messages to {topic} in "
                        f"{time.monotonic() - t0:.1f}s"
                    )
                for i in range(1 if name == "processor" else runs):
                    try:
                        run = RUNNERS[name](ctx, topic, end, i)
                    except Exception as e:  # one job failing must not lose the others
                        msg = f"{type(e).__name__}: {e}"
                        console.print(f"[red]{name} run {i + 1} failed:[/] {msg}")
                        if not res.runs:
                            res.skipped = msg.splitlines()[0][:300]
                        break
                    res.runs.append(run)
                    rss = f", peak RSS {run.peak_rss_mb:.0f} MB" if run.peak_rss_mb else ""
                    wall = f", wall {run.wall_s:.1f}s" if run.wall_s else ""
                    cpu = (
                        f", {run.cpu_us_per_event:.0f} CPU µs/event" if run.cpu_us_per_event else ""
                    )
                    console.print(
                        f"{name} run {i + 1}: {run.events_per_s:,.0f} events/s "
                        f"({run.method}){cpu}{wall}{rss}"
                    )
    finally:
        if ctx is not None and ctx.clickhouse is not None:
            ctx.clickhouse.stop()
        if keep:
            console.print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    extra: dict[str, object] = {}
    if ctx is not None and ctx.same:
        check_same(ctx, results, extra)
    ts = results.get("touchstream")
    if ts and ts.runs:
        rss = [r.peak_rss_mb for r in ts.runs if r.peak_rss_mb]
        extra["worker peak RSS (VmHWM), max of runs"] = f"{max(rss):.0f} MB" if rss else "-"
    if "state_bytes" in notes:
        extra["state bytes per customer (Stored encoding)"] = f"{notes['state_bytes']:.0f}"
        extra["ClickHouse rows per event (processor)"] = f"{notes['rows_per_event']:.2f}"
        extra[f"transitions / alerts per 1,000 events (processor, {mix} mix)"] = (
            f"{notes['transitions_per_1000']:.1f} / {notes['alerts_per_1000']:.1f}"
        )
    if ctx is not None and ctx.gc_pauses:
        for g, line in pause_summary(ctx.gc_pauses).items():
            extra[f"GC pauses, generation {g} (processor, {ctx.gc_label})"] = line
        extra["GC share of the processor's wall time"] = (
            f"{notes['gc_seconds'] / max(1e-9, notes['replay_seconds']):.1%}"
        )
    extra["peers' state bytes per customer (JSON count/sum/last)"] = f"{naive_state_bytes(inp):.0f}"
    measured = details({k: v.notes for k, v in results.items() if k in EXTRA_JOBS})
    if not measured:
        extra["latency event-to-ClickHouse p50/p99"] = "not measured (--only ...,latency)"
        extra["latency event-to-alert p50/p99"] = "not measured (--only ...,latency)"
    extra.update(measured)
    report({k: v for k, v in results.items() if k not in EXTRA_JOBS or v.skipped}, inp, extra)
    elapsed = time.monotonic() - t_bench
    console.print(f"bench run time {elapsed:.0f}s; load average at the end {loadavg()}")
    if json_out:
        Path(json_out).write_text(
            json.dumps(
                {
                    "machine": m,
                    "events": inp.n,
                    "customers": inp.customers,
                    "mix": mix,
                    "gc": gc_mode,
                    "partitions": partitions,
                    "runs": runs,
                    "run_time_s": elapsed,
                    "results": {k: {**asdict(v), "median": v.median} for k, v in results.items()},
                    "details": extra,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

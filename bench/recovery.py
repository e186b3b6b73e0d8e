"""Recovery after ``kill -9``: how long a restarted worker takes to process again, on the
memory store and on RocksDB (TOUCHSTREAM_STORE), and its RSS then.

    python -m bench.recovery                                    # 100,000 and 1,000,000
    python -m bench.recovery --customers 100000 --runs 3
    python -m bench.recovery --customers 1000000 --stores rocksdict --runs 2
    python -m bench.recovery --customers 50000 --stores rocksdict,rocksdict-static

Per customer count and store, on one Tansu broker and one ClickHouse server (Debian's
18.16, the production path): its own topics (8 partitions), consumer group, database and
data dir. ``--customers`` purchases, one per customer, go through one real
``touchstream worker`` until every offset is committed (the load; its time is reported
too). Then, ``--runs`` times: the worker is killed with SIGKILL; one purchase of a known
customer is produced to each partition; a new worker process starts on the same data
dir. **Processing again** is the time from that process's spawn until ClickHouse has the
first of those purchases (polled every 0.1 s; a purchase is in ClickHouse once its batch
was applied, its state loaded from the table); **all partitions** until it has all eight.
The worker's log gives the phases (spawn to assignment, assignment to recovered, to
processing) and how many changelog records its table recovery read (Faust's
"Highwater" and "Reading Starts At" tables). RSS is the worker's VmRSS when all eight
were in, and its VmHWM then.

The worker is killed while idle (all committed): its RocksDB store then holds the whole
changelog. A kill in the middle of a stream adds at most the changelog of the batches
whose effects were in flight (tests/integration/test_local_state.py). The session
timeout is the default 10 s: the killed worker stays in the group until it runs out, so
the restart's first assignment waits for it (a clean stop leaves the group at once).
Workers run with TOUCHSTREAM_PRODUCER_MAX_BATCH_SIZE=1: Tansu reports a wrong log end for
longer changelog batches (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from bench.common import START_S, median, tail
from bench.live import ROOT, process_figures

# rocksdict-static: RocksDB and static group membership (TOUCHSTREAM_GROUP_INSTANCE_ID),
# so the restarted worker takes its partitions back without waiting for the session timeout.
STORES = {"memory": "memory://", "rocksdict": "rocksdict://", "rocksdict-static": "rocksdict://"}
PARTITIONS = 8
DAY_S = 86_400


@dataclass
class Restart:
    processing_s: float  # spawn -> the first new purchase in ClickHouse
    all_partitions_s: float  # spawn -> all eight
    assigned_s: float | None  # spawn -> the partitions assigned (log)
    recovered_s: float | None  # spawn -> Faust's "Worker ready" (table recovery done)
    changelog_read: int  # records the table recovery read
    changelog_total: int  # records in the changelog
    rss_mb: float | None
    peak_rss_mb: float | None


@dataclass
class StoreResult:
    store: str
    customers: int
    load_s: float = 0.0
    load_events_per_s: float = 0.0
    load_peak_rss_mb: float | None = None
    store_disk_mb: float | None = None
    restarts: list[Restart] = field(default_factory=list)
    clean_stop_exit: int | None = None
    notes: list[str] = field(default_factory=list)

    def med(self, name: str) -> float | None:
        xs = [getattr(r, name) for r in self.restarts if getattr(r, name) is not None]
        return median(xs) if xs else None


def purchase(cid: str, eid: str, t: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": eid,
            "customer_id": cid,
            "type": "purchase",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
            "amount": "25.00",
            "currency": "USD",
        }
    )


def customer_id(i: int) -> str:
    return f"R{i:08d}"


async def _produce(bootstrap: str, topic: str, customers: int) -> dict[int, int]:
    """One purchase per customer, in per-partition batches; each partition's end offset."""
    from aiokafka import AIOKafkaProducer

    from agents.records import key_partition

    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=256 * 1024
    )
    await p.start()
    try:
        batches: dict[int, Any] = {}
        sent: list[tuple[int, int, Any]] = []
        for i in range(customers):
            cid = customer_id(i)
            key = cid.encode()
            part = key_partition(key, PARTITIONS)
            # All in one day of event time: no silence deadline is due yet, so the load
            # writes one changelog record per customer and the restart finds every
            # customer with a deadline to index.
            value = purchase(cid, f"load-{i}", START_S + (i * DAY_S) // customers)
            b = batches.get(part)
            if b is None:
                b = batches[part] = p.create_batch()
            if b.append(key=key, value=value, timestamp=None) is None:
                sent.append((part, b.record_count(), await p.send_batch(b, topic, partition=part)))
                b = batches[part] = p.create_batch()
                b.append(key=key, value=value, timestamp=None)
        for part, b in batches.items():
            sent.append((part, b.record_count(), await p.send_batch(b, topic, partition=part)))
        end: dict[int, int] = {}
        for part, n, fut in sent:
            md = await fut
            end[part] = max(end.get(part, 0), md.offset + n)
        return end
    finally:
        await p.stop()


def markers(customers: int, run: int) -> dict[int, tuple[bytes, bytes]]:
    """One purchase of a known customer per partition (event ids unique per run)."""
    from agents.records import key_partition

    out: dict[int, tuple[bytes, bytes]] = {}
    i = 0
    while len(out) < PARTITIONS:
        cid = customer_id(i)
        p = key_partition(cid.encode(), PARTITIONS)
        if p not in out:
            t = START_S + DAY_S + run * 60
            out[p] = (cid.encode(), purchase(cid, f"restart-{run}-{p}", t))
        i += 1
    return out


async def _send(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await p.start()
    try:
        for f in [await p.send(topic, v, key=k) for k, v in items]:
            await f
    finally:
        await p.stop()


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)


def _first_time(log: str, needle: str) -> float | None:
    """Epoch seconds of the first log line containing ``needle``."""
    for line in log.splitlines():
        if needle in line and (m := _STAMP.match(line)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def recovery_range(log: str) -> tuple[int, int]:
    """(records the table recovery read, records in the changelog) from Faust's log."""

    def table(title: str) -> dict[int, int]:
        if title not in log:
            return {}
        block = log.split(title, 1)[1].split("\n+", 2)[1]
        rows = re.findall(r"^\| \S+\s+\| (\d+)\s+\| (-?\d+)\s+\|", block, re.M)
        return {int(p): int(v) for p, v in rows}

    high, start = table("Highwater - Active"), table("Reading Starts At - Active")
    return (
        sum(max(0, high[p] - start.get(p, -1)) for p in high),
        sum(high[p] + 1 for p in high),
    )


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class Job:
    """One store's worker, its topics, database and data dir."""

    def __init__(self, broker: Any, ch: Any, workdir: Path, store: str, customers: int) -> None:
        from touchstream.config import Settings

        name = f"rec_{store.replace('-', '_')}_{customers}_{uuid.uuid4().hex[:6]}"
        self.dir = workdir / name
        self.database = name
        self.ch = ch
        self.s = Settings(
            broker=broker.url,
            clickhouse_url=ch.url(name),
            app_id=name.replace("_", "-"),
            input_topic=f"{name}.in",
            dlq_topic=f"{name}.dlq",
            alerts_topic=f"{name}.alerts",
            transitions_topic=f"{name}.transitions",
            partitions=PARTITIONS,
            data_dir=str(self.dir / "worker"),
            store=STORES[store],
            producer_max_batch_size=1,
            idle_s=0,
            fit_interval_s=0,
            group_instance_id=f"{name}-worker" if store.endswith("-static") else "",
        )
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "worker-0.log"

    def env(self) -> dict[str, str]:
        from bench.live import worker_env
        from touchstream.local_servers import free_port

        env = worker_env(self.s)
        for f in (
            "store",
            "producer_max_batch_size",
            "idle_s",
            "fit_interval_s",
            "group_instance_id",
        ):
            env[f"TOUCHSTREAM_{f.upper()}"] = str(getattr(self.s, f))
        env["TOUCHSTREAM_WEB_PORT"] = str(free_port())
        return env

    def start(self) -> tuple[float, float]:
        """Spawn a worker; (time.monotonic(), time.time()) at the spawn."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"worker-{self.runs}.log"
        self.runs += 1
        t = time.monotonic(), time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "touchstream.cli", "worker"],
            env=self.env(),
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return t

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the worker exited with code {self.proc.returncode}; log {self.log}:\n"
                f"{tail(self.log)}"
            )

    def client(self) -> Any:
        from clickhouse_driver import Client

        return Client(host="127.0.0.1", port=self.ch.port, database=self.database)

    def migrate(self) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "touchstream.cli", "migrate"],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"touchstream migrate failed:\n{r.stdout}\n{r.stderr}")


def run_store(
    broker: Any,
    ch: Any,
    workdir: Path,
    store: str,
    customers: int,
    runs: int,
    console: Any,
    restart_timeout: float = 600,
) -> StoreResult:
    from bench.common import wait_committed

    res = StoreResult(store, customers)
    job = Job(broker, ch, workdir, store, customers)
    job.migrate()
    end = asyncio.run(_produce(job.s.bootstrap, job.s.input_topic, customers))
    started, _ = job.start()
    with console.status(f"{store}, {customers:,} customers: loading") as st:

        def show(done: int, total: int) -> None:
            st.update(f"{store}, {customers:,} customers: loading, {done:,} / {total:,}")

        prog = wait_committed(
            job.s.bootstrap,
            job.s.app_id,
            job.s.input_topic,
            end,
            job.proc,  # type: ignore[arg-type]
            started,
            timeout=max(600, customers / 200),
            log=job.log,
            on_progress=show,
        )
    res.load_s = (prog.done or time.monotonic()) - started
    res.load_events_per_s, _ = prog.rate(sum(end.values()))
    res.load_peak_rss_mb = (prog.peak_rss or 0) / 2**20 or None
    console.print(
        f"{store}, {customers:,} customers: loaded in {res.load_s:,.0f} s "
        f"({res.load_events_per_s:,.0f} events/s), peak RSS {res.load_peak_rss_mb or 0:,.0f} MiB"
    )
    client = job.client()
    try:
        for run in range(runs):
            assert job.proc is not None
            job.proc.send_signal(signal.SIGKILL)
            job.proc.wait()
            if store.startswith("rocksdict"):
                res.store_disk_mb = disk_mb(Path(job.s.data_dir))
            marks = markers(customers, run)
            asyncio.run(_send(job.s.bootstrap, job.s.input_topic, list(marks.values())))
            ids = ", ".join(f"'restart-{run}-{p}'" for p in marks)
            spawned, wall = job.start()
            first = every = None
            deadline = spawned + restart_timeout
            while time.monotonic() < deadline:
                job.alive()
                n = client.execute(f"SELECT count() FROM events WHERE event_id IN ({ids})")[0][0]
                now = time.monotonic()
                if n and first is None:
                    first = now - spawned
                if n >= len(marks):
                    every = now - spawned
                    break
                time.sleep(0.1)
            if first is None or every is None:
                read, total = recovery_range(job.log.read_text(errors="replace"))
                res.notes.append(
                    f"restart {run + 1}: not processing after {restart_timeout:.0f} s "
                    f"(changelog of {total:,} records to read); log {job.log}"
                )
                console.print(f"[yellow]{store}, {customers:,} customers:[/] {res.notes[-1]}")
                break
            fig = process_figures(job.proc.pid)  # type: ignore[union-attr]
            text = job.log.read_text(errors="replace")
            read, total = recovery_range(text)
            assigned = _first_time(text, "Elected group leader") or _first_time(text, "Assigned")
            ready = _first_time(text, "Worker ready")
            r = Restart(
                first,
                every,
                None if assigned is None else assigned - wall,
                None if ready is None else ready - wall,
                read,
                total,
                fig["rss_mb"],
                fig["peak_rss_mb"],
            )
            res.restarts.append(r)
            console.print(
                f"{store}, {customers:,} customers, restart {run + 1}: processing again after "
                f"{r.processing_s:.1f} s (all partitions {r.all_partitions_s:.1f} s; assigned "
                f"{r.assigned_s or 0:.1f} s, recovered {r.recovered_s or 0:.1f} s), read "
                f"{read:,} of {total:,} changelog records, RSS {r.rss_mb or 0:,.0f} MiB "
                f"(peak {r.peak_rss_mb or 0:,.0f})"
            )
    finally:
        client.disconnect()
        if job.proc is not None and job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
            try:
                res.clean_stop_exit = job.proc.wait(120)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
    return res


# --- the state alone, in process, at sizes the local broker cannot load in time -------

WRITE_STATES = """
import sys
import touchstream
from bench.recovery import write_states
write_states(sys.argv[1], int(sys.argv[2]))
"""

RESTART_STATE = """
import json, sys
import touchstream
from bench.recovery import restart_state
print(json.dumps(restart_state(sys.argv[1])))
"""


def _table(datadir: str) -> Any:
    """The worker's table on RocksDB (agents/app.py's options), without a broker."""
    import faust

    from agents.state import faust_store

    url, options = faust_store("rocksdict://")
    app = faust.App(
        "bench-recovery",
        broker="kafka://127.0.0.1:9",
        store=url,
        datadir=datadir,
        web_enabled=False,
    )
    return app.Table(
        "customers",
        default=None,
        partitions=PARTITIONS,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
        options=options,
    )


def write_states(datadir: str, customers: int) -> None:
    """Store ``customers`` customers' states as the load leaves them (one purchase each, in
    one day), through agents.state.TableState, then die by SIGKILL, as a killed worker."""
    import os
    from datetime import UTC

    from agents.processor import Processor
    from agents.records import RawMessage, key_partition
    from agents.state import TableState
    from touchstream.domain import codec

    state = TableState(_table(datadir))
    # States of 1,000 real customers, made by the worker's own batch path; the others
    # are copies of them under their own ids and partitions.
    proc = Processor(partitions=PARTITIONS)
    msgs = []
    for i in range(1000):
        cid = customer_id(i)
        key = cid.encode()
        msgs.append(
            RawMessage(
                "in",
                key_partition(key, PARTITIONS),
                i,
                key,
                purchase(cid, f"load-{i}", START_S + i * 86),
            )
        )
    samples = list(proc.process(msgs, lambda c: None, datetime.now(UTC)).states.values())
    chunk: dict[bytes, bytes] = {}
    for i in range(customers):
        cid = customer_id(i)
        work, _, _offset = codec.decode(samples[i % len(samples)])
        work.customer_id = cid
        key = cid.encode()
        chunk[key] = codec.encode(work, key_partition(key, PARTITIONS), i)
        if len(chunk) == 20_000 or i == customers - 1:
            state.persist(chunk, None)
            chunk = {}
    os.kill(os.getpid(), 9)


def restart_state(datadir: str) -> dict[str, float]:
    """What a restarted worker does with its store before it processes again: open the
    partition databases, rebuild the deadline index and sketches of every partition
    (the first batch does), apply one purchase per partition. Seconds and MiB."""
    import gc
    from datetime import UTC

    import aiokafka  # noqa: F401  (a worker's imports: a comparable baseline)
    import clickhouse_driver  # noqa: F401

    from agents.metrics import worker_gc
    from agents.processor import INDEX_LIMIT, INDEX_SLICE, Processor
    from agents.records import RawMessage
    from agents.state import TableState
    from bench.scale import memory_status

    worker_gc()  # as the worker (touchstream/cli.py)
    before = memory_status()["VmRSS"]
    t0 = time.perf_counter()
    state = TableState(_table(datadir))
    state.open(range(PARTITIONS))
    opened = time.perf_counter() - t0
    proc = Processor(  # as the worker
        partitions=PARTITIONS, index_slice=INDEX_SLICE, index_limit=INDEX_LIMIT
    )
    msgs = [RawMessage("in", p, 10**9, key, value) for p, (key, value) in markers(1, 0).items()]
    t1 = time.perf_counter()
    load = lambda c: state.get(c.encode())  # noqa: E731
    r = proc.process(msgs, load, datetime.now(UTC), state.scan)
    first_batch = time.perf_counter() - t1
    if r.accepted != len(msgs):
        raise RuntimeError(f"the restart applied {r.accepted} of {len(msgs)} purchases")
    while proc.building:  # the worker does this between batches
        proc.build_indexes()
    proc.process([], load, datetime.now(UTC), state.scan, partitions=range(PARTITIONS))
    indexed = time.perf_counter() - t1
    gc.collect()
    after = memory_status()
    return {
        "open_s": opened,
        "first_batch_s": first_batch,
        "indexed_s": indexed,
        "rss_before_mb": before,
        "rss_mb": after["VmRSS"],
        "peak_rss_mb": after["VmHWM"],
        "indexed": sum(len(ix.latest) for ix in proc._deadlines.values()),
    }


@dataclass
class InProcess:
    customers: int
    write_s: float
    disk_mb: float
    runs: list[dict[str, float]] = field(default_factory=list)


def run_in_process(customers: int, runs: int, workdir: Path, console: Any) -> InProcess:
    import json

    datadir = workdir / f"state-{customers}"
    t0 = time.monotonic()
    with console.status(f"in process: storing {customers:,} customers' states"):
        w = subprocess.run(
            [sys.executable, "-c", WRITE_STATES, str(datadir), str(customers)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if w.returncode != -9:
        raise RuntimeError(f"storing the states failed ({w.returncode}):\n{w.stderr[-2000:]}")
    res = InProcess(customers, time.monotonic() - t0, disk_mb(datadir))
    for run in range(runs):
        r = subprocess.run(
            [sys.executable, "-c", RESTART_STATE, str(datadir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"the restart failed:\n{r.stderr[-2000:]}")
        fig = json.loads(r.stdout.strip().splitlines()[-1])
        res.runs.append(fig)
        console.print(
            f"in process, {customers:,} customers, restart {run + 1}: databases open in "
            f"{fig['open_s']:.1f} s, first batch {fig['first_batch_s']:.2f} s, every "
            f"index whole {fig['indexed_s']:.1f} s, RSS {fig['rss_before_mb']:,.0f} -> "
            f"{fig['rss_mb']:,.0f} MiB (peak {fig['peak_rss_mb']:,.0f})"
        )
    return res


def report(results: list[StoreResult], console: Any) -> None:
    from rich.table import Table

    t = Table(
        title="recovery after kill -9 (medians)",
        title_justify="left",
    )
    for col in (
        "customers",
        "store",
        "restarts",
        "processing again s",
        "all partitions s",
        "assigned s",
        "recovered s",
        "changelog read / total",
        "RSS MiB",
        "peak MiB",
        "load s (events/s)",
        "on disk MiB",
    ):
        t.add_column(col, justify="right")
    for r in results:
        reads = r.restarts[0].changelog_total if r.restarts else 0
        t.add_row(
            f"{r.customers:,}",
            r.store,
            str(len(r.restarts)),
            f"{r.med('processing_s') or 0:.1f}",
            f"{r.med('all_partitions_s') or 0:.1f}",
            f"{r.med('assigned_s') or 0:.1f}",
            f"{r.med('recovered_s') or 0:.1f}",
            f"{r.med('changelog_read') or 0:,.0f} / {reads:,}",
            f"{r.med('rss_mb') or 0:,.0f}",
            f"{r.med('peak_rss_mb') or 0:,.0f}",
            f"{r.load_s:,.0f} ({r.load_events_per_s:,.0f})",
            "-" if r.store_disk_mb is None else f"{r.store_disk_mb:,.0f}",
        )
    console.print(t)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--customers", default="100000,1000000", show_default=True, help="comma-separated counts"
)
@click.option("--stores", default="memory,rocksdict", show_default=True)
@click.option("--runs", default=2, show_default=True, help="restarts per count and store")
@click.option(
    "--in-process",
    "in_process",
    default="",
    help="comma-separated counts: the store and index part alone (no broker), e.g. 10000000",
)
@click.option(
    "--restart-timeout",
    default=600.0,
    show_default=True,
    help="give up on a restart (and its store's further runs) after this many seconds",
)
@click.option("--keep", is_flag=True, help="keep the work dir (logs, stores)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def main(
    customers: str,
    stores: str,
    runs: int,
    in_process: str,
    restart_timeout: float,
    keep: bool,
    json_out: str | None,
) -> None:
    """Time from a restarted worker's spawn to processing again, after kill -9."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import standalone_end, standalone_start
    from touchstream.local_servers import ClickHouseServer, Tansu

    console, m = standalone_start()
    counts = [int(c) for c in customers.split(",") if c]
    names = [s for s in stores.split(",") if s]
    for s in names:
        if s not in STORES:
            raise click.BadParameter(f"{s!r}: choose from {', '.join(STORES)}", param_hint="stores")
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    results: list[StoreResult] = []
    states: list[InProcess] = []
    try:
        for n in (int(c) for c in in_process.split(",") if c):
            states.append(run_in_process(n, runs, workdir, console))
            shutil.rmtree(workdir / f"state-{n}", ignore_errors=True)
        if counts:
            with ClickHouseServer(workdir / "clickhouse") as ch:
                for n in counts:
                    # A broker per count: Tansu keeps every topic in memory.
                    with Tansu(workdir / f"broker-{n}") as broker:
                        for s in names:
                            results.append(
                                run_store(broker, ch, workdir, s, n, runs, console, restart_timeout)
                            )
    finally:
        if results:
            report(results, console)
            for r in results:
                for note in r.notes:
                    console.print(f"[yellow]note:[/] {r.store}, {r.customers:,}: {note}")
        for st in states:
            console.print(
                f"in process, {st.customers:,} customers ({st.disk_mb:,.0f} MiB on disk): "
                f"first batch {median([r['first_batch_s'] for r in st.runs]):.2f} s, every "
                f"index whole {median([r['indexed_s'] for r in st.runs]):.1f} s, RSS "
                f"{median([r['rss_mb'] for r in st.runs]):,.0f} MiB (medians of {len(st.runs)})"
            )
        if keep:
            console.print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    standalone_end(
        console,
        m,
        json_out,
        "recovery",
        {"workers": [asdict(r) for r in results], "in_process": [asdict(s) for s in states]},
    )


if __name__ == "__main__":
    main()

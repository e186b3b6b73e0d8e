"""Memory at scale: state bytes per customer and the RSS of one worker's state for N
customers (the issue's target: 1,000,000 customers in one worker under 1.5 GB RSS).

    python -m bench.scale                         # 1,000,000 customers (several minutes)
    python -m bench.scale --customers 100000      # a quick check
    python -m bench --only scale --scale-customers 1000000

In process, no Kafka and no ClickHouse: ``agents.processor.Processor.process`` (the
worker's hot path) over ``--events-per-customer`` x N purchases, batches of 5,000 (the
worker's batch_max), partitions by murmur2 of the key as the broker would. The table is
held as the worker's Faust table holds it: ``store="memory://"`` keeps a dict of raw key
bytes to raw value bytes (key_type and value_type bytes, the raw codec), so here it is a
``dict[bytes, bytes]`` written with ``result.states`` after each batch, as agents/app.py
does. Besides the table the worker keeps what ``Processor`` keeps: a heap of silence
deadlines and the RFM sketches per partition, and stream time.

Every customer purchases once (in id order), then the rest of the purchases go to random
customers; event time runs over 2025 in send order, so, as in a real year, silence
deadlines fire (event clock) and many customers move on in their lifecycle.

The events are made batch by batch, so the input does not sit in memory. Before the
replay the process imports what a worker imports (faust, aiokafka, clickhouse_driver), so
its resident size is comparable to an idle worker's; the figures are VmRSS and VmHWM from
/proc/self/status before and after (after a gc.collect()), the RSS growth per customer,
and what the table itself takes (value bytes, and keys + values + dict as Python objects,
by sys.getsizeof). Not included: a real worker's Kafka and ClickHouse buffers, which do
not grow with the customers (see the latency job's worker RSS).

The table values are the Processor's own bytes (``Stored.encode``, the binary codec of
touchstream/domain/codec.py). When they were orjson ``dumps`` results, each took an
allocation of 4 KiB or more whatever its length (orjson 3.13), 8.5 GB for 1,000,000
customers; so the job still copies every value into a right-sized bytes object after the
replay, releases the freed memory (``malloc_trim``) and measures the RSS again, which
shows whether the stored values are right-sized (the two figures match). The RSS right
after the replay is what a worker would show: it also holds heap memory freed by the
batches but not given back to the system (the job prints the RSS after a ``malloc_trim``
as well). ``--copy-values`` copies at store time instead (a direct check of that figure;
slower to run twice at 1,000,000).
"""

from __future__ import annotations

import gc
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from bench.common import START_S, YEAR_S

TARGET_CUSTOMERS = 1_000_000
TARGET_RSS_MB = 1.5e9 / 2**20  # 1.5 GB (decimal, the strict reading) = 1,431 MiB


def memory_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def purchase_stream(customers: int, events: int, seed: int = 1):
    """(customer_id, value bytes) of ``events`` purchases: customer i's first purchase
    is event i, the rest go to random customers; event time over 2025 in order."""
    rng = random.Random(seed)
    for j in range(events):
        cid = f"S{(j if j < customers else rng.randrange(customers)):07d}"
        t = START_S + (j * YEAR_S) // max(1, events)
        yield (
            cid,
            orjson.dumps(
                {
                    "event_id": f"scale-{j:09d}",
                    "customer_id": cid,
                    "type": "purchase",
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
                    "amount": round(rng.uniform(5.0, 250.0), 2),
                    "currency": "USD",
                    "channel": "web",
                }
            ),
        )


@dataclass
class ScaleResult:
    customers: int
    events: int
    partitions: int
    copy_values: bool = False  # values copied right-sized at store time
    orjson_version: str = ""
    seconds: float = 0.0
    events_per_s: float = 0.0
    rss_before_mb: float = 0.0  # after the worker's imports
    rss_after_mb: float = 0.0  # after the replay: what a worker would show
    peak_rss_mb: float = 0.0  # VmHWM at the end
    growth_bytes_per_customer: float = 0.0  # (after - before) / customers
    # After a malloc_trim (freed heap given back): what live objects hold.
    rss_trimmed_mb: float = 0.0
    live_bytes_per_customer: float = 0.0  # (trimmed - before) / customers
    # ... and with every value copied right-sized, trimmed again (not with copy_values).
    rss_right_sized_mb: float | None = None
    live_right_sized_bytes_per_customer: float | None = None
    state_value_bytes_per_customer: float = 0.0  # len() of the Stored encoding
    table_python_bytes_per_customer: float = 0.0  # keys + values + dict, sys.getsizeof
    deadline_heap_entries: int = 0
    rows_per_event: float = 0.0
    alerts: int = 0
    # The RSS after, plus the live bytes per customer for the customers short of
    # 1,000,000 (= the RSS after when run at 1,000,000 or more).
    projected_rss_mb_at_target: float = 0.0
    meets_target: bool = False
    notes: list[str] = field(default_factory=list)


def malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc), so RSS shows what is held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_scale(
    customers: int,
    events_per_customer: float = 1.5,
    partitions: int = 8,
    batch: int = 5000,
    on_progress: Any = None,
    copy_values: bool = False,
    max_rss_mb: float = 14_000,
) -> ScaleResult:
    import aiokafka  # noqa: F401  (a worker's imports: a comparable baseline)
    import clickhouse_driver  # noqa: F401
    import faust  # noqa: F401

    from agents.processor import Processor
    from agents.records import RawMessage, Stored, key_partition
    from touchstream.config import Settings
    from touchstream.domain.lifecycle import Rules

    n_events = max(customers, round(customers * events_per_customer))
    res = ScaleResult(
        customers, n_events, partitions, copy_values=copy_values, orjson_version=orjson.__version__
    )
    lateness = Settings.model_fields["lateness_s"].default
    proc = Processor(Rules(allowed_lateness_ms=int(lateness * 1000)), partitions)
    table: dict[bytes, bytes] = {}  # Faust's memory store: raw key -> raw value

    def load(cid: str) -> bytes | None:
        return table.get(cid.encode())

    def scan(p: int):
        return [(k.decode(), v) for k, v in table.items() if Stored.partition_of(v) == p]

    gc.collect()
    before = memory_status()
    res.rss_before_mb = before["VmRSS"]
    offsets = [0] * partitions
    rows = alerts = 0
    stream = purchase_stream(customers, n_events)
    t0 = time.perf_counter()
    done = 0
    while done < n_events:
        msgs = []
        for cid, value in stream:
            key = cid.encode()
            p = key_partition(key, partitions)
            msgs.append(RawMessage("touchpoints", p, offsets[p], key, value))
            offsets[p] += 1
            if len(msgs) == batch:
                break
        r = proc.process(msgs, load, datetime.now(UTC), scan)
        if r.rejected:
            raise RuntimeError(f"the processor rejected {r.rejected} bench messages")
        for cid, value in r.states.items():
            table[cid.encode()] = memoryview(value).tobytes() if copy_values else value
        rows += sum(len(v) for v in r.rows.values())
        alerts += len(r.alerts)
        done += len(msgs)
        del r, msgs
        if on_progress is not None:
            on_progress(done, n_events, len(table))
        if (rss := memory_status()["VmRSS"]) > max_rss_mb:
            res.notes.append(
                f"stopped after {done:,} events ({len(table):,} customers): RSS "
                f"{rss:,.0f} MiB passed --max-rss-mb {max_rss_mb:,.0f}"
            )
            break
    res.seconds = time.perf_counter() - t0
    res.events = done
    res.events_per_s = done / res.seconds
    gc.collect()
    after = memory_status()
    res.rss_after_mb, res.peak_rss_mb = after["VmRSS"], after["VmHWM"]
    n = max(1, len(table))
    if len(table) != customers:
        res.notes.append(f"the table holds {len(table):,} customers, not {customers:,}")
    res.growth_bytes_per_customer = (after["VmRSS"] - before["VmRSS"]) * 2**20 / n
    res.state_value_bytes_per_customer = sum(map(len, table.values())) / n
    res.table_python_bytes_per_customer = (
        sys.getsizeof(table) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in table.items())
    ) / n
    res.deadline_heap_entries = sum(len(ix) for ix in proc._deadlines.values())
    res.rows_per_event = rows / n_events
    res.alerts = alerts
    malloc_trim()
    res.rss_trimmed_mb = memory_status()["VmRSS"]
    res.live_bytes_per_customer = (res.rss_trimmed_mb - res.rss_before_mb) * 2**20 / n
    res.projected_rss_mb_at_target = res.rss_after_mb + (
        res.live_bytes_per_customer * max(0, TARGET_CUSTOMERS - n) / 2**20
    )
    res.meets_target = res.projected_rss_mb_at_target < TARGET_RSS_MB
    if not copy_values:
        for k, v in table.items():
            table[k] = memoryview(v).tobytes()
        gc.collect()
        malloc_trim()
        res.rss_right_sized_mb = memory_status()["VmRSS"]
        res.live_right_sized_bytes_per_customer = (
            (res.rss_right_sized_mb - res.rss_before_mb) * 2**20 / n
        )
    return res


def report(res: ScaleResult, console: Any) -> None:
    from rich.table import Table

    t = Table(
        title=f"state memory, {res.customers:,} customers, {res.events:,} purchases, "
        f"{res.partitions} partitions (in process)",
        title_justify="left",
        show_header=False,
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    verdict = "under" if res.meets_target else "OVER"
    proj = "measured" if res.customers >= TARGET_CUSTOMERS else "projected"
    mib = "MiB"
    rows = [
        (
            "values stored as",
            "right-sized copies (--copy-values)"
            if res.copy_values
            else "Stored.encode results (as the worker)",
        ),
        (
            "RSS before (worker imports) -> after the replay",
            f"{res.rss_before_mb:,.0f} -> {res.rss_after_mb:,.0f} {mib}",
        ),
        ("peak RSS (VmHWM)", f"{res.peak_rss_mb:,.0f} {mib}"),
        ("RSS growth per customer", f"{res.growth_bytes_per_customer:,.0f} bytes"),
        (
            "RSS after malloc_trim (live objects); per customer",
            f"{res.rss_trimmed_mb:,.0f} {mib}; {res.live_bytes_per_customer:,.0f} bytes",
        ),
    ]
    if res.rss_right_sized_mb is not None:
        rows.append(
            (
                "... with every value copied right-sized; per customer",
                f"{res.rss_right_sized_mb:,.0f} {mib}; "
                f"{res.live_right_sized_bytes_per_customer or 0:,.0f} bytes",
            )
        )
    rows += [
        (
            "state value per customer (len of the Stored encoding)",
            f"{res.state_value_bytes_per_customer:,.0f} bytes",
        ),
        (
            "table per customer (key + value + dict slot, by length)",
            f"{res.table_python_bytes_per_customer:,.0f} bytes",
        ),
        ("deadline heap entries", f"{res.deadline_heap_entries:,}"),
        (
            f"RSS for 1,000,000 customers ({proj})",
            f"{res.projected_rss_mb_at_target:,.0f} {mib} ({verdict} the target, "
            f"1.5 GB = {TARGET_RSS_MB:,.0f} {mib})",
        ),
        ("replay speed", f"{res.events_per_s:,.0f} events/s ({res.seconds:.0f}s)"),
        ("ClickHouse rows per event; alerts raised", f"{res.rows_per_event:.2f}; {res.alerts:,}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    for n in res.notes:
        console.print(f"[yellow]note:[/] {n}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--customers", default=TARGET_CUSTOMERS, show_default=True)
@click.option(
    "--events-per-customer",
    default=1.5,
    show_default=True,
    help="purchases per customer on average (at least 1 each)",
)
@click.option("--partitions", default=8, show_default=True)
@click.option(
    "--copy-values",
    is_flag=True,
    help="store right-sized copies of the values (what a fix would do)",
)
@click.option(
    "--max-rss-mb",
    default=14_000.0,
    show_default=True,
    help="stop the replay early (and report) past this RSS: the machine is shared",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def main(
    customers: int,
    events_per_customer: float,
    partitions: int,
    copy_values: bool,
    max_rss_mb: float,
    json_out: str | None,
) -> None:
    """State bytes per customer and RSS of a worker's state for N customers."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import standalone_end, standalone_start

    console, m = standalone_start()
    with console.status("scale: starting") as st:

        def show(done: int, total: int, n: int) -> None:
            if done % 50_000 < 5000 or done == total:
                st.update(
                    f"scale: {done:,} / {total:,} events, {n:,} customers, "
                    f"RSS {memory_status()['VmRSS']:,.0f} MiB"
                )

        res = run_scale(
            customers,
            events_per_customer,
            partitions,
            on_progress=show,
            copy_values=copy_values,
            max_rss_mb=max_rss_mb,
        )
    report(res, console)
    standalone_end(console, m, json_out, "scale", asdict(res))


if __name__ == "__main__":
    main()

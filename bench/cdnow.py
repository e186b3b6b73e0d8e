"""CDNOW replay: how long from the first produce until every event is queryable.

    python -m bench.cdnow                    # its own broker
    python -m bench --only cdnow             # the bench's broker

The CDNOW data set (69,659 purchases of 23,570 customers, 1997-1998, shipped in the
lifetimes wheel; touchstream.datasets.cdnow_events) through Tansu, one ``touchstream
worker`` (TOUCHSTREAM_CLOCK=event, default batching) and a real ClickHouse server
(Debian's 18.16, clickhouse-driver); bench/live.py starts them and warms the worker up
first, so the figure starts at the first produce, not at the worker's start (the worker's
start to ready is printed apart). The events are produced as fast as aiokafka goes, in
per-partition batches (bench/common.py), and bench/live.OffsetPoller reads each
partition's max offset in the events table every 0.2 s: the time is from just before the
first send to the first poll that sees every partition's last offset and then 69,659 rows
in the events table (an insert's monthly parts become visible one by one). Then it checks
``uniqExact(event_id)`` of the events table (69,659) and the customers in customer_state
(23,570).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from bench.live import OffsetPoller, live_worker, process_figures, warm_up

CDNOW_EVENTS = 69_659
CDNOW_CUSTOMERS = 23_570


@dataclass
class CdnowResult:
    events: int = 0
    produce_s: float = 0.0  # first send -> every send acknowledged
    queryable_s: float | None = None  # first send -> every event seen in ClickHouse
    events_per_s: float | None = None
    distinct_event_ids: int | None = None
    customers_in_state: int | None = None
    worker_ready_s: float | None = None
    worker: dict[str, float | None] = field(default_factory=dict)
    worker_cpu_us_per_event: float | None = None
    poll_period_s: float = 0.2


def run_cdnow(
    broker_url: str, workdir: Path, partitions: int = 8, timeout: float = 1800, console: Any = None
) -> CdnowResult:
    from rich.console import Console

    from bench.common import _produce, input_of
    from touchstream.datasets import cdnow_events

    console = console or Console()
    res = CdnowResult()
    inp = input_of(list(cdnow_events()), partitions, "cdnow")
    res.events = inp.n
    with live_worker(broker_url, workdir, partitions) as lw:
        with console.status("cdnow: starting ClickHouse, migrate, worker, warm-up"):
            res.worker_ready_s = warm_up(lw)
        console.print(
            f"cdnow: worker ready {res.worker_ready_s:.1f}s after spawn; producing {inp.n:,} events"
        )
        cpu0 = process_figures(lw.proc.pid)["cpu_s"]
        with OffsetPoller(lw, res.poll_period_s) as poller:
            t0 = time.monotonic()
            end = asyncio.run(_produce(lw.settings.bootstrap, lw.settings.input_topic, inp))
            res.produce_s = time.monotonic() - t0
            with console.status("cdnow: processing") as st:

                def show(done: int) -> None:
                    st.update(
                        f"cdnow: {done:,} / {sum(end.values()):,} offsets in ClickHouse, "
                        f"{time.monotonic() - t0:.0f}s"
                    )

                t_done = poller.wait_covers(end, timeout, show)
            if t_done is not None:
                # One insert spans several monthly parts of the events table, and they
                # become visible one by one: the last offset can show before the rest of
                # its insert. Queryable means every event counted.
                t_done = _wait_counted(lw, inp.n, timeout)
        res.worker = process_figures(lw.proc.pid)
        if t_done is None:
            raise TimeoutError(f"CDNOW not all in ClickHouse within {timeout:.0f}s")
        res.queryable_s = t_done - t0
        res.events_per_s = inp.n / res.queryable_s
        if cpu0 is not None and res.worker.get("cpu_s") is not None:
            res.worker_cpu_us_per_event = (res.worker["cpu_s"] - cpu0) / inp.n * 1e6  # type: ignore[operator]
        client = lw.client()
        try:
            db = lw.database
            res.distinct_event_ids = client.execute(f"SELECT uniqExact(event_id) FROM {db}.events")[
                0
            ][0]
            res.customers_in_state = client.execute(
                f"SELECT uniqExact(customer_id) FROM {db}.customer_state"
            )[0][0]
        finally:
            client.disconnect()
    return res


def _wait_counted(lw: Any, n: int, timeout: float, poll_s: float = 0.2) -> float | None:
    """When the events table first counts ``n`` rows (time.monotonic), or None."""
    client = lw.client()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.execute(f"SELECT count() FROM {lw.database}.events")[0][0] >= n:
                return time.monotonic()
            time.sleep(poll_s)
        return None
    finally:
        client.disconnect()


def report(res: CdnowResult, console: Any) -> None:
    from rich.table import Table

    t = Table(
        title="CDNOW replay: first produce -> every event queryable in ClickHouse",
        title_justify="left",
        show_header=False,
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    ok = res.distinct_event_ids == CDNOW_EVENTS and res.customers_in_state == CDNOW_CUSTOMERS
    rows = [
        ("events produced", f"{res.events:,}"),
        ("first produce -> all produced (acked)", f"{res.produce_s:.1f}s"),
        ("first produce -> all queryable", f"{res.queryable_s:.1f}s" if res.queryable_s else "-"),
        ("events/s end to end", f"{res.events_per_s:,.0f}" if res.events_per_s else "-"),
        (
            "distinct event_ids / customers in ClickHouse",
            f"{res.distinct_event_ids:,} / {res.customers_in_state:,}"
            f"{'' if ok else ' (expected 69,659 / 23,570)'}",
        ),
        ("worker ready after spawn (not in the figure)", f"{res.worker_ready_s or 0:.1f}s"),
        (
            "worker RSS / peak RSS at the end",
            f"{res.worker.get('rss_mb') or 0:.0f} / {res.worker.get('peak_rss_mb') or 0:.0f} MB",
        ),
        (
            "worker CPU µs per event (all threads)",
            f"{res.worker_cpu_us_per_event:.0f}" if res.worker_cpu_us_per_event else "-",
        ),
        ("resolution", f"poll every {res.poll_period_s:.1f}s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--partitions", default=8, show_default=True)
@click.option("--timeout", default=1800.0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--keep", is_flag=True, help="keep the work directory (logs, data)")
def main(partitions: int, timeout: float, json_out: str | None, keep: bool) -> None:
    """CDNOW through broker, worker and ClickHouse server: time to queryable."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import broker_workdir, standalone_end, standalone_start

    console, m = standalone_start()
    with broker_workdir("touchstream-cdnow-", keep, console) as (workdir, broker):
        res = run_cdnow(broker.url, workdir / "live", partitions, timeout, console)
    report(res, console)
    standalone_end(console, m, json_out, "cdnow", asdict(res))


if __name__ == "__main__":
    main()

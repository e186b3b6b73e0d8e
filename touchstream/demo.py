"""`touchstream demo`: the whole pipeline on this machine, embedded defaults.

Tansu broker (free port) -> `touchstream worker` (a real Faust worker process) -> chdb.
Streams CDNOW (69,659 real purchases) plus a synthetic sample of every touchpoint type
and a few malformed messages, waits until the worker has committed every offset, stops
it, then shows what an analyst wants first: customers, revenue, RFM figures, lifecycle
stages, segments and churn alerts; writes the HTML report (touchstream report) and
prints where the database is and the exact command that queries it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from touchstream.config import Settings
from touchstream.datasets import BAD_SAMPLES, cdnow_events, sample_events
from touchstream.kafka import committed_offsets, ensure_topics
from touchstream.local_servers import Tansu, free_port, stop_process
from touchstream.producing import send_events
from touchstream.security import kafka_options

SUMMARY_SQL = {
    "Customers and revenue": """
SELECT count() AS customers, countIf(purchases > 0) AS buyers,
       sum(purchases) AS n_purchases, sum(purchase_total) AS revenue,
       sum(refund_total) AS refunded, sum(net_spend) AS total_net_spend
FROM {db}.customer_state FINAL""",
    "RFM (buyers, as of stream time)": """
SELECT any(as_of) AS as_of, round(avg(frequency), 2) AS avg_frequency,
       round(avg(recency_days), 1) AS avg_recency_days, round(avg(T), 1) AS avg_T,
       round(avg(monetary_value), 2) AS avg_monetary_value,
       countIf(frequency = 0) AS one_day_buyers
FROM {db}.customer_rfm""",
    "Top customers by net spend": """
SELECT customer_id, purchases, net_spend, frequency, recency_days, T
FROM {db}.customer_rfm ORDER BY net_spend DESC, customer_id LIMIT 5""",
    "Lifecycle stages": """
SELECT stage, count() AS customers, round(avg(toFloat64(net_spend)), 2) AS avg_net_spend
FROM {db}.customer_state FINAL WHERE purchases > 0 GROUP BY stage ORDER BY customers DESC""",
    "RFM segments (latest cut-offs)": """
SELECT segment, count() AS customers, round(avg(toFloat64(net_spend)), 2) AS avg_net_spend
FROM {db}.customer_scores GROUP BY segment ORDER BY customers DESC""",
    "Churn alerts": """
SELECT kind, defection_type, count() AS alerts
FROM {db}.alerts FINAL GROUP BY kind, defection_type ORDER BY kind, alerts DESC""",
    "Events by type": """
SELECT type, count() AS events, sum(amount) AS total_amount
FROM {db}.events FINAL GROUP BY type ORDER BY events DESC""",
    "Dead letters": """
SELECT partition, offset, reason FROM {db}.dead_letters FINAL ORDER BY partition, offset""",
}


def run_demo(workdir: Path, sample_customers: int, console: Console) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)  # the broker is memory-only: start ClickHouse afresh too
    workdir.mkdir(parents=True)
    chdb_dir = (workdir / "chdb").resolve()
    with Tansu(workdir / "broker") as broker:
        settings = Settings(
            broker=broker.url,
            clickhouse_url=f"chdb://{chdb_dir}",
            data_dir=str(workdir / "worker"),
            web_port=free_port(),
        )
        ensure_topics(
            settings.bootstrap,
            {settings.input_topic: settings.partitions, settings.dlq_topic: settings.partitions},
        )
        env = {
            **os.environ,
            "TOUCHSTREAM_BROKER": settings.broker,
            "TOUCHSTREAM_CUTOFF_INTERVAL_S": "1",
            "TOUCHSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
            "TOUCHSTREAM_DATA_DIR": settings.data_dir,
            "TOUCHSTREAM_WEB_PORT": str(settings.web_port),
            "TOUCHSTREAM_WEB_HOST": "127.0.0.1",
        }
        log = (workdir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "touchstream.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            console.print(
                f"broker {broker.url}, worker pid {worker.pid}, "
                f"ClickHouse {settings.clickhouse_url}"
            )
            items = enumerate([*cdnow_events(), *sample_events(sample_customers)], 1)
            t0 = time.monotonic()
            report = send_events(
                settings, items, progress=console, raw_extra=[(b"S00001", b) for b in BAD_SAMPLES]
            )
            wait_until_processed(settings, report.end_offsets, worker, console)
            elapsed = time.monotonic() - t0
            time.sleep(3)  # one more round of RFM cut-offs, now for the whole population
        finally:
            stop_process(worker, 60)
    console.print(
        f"{report.sent + len(BAD_SAMPLES)} messages through the pipeline "
        f"in {elapsed:.1f}s (worker log: {workdir / 'worker.log'})"
    )
    show_summary(settings.clickhouse_url, console)
    show_where(settings.clickhouse_url, workdir, console)


def show_where(clickhouse_url: str, workdir: Path, console: Console) -> None:
    """Write the report and say where the demo's database is, with the exact commands
    that read it (a plain `touchstream query` reads ./var/chdb, not the demo's)."""
    import shlex

    from sinks import open_sink
    from touchstream.report import write_report

    out = (workdir / "report.html").resolve()
    with open_sink(clickhouse_url) as sink:
        write_report(sink, out)
    env = f"TOUCHSTREAM_CLICKHOUSE_URL={shlex.quote(clickhouse_url)}"
    sql = "SELECT * FROM touchstream.customer_profile WHERE visits_this_month > 0 LIMIT 3"
    console.print(f"report: {out}", soft_wrap=True)
    console.print(f"the demo's database: {clickhouse_url}; query it with", soft_wrap=True)
    console.print(
        f"  {env} touchstream query {shlex.quote(sql)} --format vertical",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    console.print(
        f"  {env} touchstream report --out report.html",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


def wait_until_processed(
    s: Settings,
    end: dict[int, int],
    worker: subprocess.Popen[bytes],
    console: Console | None = None,
    timeout: float = 600,
) -> None:
    """Until the worker's consumer group has committed ``end`` (partition -> offset) on
    the input topic: every message handled, its effects written. Fails if the worker
    exits. ``console`` shows a progress bar."""
    total = sum(end.values())
    with Progress(
        TextColumn("processing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    ) as bar:
        task = bar.add_task("process", total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
            done = committed_offsets(s.bootstrap, s.app_id, s.input_topic, end, kafka_options(s))
            bar.update(task, completed=sum(min(done.get(p, 0), e) for p, e in end.items()))
            if all(done.get(p, 0) >= e for p, e in end.items()):
                return
            time.sleep(0.5)
    raise TimeoutError(f"the worker did not commit every offset in {timeout}s")


def show_summary(clickhouse_url: str, console: Console) -> None:
    from sinks import open_sink

    with open_sink(clickhouse_url) as sink:
        for title, sql in SUMMARY_SQL.items():
            cols, rows = sink.query(sql.format(db=sink.database))
            t = Table(*cols, title=title, title_justify="left")
            for r in rows:
                t.add_row(*("NULL" if v is None else str(v) for v in r))
            console.print(t)

"""The till's latency: ``GET /customers/{id}`` at a steady request rate while the
worker processes events.

One Tansu broker, one ClickHouse server (Debian's 18.16), ``touchstream migrate`` and one
``touchstream worker`` (bench/live.py). First ``--customers`` customers buy once each
(waited for until committed); then for ``--seconds`` this process sends purchases at
``--event-rate`` per second and asks the worker's web server for random customers at
``--rate`` requests per second, open loop: request i is due at start + i / rate, and
its latency is counted from when it was due, so a stalled server shows as latency
instead of fewer requests (no coordinated omission). Sender, client and worker share
this machine's cores.

    python -m bench.till --rate 200 --seconds 60 --event-rate 1000
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson

from bench.live import LiveWorker, live_worker, percentiles, warm_up


@dataclass
class TillResult:
    rate: float
    seconds: float
    event_rate: float
    customers: int
    requests: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    events_sent: int = 0
    max_ms: float = 0.0


def purchase(cid: str, i: int, t: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"till-{i}",
            "customer_id": cid,
            "type": "purchase",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
            "amount": "12.50",
            "currency": "EUR",
        }
    )


async def _drive(lw: LiveWorker, res: TillResult, console: Any) -> None:
    import aiohttp
    from aiokafka import AIOKafkaProducer

    from bench.common import wait_committed

    s = lw.settings
    ids = [f"T{n:06d}" for n in range(res.customers)]
    base_t = 1_735_689_600  # 2025-01-01
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks=1, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        last = None
        for n, cid in enumerate(ids):  # every customer exists before the first request
            last = await producer.send(
                s.input_topic, purchase(cid, n, base_t + n), key=cid.encode()
            )
        await last
        sent = len(ids)
        console.print(f"{len(ids)} customers sent; waiting until the worker has them")
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=s.bootstrap)
        tps = [TopicPartition(s.input_topic, p) for p in range(s.partitions)]
        end = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        c.close()
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: wait_committed(
                s.bootstrap, s.app_id, s.input_topic, end, lw.proc, time.monotonic(), 300, lw.log
            ),
        )

        rnd = random.Random(1)
        url = f"http://127.0.0.1:{s.web_port}/customers/"
        latencies: list[float] = []
        start = time.monotonic() + 0.5
        stop_at = start + res.seconds

        async def send_events() -> None:
            nonlocal sent
            i = 0
            while True:
                due = start + i / res.event_rate
                now = time.monotonic()
                if now >= stop_at:
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                cid = ids[rnd.randrange(len(ids))]
                await producer.send(
                    s.input_topic, purchase(cid, sent, base_t + sent), key=cid.encode()
                )
                sent += 1
                i += 1

        async with aiohttp.ClientSession() as http:

            async def ask(due: float, cid: str) -> None:
                try:
                    async with http.get(url + cid) as r:
                        await r.read()
                        res.statuses[str(r.status)] = res.statuses.get(str(r.status), 0) + 1
                        if r.status != 200:
                            res.errors += 1
                except aiohttp.ClientError:
                    res.errors += 1
                latencies.append((time.monotonic() - due) * 1000)

            tasks = []
            sender = asyncio.ensure_future(send_events())
            i = 0
            while True:
                due = start + i / res.rate
                if due >= stop_at:
                    break
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                tasks.append(asyncio.ensure_future(ask(due, ids[rnd.randrange(len(ids))])))
                i += 1
            await sender
            await asyncio.gather(*tasks)
        await producer.flush()
        res.requests = len(latencies)
        res.latency_ms = {k: round(v, 2) for k, v in percentiles(latencies).items()}
        res.max_ms = round(max(latencies), 2)
        res.events_sent = sent - len(ids)
        lw.check_alive()
    finally:
        await producer.stop()


def run_till(
    broker_url: str,
    workdir: Path,
    rate: float,
    seconds: float,
    event_rate: float,
    customers: int,
    partitions: int,
    console: Any,
) -> TillResult:
    res = TillResult(rate, seconds, event_rate, customers)
    with live_worker(broker_url, workdir, partitions) as lw:
        warm_up(lw)
        asyncio.run(_drive(lw, res, console))
    return res


def report(res: TillResult, console: Any) -> None:
    lat = res.latency_ms
    console.print(
        f"[bold]till[/] GET /customers/{{id}} at {res.rate:.0f}/s for {res.seconds:.0f} s "
        f"while {res.event_rate:.0f} purchases/s stream in ({res.customers} customers): "
        f"{res.requests} requests, {res.errors} errors {res.statuses}; latency p50 "
        f"{lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms, max "
        f"{res.max_ms} ms (target p99 < 10 ms)"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", default=200.0, show_default=True, help="requests per second")
@click.option("--seconds", default=60.0, show_default=True)
@click.option(
    "--event-rate", default=1000.0, show_default=True, help="purchases per second sent meanwhile"
)
@click.option("--customers", default=20_000, show_default=True)
@click.option("--partitions", default=8, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--keep", is_flag=True, help="keep the work directory (logs, data)")
def main(
    rate: float,
    seconds: float,
    event_rate: float,
    customers: int,
    partitions: int,
    json_out: str | None,
    keep: bool,
) -> None:
    """GET /customers/{id} latency at a steady request rate under a steady event load."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import broker_workdir, standalone_end, standalone_start

    console, m = standalone_start()
    with broker_workdir("touchstream-till-", keep, console) as (workdir, broker):
        res = run_till(
            broker.url, workdir / "live", rate, seconds, event_rate, customers, partitions, console
        )
    report(res, console)
    standalone_end(console, m, json_out, "till", asdict(res))


if __name__ == "__main__":
    main()

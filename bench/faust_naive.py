"""The peer baseline: a minimal Faust app, as a tutorial would write it.

One agent iterates the stream event by event, parses the JSON value and updates a
changelogged Table keyed by customer (count, sum of amount, last time): one table write,
hence one changelog record, per event. Memory store, web server off, short session
timeout (Tansu holds a JoinGroup for half of it). Run by ``python -m bench`` as

    python -m bench.faust_naive --broker kafka://HOST:PORT --topic T --app-id A \
        --datadir DIR --partitions 8
"""

from __future__ import annotations

import argparse
import sys


def app_and_source(
    broker: str, topic: str, app_id: str, datadir: str, partitions: int, commit_interval: float
):
    """The Faust app both Faust peers use and its input topic (raw bytes)."""
    import faust

    app = faust.App(
        app_id,
        broker=broker,
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=partitions,
        topic_allow_declare=True,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=commit_interval,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
    )
    source = app.topic(
        topic,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    return app, source


def build(
    broker: str, topic: str, app_id: str, datadir: str, partitions: int, commit_interval: float
):
    import orjson

    app, source = app_and_source(broker, topic, app_id, datadir, partitions, commit_interval)
    customers = app.Table("customers", default=None, partitions=partitions)

    @app.agent(source, name="aggregate")
    async def aggregate(stream):
        async for value in stream:
            e = orjson.loads(value)
            cid = e["customer_id"]
            s = customers.get(cid) or {"count": 0, "sum": 0.0, "last": None}
            customers[cid] = {
                "count": s["count"] + 1,
                "sum": s["sum"] + float(e.get("amount") or 0),
                "last": max(s["last"] or "", e["occurred_at"]),
            }

    return app


def arguments(prog: str) -> argparse.ArgumentParser:
    """The options both Faust peers take."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--datadir", required=True)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--commit-interval", type=float, default=1.0)
    # info, not warning: at warning and above Faust sets the root logger to DEBUG for its
    # terminal spinner, and every aiokafka debug record is then built (~10% of the time).
    ap.add_argument("--loglevel", default="info")
    return ap


def run(app, loglevel: str) -> None:
    import faust

    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()


def main(argv: list[str] | None = None) -> None:
    a = arguments("bench.faust_naive").parse_args(argv)
    run(build(a.broker, a.topic, a.app_id, a.datadir, a.partitions, a.commit_interval), a.loglevel)


if __name__ == "__main__":
    main()

"""The naive Faust peer running touchstream's logic: bench/faust_naive.py's app (memory
store, one agent iterating the stream event by event, a changelogged Table keyed by
customer, one table write and one changelog record per event) whose per-event function
is ``bench.same.step``: touchstream's decoding and validation, the customer's stored
bytes decoded, the domain's reference step (``touchstream.domain.update.apply``, what
the worker's processor calls per event) and the state encoded by touchstream's codec.
It writes no ClickHouse rows and sends no alerts or transitions. Run by
``python -m bench`` as

    python -m bench.faust_same --broker kafka://HOST:PORT --topic T --app-id A \
        --datadir DIR --partitions 8 --lateness-ms MS
"""

from __future__ import annotations

import argparse
import sys


def build(
    broker: str,
    topic: str,
    app_id: str,
    datadir: str,
    partitions: int,
    commit_interval: float,
    lateness_ms: int,
):
    import faust

    from bench.same import step
    from touchstream.domain.lifecycle import Rules

    rules = Rules(allowed_lateness_ms=lateness_ms)
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
    # The value is touchstream's encoded state, stored (and changelogged) as its bytes
    # (value_type bytes: Faust's raw codec); the key is the customer id (JSON).
    customers = app.Table("customers", default=None, partitions=partitions, value_type=bytes)

    @app.agent(source, name="same")
    async def same(stream):
        async for event in stream.events():
            m = event.message
            new = step(customers.get, m.key, event.value, m.partition, m.offset, rules)
            if new is not None:
                customers[new[0]] = new[1]

    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench.faust_same")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--datadir", required=True)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--commit-interval", type=float, default=1.0)
    ap.add_argument("--lateness-ms", type=int, required=True)
    # info, not warning: as bench/faust_naive.py (Faust's spinner sets the root logger
    # to DEBUG at warning and above).
    ap.add_argument("--loglevel", default="info")
    a = ap.parse_args(argv)
    import faust

    app = build(
        a.broker,
        a.topic,
        a.app_id,
        a.datadir,
        a.partitions,
        a.commit_interval,
        a.lateness_ms,
    )
    sys.argv = sys.argv[:1]
    faust.Worker(app, loglevel=a.loglevel).execute_from_commandline()


if __name__ == "__main__":
    main()

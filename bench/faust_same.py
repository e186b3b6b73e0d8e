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


def build(
    broker: str,
    topic: str,
    app_id: str,
    datadir: str,
    partitions: int,
    commit_interval: float,
    lateness_ms: int,
):
    from bench.faust_naive import app_and_source
    from bench.same import step
    from touchstream.domain.lifecycle import Rules

    rules = Rules(allowed_lateness_ms=lateness_ms)
    app, source = app_and_source(broker, topic, app_id, datadir, partitions, commit_interval)
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
    from bench.faust_naive import arguments, run

    ap = arguments("bench.faust_same")
    ap.add_argument("--lateness-ms", type=int, required=True)
    a = ap.parse_args(argv)
    app = build(
        a.broker,
        a.topic,
        a.app_id,
        a.datadir,
        a.partitions,
        a.commit_interval,
        a.lateness_ms,
    )
    run(app, a.loglevel)


if __name__ == "__main__":
    main()

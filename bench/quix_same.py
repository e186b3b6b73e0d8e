"""Quix Streams running touchstream's logic: bench/quix_job.py's app (librdkafka
consumer, RocksDB state, changelog topic, at-least-once) whose per-message function is
``bench.same.step``: touchstream's decoding and validation of the raw value, the
customer's stored bytes (Quix's state, keyed by the message key) decoded, the domain's
reference step (``touchstream.domain.update.apply``, what the worker's processor calls
per event) and the state encoded by touchstream's codec and stored with
``State.set_bytes``. It writes no ClickHouse rows and sends no alerts or transitions.

Run by ``python -m bench`` as a script under quixstreams' own interpreter (it pins
pydantic<2.14): that interpreter needs orjson and pydantic, which quixstreams brings,
and this repository first on ``sys.path``, which this script puts there itself:

    PYTHON bench/quix_same.py --bootstrap HOST:PORT --topic T --group G --state-dir DIR \
        --lateness-ms MS
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's code, ahead of anything installed (agents, schemas: generic names).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    from bench.quix_job import application, arguments

    ap = arguments("quix_same")
    ap.add_argument("--lateness-ms", type=int, required=True)
    a = ap.parse_args(argv)

    from quixstreams import State, message_context

    from bench.same import step
    from touchstream.domain.lifecycle import Rules

    rules = Rules(allowed_lateness_ms=a.lateness_ms)
    app = application(a)
    topic = app.topic(a.topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(topic)

    def same(value: bytes, key: bytes, timestamp: int, headers: object, state: State) -> None:
        ctx = message_context()
        load = lambda _cid: state.get_bytes("state")  # noqa: E731  (the key's own state)
        new = step(load, key, value, ctx.partition, ctx.offset, rules)
        if new is not None:
            state.set_bytes("state", new[1])

    sdf.update(same, stateful=True, metadata=True)
    app.run()


if __name__ == "__main__":
    main()

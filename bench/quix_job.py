"""The same per-customer aggregation in Quix Streams (librdkafka consumer, RocksDB state,
changelog topic, at-least-once). Run by ``python -m bench`` as a script, possibly under
another interpreter (quixstreams pins pydantic<2.14, which touchstream's environment may
not accept), so it imports nothing from this repository:

    PYTHON bench/quix_job.py --bootstrap HOST:PORT --topic T --group G --state-dir DIR
"""

from __future__ import annotations

import argparse
from typing import Any


def arguments(prog: str) -> argparse.ArgumentParser:
    """The options both Quix peers take."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--commit-interval", type=float, default=1.0)
    return ap


def application(a: argparse.Namespace) -> Any:
    """The Quix application both Quix peers run (at-least-once, RocksDB state)."""
    from quixstreams import Application

    return Application(
        broker_address=a.bootstrap,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        commit_interval=a.commit_interval,
        state_dir=a.state_dir,
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 3_000},
    )


def main(argv: list[str] | None = None) -> None:
    a = arguments("quix_job").parse_args(argv)

    from quixstreams import State

    app = application(a)
    topic = app.topic(a.topic, key_deserializer="str", value_deserializer="json")
    sdf = app.dataframe(topic)

    def aggregate(e: dict[str, Any], state: State) -> None:
        s = state.get("agg") or {"count": 0, "sum": 0.0, "last": None}
        state.set(
            "agg",
            {
                "count": s["count"] + 1,
                "sum": s["sum"] + float(e.get("amount") or 0),
                "last": max(s["last"] or "", e["occurred_at"]),
            },
        )

    sdf.update(aggregate, stateful=True)
    app.run()


if __name__ == "__main__":
    main()

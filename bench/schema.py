"""Storage and view query time of the two schema dialects (sinks/tables.py) on the same
data, on one engine (chdb), so only the DDL differs.

    python -m bench.schema                       # 5,000 simulated customers, ~3 min
    python -m bench.schema --customers 2000 --runs 5 --json out.json

The simulated stream (touchstream.simulate) goes through the worker's batch path in
process (bench.holdout._replay) into two databases of one embedded ClickHouse: one made
in the 18.16 dialect (plain String, no codecs, no TTL), one in the current dialect
(LowCardinality, codecs, TTL). Each table is merged to one part per partition, in the
wide format, so system.columns reports every column's compressed bytes. Then every view
is read whole (FORMAT Null) ``--runs`` times per dialect, alternating: the median CPU
time of this process per read (chdb runs the query's threads in it; CPU time, unlike wall
time, barely moves with other load on a shared machine), and the ratio current / 18.16 in
the same run. The two dialects' answers are compared too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import orjson

TABLES = ("events", "customer_state", "transitions", "alerts")


def _load(customers: int, workdir: Path) -> dict[str, Any]:
    from bench.holdout import _replay
    from sinks import open_sink
    from sinks.tables import CURRENT, view_definitions
    from touchstream.simulate import simulate

    events, _ = simulate(customers, seed=3)
    plain = dataclasses.replace(CURRENT, low_cardinality=False, codecs=False, ttl=False)
    sinks = {}
    for name, caps in (("plain", plain), ("current", CURRENT)):
        sink = open_sink(f"chdb://{workdir}?database={name}")
        sink.capabilities = lambda caps=caps: caps  # type: ignore[method-assign]
        sink.migrate()
        _replay(events, "2030-01-01T00:00:00Z", 4, sink=sink)
        for t in TABLES:
            sink.execute(f"ALTER TABLE {name}.{t} MODIFY SETTING min_bytes_for_wide_part = 0")
            sink.execute(f"OPTIMIZE TABLE {name}.{t} FINAL")
        sinks[name] = sink
    return {"events": len(events), "sinks": sinks, "views": list(view_definitions("x"))}


def _bytes(sink: Any) -> dict[str, dict[str, int]]:
    _, rows = sink.query(
        "SELECT database, table, sum(data_compressed_bytes) FROM system.columns "
        f"WHERE database IN ('plain', 'current') AND table IN {TABLES!r} "
        "GROUP BY database, table"
    )
    out: dict[str, dict[str, int]] = {}
    for db, table, n in rows:
        out.setdefault(table, {})[db] = int(n)
    return out


def _answer(sink: Any, db: str, view: str) -> str:
    _cols, rows = sink.query(f"SELECT * FROM {db}.{view}")
    text = sorted(orjson.dumps(r, default=str).decode() for r in rows)
    return hashlib.sha256("\n".join(text).encode()).hexdigest()


@click.command()
@click.option("--customers", default=5000, show_default=True)
@click.option("--runs", default=5, show_default=True, help="reads of each view per dialect")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def main(customers: int, runs: int, json_out: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="bench-schema-"))
    try:
        with console.status(f"schema: {customers} simulated customers into both dialects"):
            loaded = _load(customers, workdir)
        sinks = loaded["sinks"]
        sizes = _bytes(sinks["current"])
        t = Table("table", "18.16 dialect (bytes)", "current (bytes)", "current / 18.16")
        total = {"plain": 0, "current": 0}
        for table in TABLES:
            p, c = sizes[table]["plain"], sizes[table]["current"]
            total["plain"] += p
            total["current"] += c
            t.add_row(table, f"{p:,}", f"{c:,}", f"{c / p:.2f}")
        t.add_row(
            "all four",
            f"{total['plain']:,}",
            f"{total['current']:,}",
            f"{total['current'] / total['plain']:.2f}",
        )
        console.print(f"{loaded['events']:,} events; compressed column bytes after merges")
        console.print(t)
        timings: dict[str, dict[str, list[float]]] = {}
        same: dict[str, bool] = {}
        for view in loaded["views"]:
            timings[view] = {"plain": [], "current": []}
            for _ in range(runs):
                for db in ("plain", "current"):
                    t0 = time.process_time()
                    sinks[db].query_formatted(f"SELECT * FROM {db}.{view} FORMAT Null")
                    timings[view][db].append(time.process_time() - t0)
            same[view] = _answer(sinks["plain"], "plain", view) == _answer(
                sinks["current"], "current", view
            )
        v = Table(
            "view", "18.16 dialect (CPU ms)", "current (CPU ms)", "current / 18.16", "same answer"
        )
        result_views = {}
        sums = {"plain": 0.0, "current": 0.0}
        for view, by in timings.items():
            p, c = statistics.median(by["plain"]), statistics.median(by["current"])
            sums["plain"] += p
            sums["current"] += c
            result_views[view] = {"plain_ms": p * 1e3, "current_ms": c * 1e3, "same": same[view]}
            v.add_row(
                view,
                f"{p * 1e3:.1f}",
                f"{c * 1e3:.1f}",
                f"{c / p:.2f}",
                "yes" if same[view] else "NO",
            )
        v.add_row(
            "all views",
            f"{sums['plain'] * 1e3:.0f}",
            f"{sums['current'] * 1e3:.0f}",
            f"{sums['current'] / sums['plain']:.2f}",
            "yes" if all(same.values()) else "NO",
        )
        console.print(f"view reads, median of {runs}")
        console.print(v)
        for s in sinks.values():
            s.close()
        if json_out:
            Path(json_out).write_bytes(
                orjson.dumps(
                    {
                        "events": loaded["events"],
                        "bytes": sizes,
                        "views": result_views,
                        "cpu_ratio_all_views": sums["current"] / sums["plain"],
                    },
                    option=orjson.OPT_INDENT_2,
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

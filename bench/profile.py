"""Where the worker's hot path spends its time: cProfile of
agents.processor.Processor.process over the bench input (no Kafka, no ClickHouse).

    python -m bench.profile --events 30000 --mix sim     # top 10 functions by tottime
"""

from __future__ import annotations

import cProfile
import io
import pstats

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--events", default=30_000, show_default=True)
@click.option(
    "--customers",
    default=2_000,
    show_default=True,
    help="customers (sim: simulated customers, the first --events events kept)",
)
@click.option("--partitions", default=8, show_default=True)
@click.option(
    "--mix", type=click.Choice(["retail", "purchase", "sim"]), default="sim", show_default=True
)
@click.option("--top", default=10, show_default=True)
@click.option("--sort", default="tottime", show_default=True)
def main(events: int, customers: int, partitions: int, mix: str, top: int, sort: str) -> None:
    """cProfile of Processor.process over the bench input, top functions."""
    import touchstream  # noqa: F401  (this repository first on sys.path)
    from bench.__main__ import replay_processor
    from bench.common import make_input

    inp = make_input(events, customers, partitions, mix)
    r = replay_processor(inp)  # unprofiled: the real speed
    prof = cProfile.Profile()
    replay_processor(inp, profiler=prof)
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats(sort).print_stats(top)
    total = st.total_tt  # type: ignore[attr-defined]
    print(
        f"{inp.n:,} {mix} events of {inp.customers:,} customers, batches of 5,000: "
        f"{r.events_per_s:,.0f} events/s unprofiled ({r.cpu_us:.0f} CPU µs/event), "
        f"{sum(map(len, r.table.values())) / max(1, len(r.table)):.0f} state bytes per "
        f"customer, {r.rows / inp.n:.2f} ClickHouse rows per event; profiled total "
        f"{total:.2f}s"
    )
    print(out.getvalue())


if __name__ == "__main__":
    main()

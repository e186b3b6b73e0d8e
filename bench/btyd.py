"""What the churn model costs the stream: CPU microseconds per customer update.

    python -m bench.btyd              # about a minute on 2 cores
    python -m bench.btyd --runs 5 --json out.json

1. The scorer alone (touchstream.domain.btyd.Model.score with the spend model and the
   churn calibration), over the (x, tx, T, m) of every customer update of a CDNOW replay
   in stream order: first with an empty memo (every (x, T) new), then again (the memo
   warm, as in a long-running worker).
2. The worker's batch path (agents.processor.Processor, batches of 5,000, a dict as the
   table) over all 69,659 CDNOW purchases, without a model and with each model: the
   difference in process CPU time per scored item: a customer_state row (one per changed
   customer per batch) or an alert (each carries the churn probability of its time).

Parameters: the models' maximum-likelihood fits of CDNOW to 1997-09-30, in days. Medians
of ``--runs`` runs; the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

FITS = {
    "bgnbd": {"r": 0.2516, "alpha": 33.52, "a": 0.7234, "b": 2.161},
    "mbgnbd": {"r": 0.6371, "alpha": 51.17, "a": 0.8075, "b": 1.228},
    "pareto_nbd": {"r": 0.5974, "alpha": 81.10, "s": 0.5222, "beta": 61.79},
}
SPEND = (6.275, 3.624, 14.98)
CALIBRATION = (0.06, 0.473, 0.037, -0.899, 0.017, 0.188)


@dataclass
class BtydResult:
    updates: int = 0  # customer_state rows of one replay
    alerts: int = 0  # alerts of one replay: each is scored too
    events: int = 0
    scorer_cold_us: dict[str, float] = field(default_factory=dict)
    scorer_warm_us: dict[str, float] = field(default_factory=dict)
    replay_cpu_s: dict[str, float] = field(default_factory=dict)  # "none" and each model
    added_us_per_update: dict[str, float] = field(default_factory=dict)


def model(name: str) -> Any:
    from touchstream.domain import btyd

    return btyd.Model(
        1,
        btyd.purchase_model(name, FITS[name]),
        btyd.GammaGamma(*SPEND),
        btyd.Calibration(CALIBRATION),
    )


def replay(inp: Any, m: Any, batch: int = 5000) -> tuple[float, list[tuple], int]:
    """Process CPU seconds of the batch path over the input, its customer_state rows and
    its number of alerts."""
    from agents.processor import Processor
    from agents.records import RawMessage, Stored

    proc = Processor(model=m)
    table: dict[str, bytes] = {}

    def scan(p: int) -> list[tuple[str, bytes]]:
        return [(c, raw) for c, raw in table.items() if Stored.partition_of(raw) == p]

    msgs = [
        RawMessage("touchpoints", p, o, k, v)
        for (k, v), (p, o) in zip(inp.messages, inp.placement, strict=True)
    ]
    rows: list[tuple] = []
    alerts = 0
    now = datetime(2000, 1, 1, tzinfo=UTC)
    cpu = 0.0
    for j in range(0, len(msgs), batch):
        t0 = time.process_time()
        r = proc.process(msgs[j : j + batch], table.get, now, scan)
        cpu += time.process_time() - t0
        table.update(r.states)
        rows.extend(r.rows["customer_state"])
        alerts += len(r.alerts)
    return cpu, rows, alerts


def run_btyd(runs: int = 3, console: Any = None) -> BtydResult:
    from rich.console import Console

    from bench.common import input_of, median
    from sinks.tables import CUSTOMER_STATE
    from touchstream.datasets import cdnow_events

    console = console or Console()
    res = BtydResult()
    inp = input_of(list(cdnow_events()), 8, "cdnow")
    res.events = inp.n
    cols = CUSTOMER_STATE.column_names
    i_f, i_r, i_m = cols.index("frequency"), cols.index("recency"), cols.index("monetary_value")
    i_first, i_last = cols.index("first_purchase_at"), cols.index("last_event_at")
    i_stage = cols.index("stage_since")
    with console.status("btyd: replaying without a model"):
        base = [replay(inp, None) for _ in range(runs)]
    res.replay_cpu_s["none"] = median([c for c, _, _ in base])
    rows, res.alerts = base[0][1], base[0][2]
    res.updates = len(rows)
    day = 86_400_000
    updates = [
        (r[i_f], r[i_r], max(r[i_last], r[i_stage]) // day - r[i_first] // day, r[i_m])
        for r in rows
        if r[i_first] is not None
    ]
    for name in FITS:
        cold, warm = [], []
        for _ in range(runs):
            m = model(name)
            t0 = time.process_time()
            for u in updates:
                m.score(*u)
            cold.append((time.process_time() - t0) / len(updates) * 1e6)
            t0 = time.process_time()
            for u in updates:
                m.score(*u)
            warm.append((time.process_time() - t0) / len(updates) * 1e6)
        res.scorer_cold_us[name], res.scorer_warm_us[name] = median(cold), median(warm)
        with console.status(f"btyd: replaying with {name}"):
            cpu = median([replay(inp, model(name))[0] for _ in range(runs)])
        res.replay_cpu_s[name] = cpu
        res.added_us_per_update[name] = (
            (cpu - res.replay_cpu_s["none"]) / (res.updates + res.alerts) * 1e6
        )
    return res


def report(res: BtydResult, console: Any) -> None:
    from rich.table import Table

    t = Table(
        title=f"churn model cost: {res.events:,} CDNOW events, {res.updates:,} customer "
        f"updates (customer_state rows) and {res.alerts:,} alerts scored, CPU µs",
        title_justify="left",
    )
    for col in (
        "model",
        "scorer, memo empty",
        "scorer, memo warm",
        "batch path CPU s",
        "added per scored update or alert",
    ):
        t.add_column(col, justify="right")
    t.add_row("none", "", "", f"{res.replay_cpu_s['none']:.2f}", "")
    for name in FITS:
        t.add_row(
            name,
            f"{res.scorer_cold_us[name]:.1f}",
            f"{res.scorer_warm_us[name]:.1f}",
            f"{res.replay_cpu_s[name]:.2f}",
            f"{res.added_us_per_update[name]:.1f}",
        )
    console.print(t)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", default=3, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
def main(runs: int, json_out: str | None) -> None:
    """CPU µs per customer update of the churn model, in the scorer and in the batch path."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import standalone_end, standalone_start

    console, mach = standalone_start()
    res = run_btyd(runs, console)
    report(res, console)
    standalone_end(console, mach, json_out, "btyd", asdict(res))


if __name__ == "__main__":
    main()

"""The CDNOW holdout protocol of the BG/NBD paper, on touchstream's churn probability.

    python -m bench.holdout            # about a minute and a half on 2 cores
    python -m bench.holdout --json out.json

Calibration: every CDNOW purchase up to 1997-09-30 goes through the worker's batch path
in process (agents.processor.Processor, partitioned like Kafka, batches of 5,000) into
embedded ClickHouse (chdb), and the period is closed with a clock message on every
partition at 1997-09-30T23:59:59Z, as ``touchstream tick`` does. Then ``touchstream
fit``'s code (touchstream.model_store.fit) fits the models on the customer_rfm view,
chooses one on its own 90-day split of the calibration period and fits the churn
calibration there; the customer_churn view gives every customer's churn_probability_90d
as of stream time (computed in SQL, checked against the Python of the stream).

Holdout: the 39 weeks to 1998-06-30. Target: no purchase in the holdout (70.1% of the
23,570 customers), as in the paper; the 90-day target (no purchase to 1997-12-29) is the
one churn_probability_90d predicts, so its Brier score and reliability are measured
against it. References: lifetimes' BG/NBD fitted on the same calibration summary (its
expected holdout purchases, negated, and 1 - P(alive)), recency, frequency and the
lifecycle stage. Nothing after 1997-09-30 is used for fitting anything.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

CAL_END = "1997-09-30"
OBS_END = "1998-06-30"
HOLDOUT_DAYS = 273  # 39 weeks
DAY_MS = 86_400_000
# The lifecycle stage as a risk ranking: the further from stability, the likelier gone.
STAGE_RISK = {"stability": 0, "formation": 1, "exploration": 2, "decline": 3, "churned": 4}


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``y`` (1 = positive), ties counted half (average ranks)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Deciles of the predicted probability: mean prediction, observed rate, count."""
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        out.append(
            {
                "predicted": float(p[chunk].mean()),
                "observed": float(y[chunk].mean()),
                "customers": len(chunk),
                "lowest": float(p[chunk].min()),
                "highest": float(p[chunk].max()),
            }
        )
    return out


@dataclass
class HoldoutResult:
    customers: int = 0
    inactive_share: float = 0.0  # no purchase in the 39-week holdout
    inactive_90d_share: float = 0.0
    replay_s: float = 0.0
    fit_s: float = 0.0
    chosen: str = ""
    version: int = 0
    fits: list[dict[str, Any]] = field(default_factory=list)
    auc: dict[str, float] = field(default_factory=dict)
    brier_90d: dict[str, float] = field(default_factory=dict)
    brier_holdout: dict[str, float] = field(default_factory=dict)
    reliability: list[dict[str, float]] = field(default_factory=list)
    purchases: list[dict[str, float]] = field(default_factory=list)  # by calibration x
    lifetimes_bgnbd_predicted: float = 0.0  # its total repeat purchase days in the holdout
    sql_vs_python_max_diff: float = 0.0
    scored_by_view: int = 0
    stored_scored: int = 0
    # AUC of logistic regressions fitted on the holdout's own labels (5-fold cross-validated):
    # what the best blend of these features could reach, not a score the stream can have
    ceiling: dict[str, float] = field(default_factory=dict)


def _replay(
    events: list[dict[str, Any]],
    until: str,
    partitions: int,
    model: Any = None,
    sink: Any = None,
    batch: int = 5000,
) -> dict[str, tuple[Any, ...]]:
    """The worker's batch path over ``events`` then a clock message at ``until`` on every
    partition; rows to ``sink`` if given. Returns the last customer_state row per customer."""
    from kafka.partitioner.default import murmur2

    from agents.processor import Processor
    from agents.records import RawMessage, Stored
    from schemas.events import epoch_ms
    from sinks import BatchingWriter
    from touchstream.domain.messages import clock_value

    proc = Processor(partitions=partitions, model=model)
    table: dict[str, bytes] = {}
    writer = BatchingWriter(sink) if sink is not None else None
    offsets = [0] * partitions
    last_rows: dict[str, tuple[Any, ...]] = {}
    now = datetime(2000, 1, 1, tzinfo=UTC)

    def scan(p: int) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in table.items() if Stored.partition_of(v) == p]

    def run(msgs: list[RawMessage]) -> None:
        r = proc.process(msgs, table.get, now, scan)
        table.update(r.states)
        for row in r.rows["customer_state"]:
            last_rows[row[0]] = row
        if writer is not None:
            for name, rows in r.rows.items():
                writer.add(name, rows)
            writer.flush()

    msgs: list[RawMessage] = []
    for e in events:
        key = e["customer_id"].encode()
        p = (murmur2(key) & 0x7FFFFFFF) % partitions
        msgs.append(RawMessage("touchpoints", p, offsets[p], key, orjson.dumps(e)))
        offsets[p] += 1
        if len(msgs) >= batch:
            run(msgs)
            msgs = []
    at = epoch_ms(datetime.fromisoformat(until.replace("Z", "+00:00")))
    clock = clock_value(at)
    for p in range(partitions):
        msgs.append(RawMessage("touchpoints", p, offsets[p], b"__touchstream_clock__", clock))
    run(msgs)
    return last_rows


def _lifetimes_reference(cal: list[dict[str, Any]], ids: list[str]) -> dict[str, np.ndarray]:
    """lifetimes' BG/NBD on the same calibration summary (days)."""
    import pandas as pd
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import summary_data_from_transaction_data

    df = pd.DataFrame(
        {
            "cid": [e["customer_id"] for e in cal],
            "date": pd.to_datetime([e["occurred_at"][:10] for e in cal]),
            "amount": [float(e["amount"]) for e in cal],
        }
    )
    s = summary_data_from_transaction_data(
        df, "cid", "date", monetary_value_col="amount", observation_period_end=CAL_END, freq="D"
    )
    s = s.reindex(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgf = BetaGeoFitter().fit(s.frequency, s.recency, s["T"])
        e = bgf.conditional_expected_number_of_purchases_up_to_time(
            HOLDOUT_DAYS, s.frequency, s.recency, s["T"]
        )
        pa = bgf.conditional_probability_alive(s.frequency, s.recency, s["T"])
    return {"expected": np.asarray(e, dtype=float), "p_alive": np.asarray(pa, dtype=float)}


def run_holdout(workdir: Path, partitions: int = 8, console: Any = None) -> HoldoutResult:
    from rich.console import Console

    from sinks import open_sink
    from touchstream import fitting, model_store
    from touchstream.datasets import cdnow_events
    from touchstream.domain import btyd

    console = console or Console()
    res = HoldoutResult()
    events = list(cdnow_events())
    cal = [e for e in events if e["occurred_at"][:10] <= CAL_END]
    later: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if CAL_END < e["occurred_at"][:10] <= OBS_END:
            later[e["customer_id"]].add(e["occurred_at"][:10])

    sink = open_sink(f"chdb://{workdir / 'chdb'}")
    sink.migrate()
    with console.status(f"holdout: replaying {len(cal):,} calibration purchases"):
        t0 = time.monotonic()
        _replay(cal, f"{CAL_END}T23:59:59Z", partitions, sink=sink)
        res.replay_s = time.monotonic() - t0
    with console.status("holdout: fitting (touchstream fit)"):
        t0 = time.monotonic()
        fitted = model_store.fit(sink)
        res.fit_s = time.monotonic() - t0
    report = fitted.report
    res.version, res.chosen = fitted.version, report.chosen.fit.name
    for c in report.candidates:
        res.fits.append(
            {
                "model": c.fit.name,
                "params": c.fit.params,
                "log_likelihood": c.fit.log_likelihood,
                "customers": c.fit.n,
                "holdout_log_loss": c.holdout_log_loss,
                "holdout_predicted": c.holdout_predicted,
                "holdout_actual": c.holdout_actual,
                "chosen": c.chosen,
            }
        )
    db = sink.database
    _, rows = sink.query(
        f"SELECT c.customer_id, frequency, recency, T, monetary_value, p_alive, "
        f"churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version, "
        f"recency_days, stage FROM {db}.customer_churn AS c ORDER BY c.customer_id"
    )
    sink.close()
    ids = [r[0] for r in rows]
    res.customers = len(ids)
    x = np.array([r[1] for r in rows], dtype=float)
    tx = np.array([r[2] for r in rows], dtype=float)
    T = np.array([r[3] for r in rows], dtype=float)
    m = np.array([r[4] for r in rows], dtype=float)
    view = np.array(
        [[r[5], r[6], r[7], r[8] if r[8] is not None else np.nan] for r in rows], dtype=float
    )
    res.scored_by_view = int(np.sum(~np.isnan(view[:, 1])))
    model = fitted.model
    cust = list(zip(x.tolist(), tx.tolist(), T.tolist(), strict=True))  # Python floats
    py = np.array(
        [list(model.score(*c, mv)) for c, mv in zip(cust, m.tolist(), strict=True)], dtype=float
    )
    res.sql_vs_python_max_diff = float(np.nanmax(np.abs(py - view) / np.maximum(1, np.abs(py))))
    y = np.array([0 if later.get(c) else 1 for c in ids])
    cut90 = (
        (datetime.fromisoformat(CAL_END) + __import__("datetime").timedelta(days=90))
        .date()
        .isoformat()
    )
    y90 = np.array([0 if any(d <= cut90 for d in later.get(c, ())) else 1 for c in ids])
    res.inactive_share, res.inactive_90d_share = float(y.mean()), float(y90.mean())
    churn = view[:, 1]

    scores: dict[str, np.ndarray] = {"churn_probability_90d": churn}
    # every model, raw and with its own calibration fitted on the calibration split
    sink = open_sink(f"chdb://{workdir / 'chdb'}")
    split = model_store.read_holdout(sink, fitted.as_of_ms)
    sink.close()
    hs = split.summary
    quiet = (split.purchases == 0).astype(float)
    for c in report.candidates:
        full = btyd.Model(0, btyd.purchase_model(c.fit.name, c.fit.params))
        raw = np.array([full.churn_raw(*v) for v in cust])
        scores[f"{c.fit.name} raw"] = raw
        on_split = btyd.Model(
            0, btyd.purchase_model(c.fit.name, fitting.fit_purchases(c.fit.name, hs).params)
        )
        cal_w = fitting.fit_calibration(fitting.calibration_matrix(on_split, hs, 90), quiet)
        scores[f"{c.fit.name} calibrated"] = np.array(
            [
                cal_w.apply(q, a, c_ - b, c_)
                for q, (a, b, c_) in zip(raw.tolist(), cust, strict=True)
            ]
        )
        pa = np.array([full.purchases.p_alive(*v) for v in cust])
        scores[f"{c.fit.name} 1 - P(alive)"] = 1 - pa
    ref = _lifetimes_reference(cal, ids)
    scores["lifetimes BG/NBD, expected holdout purchases (negated)"] = -ref["expected"]
    scores["lifetimes BG/NBD 1 - P(alive)"] = 1 - ref["p_alive"]
    scores["days since last purchase"] = res_days(rows)
    scores["-frequency"] = -x
    scores["lifecycle stage"] = np.array([STAGE_RISK.get(r[11], 2) for r in rows], dtype=float)
    res.auc = {k: auc(v, y) for k, v in scores.items()}
    for k, v in scores.items():
        if k.endswith(("raw", "calibrated")) or k == "churn_probability_90d":
            res.brier_90d[k] = brier(v, y90)
            res.brier_holdout[k] = brier(v, y)
    res.reliability = reliability(churn, y90)
    res.ceiling = ceiling(cal, ids, scores[f"{res.chosen} raw"], x, T, res_days(rows), y)
    # predicted vs actual repeat purchase days in the holdout, by calibration frequency
    expected = np.array(
        [
            model.purchases.p_alive(a, b, c) * model.purchases.expected_alive(a, c, HOLDOUT_DAYS)
            for a, b, c in cust
        ]
    )
    actual = np.array([len(later.get(c, ())) for c in ids], dtype=float)
    for lo, hi, label in (
        (0, 0, "0"),
        (1, 1, "1"),
        (2, 2, "2"),
        (3, 3, "3"),
        (4, 4, "4"),
        (5, 6, "5-6"),
        (7, 10**9, "7+"),
    ):
        sel = (x >= lo) & (x <= hi)
        res.purchases.append(
            {
                "frequency": label,
                "customers": int(sel.sum()),
                "predicted": float(expected[sel].mean()),
                "actual": float(actual[sel].mean()),
            }
        )
    res.purchases.append(
        {
            "frequency": "all",
            "customers": len(x),
            "predicted": float(expected.sum()),
            "actual": float(actual.sum()),
        }
    )
    res.lifetimes_bgnbd_predicted = float(ref["expected"].sum())
    # the stream's own values (customer_state), scored at each customer's last change
    with console.status("holdout: replaying again with the model loaded"):
        stored = _replay(cal, f"{CAL_END}T23:59:59Z", partitions, model=model)
    from sinks.tables import CUSTOMER_STATE

    i = CUSTOMER_STATE.column_names.index("churn_probability_90d")
    sv = np.array(
        [stored[c][i] if stored.get(c) and stored[c][i] is not None else np.nan for c in ids],
        dtype=float,
    )
    res.stored_scored = int(np.sum(~np.isnan(sv)))
    res.auc["stored at the last change (customer_state)"] = auc(np.nan_to_num(sv, nan=1.0), y)
    return res


def res_days(rows: list[tuple[Any, ...]]) -> np.ndarray:
    return np.array([r[10] for r in rows], dtype=float)


def cross_validated_auc(features: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """AUC of a logistic regression scored on each fold after fitting on the others."""
    from touchstream import fitting

    fold = np.random.default_rng(0).permutation(len(y)) % folds
    p = np.empty(len(y))
    for k in range(folds):
        w = fitting.logistic_weights(features[fold != k], y[fold != k])
        p[fold == k] = features[fold == k] @ w
    return auc(p, y)


def ceiling(
    cal: list[dict[str, Any]],
    ids: list[str],
    churn_raw: np.ndarray,
    x: np.ndarray,
    T: np.ndarray,
    recency_days: np.ndarray,
    y: np.ndarray,
) -> dict[str, float]:
    """How far any blend of what CDNOW records could rank "inactive in the holdout":
    logistic regressions fitted on the holdout's own labels, cross-validated. The stream
    cannot have these labels; the figure says where the data's ceiling is."""
    spend: dict[str, float] = defaultdict(float)
    qty: dict[str, int] = defaultdict(int)
    first_day: dict[str, str] = {}
    first_spend: dict[str, float] = defaultdict(float)
    for e in cal:
        c, day = e["customer_id"], e["occurred_at"][:10]
        spend[c] += float(e["amount"])
        qty[c] += int(e.get("quantity", 1))
        if first_day.setdefault(c, day) == day:
            first_spend[c] += float(e["amount"])
    c = np.clip(churn_raw, 1e-9, 1 - 1e-9)
    lr, lx = np.log1p(recency_days), np.log1p(x)
    base = [np.ones(len(y)), lr, lx, lr * lx, np.log1p(T)]
    money = [
        np.log1p(np.array([max(spend[i], 0.0) for i in ids])),
        np.log1p(np.array([max(first_spend[i], 0.0) for i in ids])),
        np.log1p(np.array([qty[i] for i in ids], dtype=float)),
    ]
    logit = [np.log(c / (1 - c))]
    return {
        "recency, frequency, T": cross_validated_auc(np.column_stack(base), y),
        "+ the model's raw churn": cross_validated_auc(
            np.column_stack([base[0], *logit, *base[1:]]), y
        ),
        "+ spend, first-day spend, quantity": cross_validated_auc(
            np.column_stack([base[0], *logit, *base[1:], *money]), y
        ),
    }


def report(res: HoldoutResult, console: Any) -> None:
    from rich.table import Table

    console.print(
        f"CDNOW, calibration to {CAL_END}, holdout to {OBS_END}: {res.customers:,} "
        f"customers, {res.inactive_share:.1%} inactive in the holdout, "
        f"{res.inactive_90d_share:.1%} in its first 90 days; replay "
        f"{res.replay_s:.1f}s, fit {res.fit_s:.1f}s"
    )
    t = Table(title="fits (days) on the calibration summary", title_justify="left")
    for col in (
        "model",
        "params",
        "log-likelihood",
        "split log loss",
        "split predicted / actual",
        "chosen",
    ):
        t.add_column(col)
    for f in res.fits:
        t.add_row(
            f["model"],
            ", ".join(f"{k} {v:.4g}" for k, v in f["params"].items()),
            f"{f['log_likelihood']:.1f}",
            "-" if f["holdout_log_loss"] is None else f"{f['holdout_log_loss']:.4f}",
            "-"
            if f["holdout_predicted"] is None
            else f"{f['holdout_predicted']:.0f} / {f['holdout_actual']:.0f}",
            "yes" if f["chosen"] else "",
        )
    console.print(t)
    t = Table(
        title="ROC AUC for 'no purchase in the 39-week holdout'; Brier scores", title_justify="left"
    )
    t.add_column("score")
    t.add_column("AUC", justify="right")
    t.add_column("Brier, 90 days", justify="right")
    t.add_column("Brier, holdout", justify="right")
    for k, v in sorted(res.auc.items(), key=lambda kv: -kv[1]):
        t.add_row(
            k,
            f"{v:.4f}",
            f"{res.brier_90d[k]:.4f}" if k in res.brier_90d else "",
            f"{res.brier_holdout[k]:.4f}" if k in res.brier_holdout else "",
        )
    console.print(t)
    t = Table(
        title="the data's ceiling: logistic regressions fitted on the holdout's own labels "
        "(5-fold cross-validated AUC; no stream can have these labels)",
        title_justify="left",
    )
    t.add_column("features")
    t.add_column("AUC", justify="right")
    for k, v in res.ceiling.items():
        t.add_row(k, f"{v:.4f}")
    console.print(t)
    t = Table(
        title="reliability of churn_probability_90d (deciles; target: no purchase in 90 days)",
        title_justify="left",
    )
    for col in ("decile", "range", "predicted", "observed", "customers"):
        t.add_column(col, justify="right")
    for i, b in enumerate(res.reliability, 1):
        t.add_row(
            str(i),
            f"{b['lowest']:.3f}-{b['highest']:.3f}",
            f"{b['predicted']:.3f}",
            f"{b['observed']:.3f}",
            str(b["customers"]),
        )
    console.print(t)
    t = Table(
        title=f"repeat purchase days in the holdout, {res.chosen} (mean per customer; "
        "'all': total)",
        title_justify="left",
    )
    for col in ("calibration frequency", "customers", "predicted", "actual"):
        t.add_column(col, justify="right")
    for b in res.purchases:
        t.add_row(
            b["frequency"], str(b["customers"]), f"{b['predicted']:.3f}", f"{b['actual']:.3f}"
        )
    console.print(t)
    console.print(
        f"lifetimes' BG/NBD on the same summary predicts "
        f"{res.lifetimes_bgnbd_predicted:,.0f} holdout repeat purchase days in all"
    )
    console.print(
        f"customer_churn scored {res.scored_by_view:,} of {res.customers:,} "
        f"customers; SQL vs the stream's Python: max relative difference "
        f"{res.sql_vs_python_max_diff:.1e}; customer_state (the stream, scored at "
        f"each customer's last change) {res.stored_scored:,}"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--partitions", default=8, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--keep", is_flag=True, help="keep the work directory (chdb data)")
def main(partitions: int, json_out: str | None, keep: bool) -> None:
    """The BG/NBD paper's CDNOW holdout on touchstream's churn probability."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import standalone_end, standalone_start

    console, mach = standalone_start()
    workdir = Path(tempfile.mkdtemp(prefix="touchstream-holdout-"))
    try:
        res = run_holdout(workdir, partitions, console)
    finally:
        if keep:
            console.print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(res, console)
    standalone_end(console, mach, json_out, "holdout", asdict(res))


if __name__ == "__main__":
    main()

"""Compare touchstream's per-customer summary with lifetimes' reference implementation."""

from __future__ import annotations

from typing import Any

import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data

from touchstream.datasets import cdnow_path

FIELDS = ("frequency", "recency", "T", "monetary_value")


def cdnow_reference() -> pd.DataFrame:
    df = pd.read_csv(
        cdnow_path(),
        sep=r"\s+",
        header=0,
        names=["cid", "date", "n", "amount"],
        dtype={"cid": str, "date": str},
    )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return summary_data_from_transaction_data(
        df,
        "cid",
        "date",
        monetary_value_col="amount",
        observation_period_end="1998-06-30",
        freq="D",
    )


def mismatches(ref: pd.DataFrame, ours: dict[str, tuple[Any, ...]]) -> list[str]:
    """Every customer whose (frequency, recency, T, monetary_value) differ, described."""
    out = []
    for cid, row in ref.iterrows():
        got = ours.get(str(cid))
        want = (int(row.frequency), int(row.recency), int(row["T"]), float(row.monetary_value))
        if got is None:
            out.append(f"{cid}: missing")
            continue
        f, r, t, m = int(got[0]), int(got[1]), int(got[2]), float(got[3])
        if (f, r, t) != want[:3] or abs(m - want[3]) > 1e-6:
            out.append(f"{cid}: got {(f, r, t, m)}, want {want}")
    out.extend(f"{cid}: not in lifetimes" for cid in set(ours) - set(map(str, ref.index)))
    return out


RFM_SQL = "SELECT customer_id, frequency, recency, T, monetary_value FROM {db}.customer_rfm"


def quintile_scores(ref: pd.DataFrame) -> dict[str, dict[str, int]]:
    """R, F and M scores by the documented rule (docs/scoring.md), computed exactly:
    1 + the number of quintiles q (20..80%) with at least q*n customers strictly below.
    R ranks the last purchase day, F the purchase days, M the net spend."""
    first = pd.Timestamp("1997-01-01")
    end_day = (pd.Timestamp("1998-06-30") - first).days
    axes = {
        "r": end_day - ref["T"] + ref["recency"],  # last purchase day (relative)
        "f": ref["frequency"] + 1,
        "m": spend_by_customer(),
    }
    n = len(ref)
    out: dict[str, dict[str, int]] = {str(c): {} for c in ref.index}
    for name, values in axes.items():
        values = values.reindex(ref.index)
        below = values.rank(method="min") - 1  # customers strictly below
        for c, b in below.items():
            out[str(c)][name] = 1 + sum(1 for k in range(1, 5) if b >= k * n / 5)
    return out


def spend_by_customer() -> pd.Series:
    df = pd.read_csv(
        cdnow_path(),
        sep=r"\s+",
        header=0,
        names=["cid", "date", "n", "amount"],
        dtype={"cid": str, "date": str},
    )
    return df.groupby("cid")["amount"].sum()

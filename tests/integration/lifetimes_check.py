"""Compare touchstream's per-customer summary with lifetimes' reference implementation."""

from __future__ import annotations

from typing import Any

import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data

from touchstream.datasets import cdnow_path

FIELDS = ("frequency", "recency", "T", "monetary_value")


def cdnow_reference() -> pd.DataFrame:
    df = pd.read_csv(cdnow_path(), sep=r"\s+", header=0, names=["cid", "date", "n", "amount"],
                     dtype={"cid": str, "date": str})
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return summary_data_from_transaction_data(
        df, "cid", "date", monetary_value_col="amount",
        observation_period_end="1998-06-30", freq="D",
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

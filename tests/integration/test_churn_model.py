"""The churn model against real servers: the customer_churn view's SQL gives the domain's
values on ClickHouse 18.16 and on chdb; `touchstream fit` on a ClickHouse 18.16 server
writes a version into model_params; a worker then scores with it (customer_state, alerts)
and, owning partition 0, fits again on schedule."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from sinks import open_sink
from sinks.rows import clock_row, model_params_row, state_row
from touchstream.datasets import cdnow_events
from touchstream.domain import btyd
from touchstream.domain.customer import CustomerState
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.model_store import load_chosen
from touchstream.producing import send_events

from .conftest import ROOT, running_worker, settings_for, unique, wait_committed, worker_env

pytestmark = pytest.mark.integration
DAY = 86_400_000


@pytest.fixture(params=["server", "chdb"])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    db = f"t_{uuid.uuid4().hex[:8]}"
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse")
        return server.url(db)
    return f"chdb://{tmp_path / 'chdb'}?database={db}"


def _customers(n: int, as_of_day: int) -> list[CustomerState]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        k = rng.choice([1, 1, 1, 2, 3, 5, 10, 30])
        first = as_of_day - rng.randint(0, 600)
        days = sorted({first, *(rng.randint(first, as_of_day) for _ in range(k - 1))})
        fds = Decimal(str(round(rng.uniform(1, 50), 2)))
        total = fds + Decimal(str(round(rng.uniform(0, 500), 2)))
        out.append(
            CustomerState(
                f"c{i}",
                version=1,
                purchases=len(days),
                purchase_total=total,
                first_purchase_ms=days[0] * DAY,
                last_purchase_ms=days[-1] * DAY,
                purchase_days=tuple(days),
                first_day_spend=fds,
            )
        )
    return out


MODELS = [
    btyd.BgNbd(0.25, 33.5, 0.72, 2.16),
    btyd.MbgNbd(0.64, 51.2, 0.81, 1.23),
    btyd.ParetoNbd(0.6, 81.1, 0.52, 61.8),
    btyd.ParetoNbd(0.6, 20.0, 1.52, 400.0),
]


def test_customer_churn_computes_the_domains_values_as_of_stream_time(sink_url: str) -> None:
    as_of_day = 10_000
    customers = _customers(600, as_of_day)
    gg = btyd.GammaGamma(6.25, 3.74, 15.44)
    cal = btyd.Calibration((0.3, 0.9, 0.2, -0.1, 0.05, -0.2))
    with open_sink(sink_url) as sink:
        sink.migrate()
        db = sink.database
        sink.insert("customer_state", [state_row(s) for s in customers])
        sink.insert("stream_clock", [clock_row(0, as_of_day * DAY + 3_600_000)])
        sql = (
            f"SELECT frequency, recency, T, monetary_value, p_alive, churn_probability_90d, "
            f"expected_purchases_90d, predicted_clv_365d, model_version "
            f"FROM {db}.customer_churn"
        )
        _, before = sink.query(sql)
        assert len(before) == len(customers)
        assert {(r[4], r[5], r[6], r[7], r[8]) for r in before} == {(None,) * 4 + (0,)}
        version = 0
        for pm in MODELS:
            for c in (None, cal):
                version += 1
                sink.insert(
                    "model_params",
                    [
                        model_params_row(
                            version,
                            pm.name,
                            True,
                            {p: getattr(pm, p) for p in pm.PARAMS},
                            (gg.p, gg.q, gg.v),
                            None if c is None else c.weights,
                            0,
                            as_of_day * DAY,
                            0.0,
                            0,
                            90,
                            0,
                            None,
                            None,
                            None,
                            "test",
                        )
                    ],
                )
                model = btyd.Model(version, pm, gg, c)
                assert load_chosen(sink) == model
                _, rows = sink.query(sql)
                worst = 0.0
                for x, tx, T, m, *values, v in rows:
                    assert v == version
                    want = model.score(x, tx, T, m)
                    worst = max(
                        worst,
                        *(abs(g - w) / max(1.0, abs(w)) for g, w in zip(values, want, strict=True)),
                    )
                assert worst < 1e-9, (pm, c, worst)


def _cdnow(customers: int) -> tuple[list[dict], list[dict]]:
    """The purchases of CDNOW's first customers, to 1997-09-30 and after."""
    events = [e for e in cdnow_events() if int(e["customer_id"]) <= customers]
    early = [e for e in events if e["occurred_at"][:10] <= "1997-09-30"]
    return early, [e for e in events if e["occurred_at"][:10] > "1997-09-30"]


def _fit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchstream.cli", "fit"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _wait_for(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def test_touchstream_fit_writes_a_version_and_the_worker_scores_with_it(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    early, later = _cdnow(1500)
    s = settings_for(broker, clickhouse.url(unique("churn")), tmp_path)
    s = s.model_copy(update={"model_poll_s": 1.0})
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        sent = send_events(s, enumerate(early, 1))
        wait_committed(s, sent.end_offsets, proc, log)

        r = _fit(worker_env(s))
        assert r.returncode == 0, r.stdout + r.stderr
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            _, fits = sink.query(
                f"SELECT version, model, chosen, n_customers, holdout_customers, "
                f"toString(as_of), holdout_log_loss FROM {db}.model_params FINAL"
            )
            assert len(fits) == 3 and len({f[0] for f in fits}) == 1
            assert sorted(f[1] for f in fits) == sorted(btyd.MODELS)
            chosen = [f for f in fits if f[2]]
            assert len(chosen) == 1
            assert chosen[0][6] == min(f[6] for f in fits)  # the best holdout log loss
            buyers = sink.query(f"SELECT count() FROM {db}.customer_rfm")[1][0][0]
            assert {f[3] for f in fits} == {buyers} and all(f[4] > 100 for f in fits)
            assert {f[5] for f in fits} == {"1997-09-30 00:00:00"}  # stream time, not now
            model = load_chosen(sink)
            assert model is not None and model.version == fits[0][0]
            assert f"version {model.version}: chosen {chosen[0][1]}" in r.stdout
            scored = sink.query(
                f"SELECT countIf(model_version = {model.version} AND "
                f"churn_probability_90d BETWEEN 0 AND 1) "
                f"FROM {db}.customer_churn"
            )
            assert scored[1][0][0] == buyers

        # The running worker picks the version up and scores every customer it changes.
        _wait_for(log, f"churn model: version {model.version} ({model.purchases.name}) loaded")
        sent = send_events(s, enumerate(later, 1))
        wait_committed(s, sent.end_offsets, proc, log)

    with open_sink(s.clickhouse_url) as sink:
        changed = {e["customer_id"] for e in later}
        _, rows = sink.query(
            f"SELECT customer_id, frequency, recency, monetary_value, "
            f"toRelativeDayNum(assumeNotNull(scored_at)) - toRelativeDayNum(assumeNotNull("
            f"first_purchase_at)), p_alive, churn_probability_90d, expected_purchases_90d, "
            f"predicted_clv_365d, model_version FROM {db}.customer_state FINAL "
            f"WHERE customer_id IN ({', '.join(repr(c) for c in sorted(changed))})"
        )
        assert len(rows) == len(changed)
        for cid, x, tx, m, T, *values, v in rows:
            assert v == model.version, (cid, v)
            want = model.score(x, tx, max(T, tx), m)
            assert all(
                abs(g - w) <= 1e-9 * max(1.0, abs(w)) for g, w in zip(values, want, strict=True)
            ), (cid, values, want)
        _, alerts = sink.query(
            f"SELECT countIf(churn_probability_90d IS NOT NULL), count() "
            f"FROM {db}.alerts FINAL WHERE at > toDateTime('1997-10-01 "
            "00:00:00', 'UTC')"
        )
        assert alerts[0][1] > 0 and alerts[0][0] == alerts[0][1]


def test_the_worker_owning_partition_0_fits_on_schedule_and_loads_the_result(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    early, _ = _cdnow(800)
    s = settings_for(broker, clickhouse.url(unique("sched")), tmp_path)
    s = s.model_copy(update={"model_poll_s": 1.0, "fit_interval_s": 5.0})
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        sent = send_events(s, enumerate(early, 1))
        wait_committed(s, sent.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            deadline = time.monotonic() + 240
            while True:
                # a fit on all of it (earlier ones may have seen part of the stream)
                _, rows = sink.query(
                    f"SELECT max(version) FROM {db}.model_params FINAL WHERE chosen = 1 "
                    "AND as_of = toDateTime('1997-09-30 00:00:00', 'UTC')"
                )
                if rows and rows[0][0]:
                    break
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(2)
            version = int(rows[0][0])
            _, models = sink.query(
                f"SELECT model FROM {db}.model_params FINAL WHERE version = {version}"
            )
        assert sorted(m[0] for m in models) == sorted(btyd.MODELS)
        _wait_for(log, f"churn model: version {version} (")


def test_migrate_adds_the_churn_columns_to_tables_of_the_previous_release(
    clickhouse: ClickHouseServer,
) -> None:
    from sinks.tables import ALERTS, CUSTOMER_STATE, Table

    new = {
        "p_alive",
        "churn_probability_90d",
        "expected_purchases_90d",
        "predicted_clv_365d",
        "model_version",
        "scored_at",
        "value_at_risk",
    }
    with open_sink(clickhouse.url(unique("old"))) as sink:
        db = sink.database
        sink.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        for t in (CUSTOMER_STATE, ALERTS):
            old = Table(t.name, tuple(c for c in t.columns if c[0] not in new), t.engine)
            sink.execute(old.ddl(db))
        statements = sink.migrate()
        added = [sql for sql in statements if "ADD COLUMN" in sql]
        assert len(added) == 6 + 2  # customer_state, alerts
        _, cols = sink.query(
            f"SELECT table, name FROM system.columns WHERE database = '{db}' "
            "AND table IN ('customer_state', 'alerts')"
        )
        by_table: dict[str, list[str]] = {}
        for table, name in cols:
            by_table.setdefault(table, []).append(name)
        assert by_table["customer_state"] == list(CUSTOMER_STATE.column_names)
        assert by_table["alerts"] == list(ALERTS.column_names)
        assert not any("ADD COLUMN" in sql for sql in sink.migrate())

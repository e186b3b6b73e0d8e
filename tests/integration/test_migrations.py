"""Numbered migrations (sinks/migrations.py) on ClickHouse 18.16 and on chdb (a current
engine): a fresh database, one the previous release made (tests/data), a migrate run
twice, two at once; the current dialect's types and TTL in place; and the same answers
from every view in both dialects."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import epoch_ms
from sinks import Sink, open_sink
from sinks.migrations import STEPS, status
from sinks.rows import cutoffs_row, dead_letter_row
from sinks.tables import CURRENT, VIEWS, view_definitions
from tests import previous_release
from touchstream import __version__
from touchstream.domain.scoring import cutoffs_from, medians_from
from touchstream.local_servers import ClickHouseServer

from .conftest import ROOT
from .test_views import (
    AS_OF,
    _plain,
    alert_rows,
    lifecycle_rows,
    ms,
    override,
    processed,
    shop_events,
)

pytestmark = pytest.mark.integration

PLAIN_ON_CURRENT = dataclasses.replace(CURRENT, low_cardinality=False, codecs=False, ttl=False)


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chdb directory for the module (chdb opens one per process), a database each."""
    return str(tmp_path_factory.mktemp("migrations") / "chdb")


def url(request: pytest.FixtureRequest, kind: str, prefix: str) -> str:
    db = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if kind == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse")
        return server.url(db)
    return f"chdb://{request.getfixturevalue('chdb_dir')}?database={db}"


@pytest.fixture(params=["server", "chdb"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def load_shop(sink: Sink) -> None:
    """test_views' shop, and the RFM cut-offs of its population (customer_scores)."""
    rows, proc, _ = processed(shop_events())
    states = override(rows["customer_state"], "c2", stage="decline", alert_level=2)
    states = override(states, "c6", stage="churned", alert_level=3)
    pop = proc.population()
    rate, amount = medians_from(pop)
    sink.insert("events", rows["events"])
    sink.insert("customer_state", states)
    sink.insert("transitions", lifecycle_rows())
    sink.insert("alerts", alert_rows())
    sink.insert(
        "stream_clock",
        [(0, epoch_ms(AS_OF), epoch_ms(AS_OF)), (1, ms("2024-03-18"), ms("2024-03-18"))],
    )
    sink.insert("rfm_cutoffs", [cutoffs_row(cutoffs_from(pop), rate, amount, epoch_ms(AS_OF))])


def answers(sink: Sink, views: Iterable[str] | None = None) -> dict[str, list[tuple]]:
    """Each view's rows (every view's by default), sorted, values made alike across sinks
    (floats to 9 digits)."""

    def same(v: Any) -> Any:
        v = _plain(v)
        if isinstance(v, float) and math.isfinite(v):
            return float(f"{v:.9g}")
        return v

    out = {}
    for name in views or view_definitions(sink.database):
        _, rows = sink.query(f"SELECT * FROM {sink.database}.{name}")
        out[name] = sorted((tuple(same(v) for v in r) for r in rows), key=repr)
    return out


def recorded(sink: Sink) -> list[tuple[int, str]]:
    _, rows = sink.query(
        f"SELECT version, touchstream_version FROM {sink.database}.schema_migrations "
        "ORDER BY version"
    )
    return [(int(v), str(t)) for v, t in rows]


def schema_is_complete(sink: Sink) -> None:
    st = status(sink)
    assert [a.version for a in st.applied] == [s.version for s in STEPS]
    assert st.plan.statements == [] and sink.missing_columns() == []
    _, rows = sink.query(f"SELECT name FROM system.tables WHERE database = '{sink.database}'")
    names = {r[0] for r in rows}
    assert set(view_definitions(sink.database)) <= names
    assert not [n for n in names if "__next_" in n], "no view left half swapped"


def make_previous_release(sink: Sink) -> None:
    sink.execute(f"CREATE DATABASE IF NOT EXISTS {sink.database}")
    for sql in previous_release.statements(sink.database):
        sink.execute(sql)


def test_a_fresh_migrate_records_every_step_and_a_second_one_changes_no_table(
    request: pytest.FixtureRequest, kind: str
) -> None:
    with open_sink(url(request, kind, "fresh")) as sink:
        assert status(sink).plan.pending == list(STEPS)
        sink.migrate()
        assert recorded(sink) == [(s.version, __version__) for s in STEPS]
        again = sink.migrate()
        assert [s for s in again if "VIEW" not in s and not s.startswith(("DROP", "RENAME"))] == []
        assert recorded(sink) == [(s.version, __version__) for s in STEPS]  # once each
        schema_is_complete(sink)


def test_a_database_of_the_previous_release_is_adopted_and_answers_as_a_fresh_one(
    request: pytest.FixtureRequest, kind: str
) -> None:
    with open_sink(url(request, kind, "old")) as old, open_sink(url(request, kind, "new")) as new:
        make_previous_release(old)
        load_shop(old)  # the rows it wrote: new columns are the server's to fill
        before = status(old)
        assert before.plan.predates_migrations and before.applied == ()
        statements = old.migrate()
        created = [s for s in statements if s.startswith("CREATE TABLE")]
        assert len(created) == 1 and ".schema_migrations (" in created[0]  # the rest was there
        assert any("ADD COLUMN" in s and "`satisfaction`" in s for s in statements)
        schema_is_complete(old)
        new.migrate()
        load_shop(new)
        # the views on the tables that changed (the test below compares all views)
        views = (
            "satisfaction_monthly",
            "complaint_repurchase",
            "customer_profile",
            "customer_scores",
            "retention_cohorts",
        )
        got, want = answers(old, views), answers(new, views)
        assert got == want
        assert got["satisfaction_monthly"] and got["complaint_repurchase"]  # step 2's columns
        assert got["customer_scores"]
        if kind == "chdb":  # a current engine: the tables are brought to its dialect
            _, cols = old.query(
                "SELECT table, name, type FROM system.columns "
                f"WHERE database = '{old.database}' AND name IN ('type', 'stage', 'kind') "
                "AND table IN ('events', 'customer_state', 'alerts', 'rfm_cutoffs')"
            )
            assert {(t, n): ty for t, n, ty in cols} == {
                ("events", "type"): "LowCardinality(String)",
                ("customer_state", "stage"): "LowCardinality(String)",
                ("alerts", "kind"): "LowCardinality(String)",
                ("alerts", "stage"): "LowCardinality(String)",
                ("rfm_cutoffs", "kind"): "LowCardinality(String)",
            }


@pytest.mark.parametrize("start", ["fresh", "previous release"])
def test_two_migrates_at_once_on_18_16_leave_one_complete_schema(
    clickhouse: ClickHouseServer, start: str
) -> None:
    target = clickhouse.url(f"twice_{uuid.uuid4().hex[:8]}")
    if start == "previous release":
        with open_sink(target) as sink:
            make_previous_release(sink)
    env = {**os.environ, "TOUCHSTREAM_CLICKHOUSE_URL": target}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "touchstream.cli", "migrate", "--no-topics"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    with open_sink(target) as sink:
        schema_is_complete(sink)
        for view in VIEWS:
            sink.query(f"SELECT count() FROM {sink.database}.{view}")


def test_on_a_current_engine_low_cardinality_codecs_and_the_ttl_are_in_place(
    chdb_dir: str,
) -> None:
    with open_sink(f"chdb://{chdb_dir}?database=lc_{uuid.uuid4().hex[:8]}") as sink:
        db = sink.database
        sink.migrate(ttl_days={"dead_letters": 30, "rfm_cutoffs": 7})
        _, cols = sink.query(
            "SELECT table, name, type, compression_codec FROM system.columns "
            f"WHERE database = '{db}'"
        )
        col = {(t, n): (ty, c) for t, n, ty, c in cols}
        for t, n in [
            ("events", "type"),
            ("events", "source"),
            ("events", "currency"),
            ("events", "satisfaction"),
            ("customer_state", "stage"),
            ("customer_state", "defection_type"),
            ("alerts", "kind"),
            ("rfm_cutoffs", "kind"),
        ]:
            assert col[t, n][0] == "LowCardinality(String)", (t, n)
        assert col["events", "occurred_at"] == ("DateTime('UTC')", "CODEC(Delta(4), ZSTD(1))")
        assert col["events", "attributes"] == ("String", "CODEC(ZSTD(3))")
        assert col["events", "customer_id"][0] == "String"  # the key stays as it is

        def ttls() -> dict[str, str]:
            _, rows = sink.query(
                f"SELECT name, engine_full FROM system.tables WHERE database = '{db}' "
                "AND name IN ('dead_letters', 'rfm_cutoffs')"
            )
            return {
                n: e.split(" TTL ")[1].split(" SETTINGS")[0] if " TTL " in e else ""
                for n, e in rows
            }

        assert ttls() == {
            "dead_letters": "received_at + toIntervalDay(30)",
            "rfm_cutoffs": "written_at + toIntervalDay(7)",
        }
        now = datetime.now(UTC)
        sink.insert(
            "dead_letters",
            [
                dead_letter_row("in", 0, 1, b"k", b"{", "old", now - timedelta(days=31)),
                dead_letter_row("in", 0, 2, b"k", b"{", "new", now - timedelta(days=29)),
            ],
        )
        sink.execute(f"OPTIMIZE TABLE {db}.dead_letters FINAL")
        _, rows = sink.query(f"SELECT reason FROM {db}.dead_letters")
        assert rows == [("new",)]
        sink.migrate(ttl_days={"dead_letters": 0, "rfm_cutoffs": 14})
        assert ttls() == {"dead_letters": "", "rfm_cutoffs": "written_at + toIntervalDay(14)"}
        assert not [
            s for s in sink.migrate(ttl_days={"dead_letters": 0, "rfm_cutoffs": 14}) if "ALTER" in s
        ]


@pytest.fixture(scope="module")
def three(request: pytest.FixtureRequest) -> Iterator[dict[str, Sink]]:
    """The shop in ClickHouse 18.16, and on chdb in the 18.16 dialect and the current."""
    sinks = {
        "18.16": open_sink(url(request, "server", "same")),
        "chdb, 18.16 dialect": open_sink(url(request, "chdb", "same")),
        "chdb, current dialect": open_sink(url(request, "chdb", "same")),
    }
    sinks["chdb, 18.16 dialect"].capabilities = lambda: PLAIN_ON_CURRENT  # type: ignore[method-assign]
    try:
        for sink in sinks.values():
            sink.migrate()
            load_shop(sink)
        yield sinks
    finally:
        for sink in sinks.values():
            sink.close()


def test_both_dialects_on_both_engines_give_every_view_the_same_answers(
    three: dict[str, Sink],
) -> None:
    _, cols = three["chdb, 18.16 dialect"].query(
        "SELECT count() FROM system.columns WHERE database = "
        f"'{three['chdb, 18.16 dialect'].database}' AND type LIKE 'LowCardinality%'"
    )
    assert cols == [(0,)]  # the forced dialect holds
    got = {name: answers(sink) for name, sink in three.items()}
    reference = got["18.16"]
    assert all(reference[v] for v in ("customer_profile", "customer_scores", "segment_monthly"))
    for name, views in got.items():
        for view, rows in views.items():
            assert rows == reference[view], (name, view)


def test_migrate_status_lists_pending_steps_then_their_records_and_changes_nothing(
    clickhouse: ClickHouseServer,
) -> None:
    target = clickhouse.url(f"status_{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "TOUCHSTREAM_CLICKHOUSE_URL": target, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "touchstream.cli", "migrate", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    before = cli("--status")
    assert before.returncode == 0, before.stderr
    assert "18.16 dialect" in before.stdout
    assert before.stdout.count("pending") == len(STEPS)
    assert "CREATE DATABASE IF NOT EXISTS" in before.stdout
    with open_sink(target) as sink:
        _, rows = sink.query(f"SELECT count() FROM system.databases WHERE name = '{sink.database}'")
        assert rows == [(0,)]  # --status created nothing
        sink.migrate()
    after = cli("--status")
    assert after.returncode == 0, after.stderr
    assert "pending" not in after.stdout and "up to date" in after.stdout
    assert after.stdout.count(__version__) == len(STEPS)


def test_migrates_repeated_at_once_on_18_16_all_finish_while_views_are_swapped(
    clickhouse: ClickHouseServer,
) -> None:
    # 18.16 fails a read of system.tables when a table it lists is dropped meanwhile: a
    # worker starting beside another one read the other's temporary view as it went.
    from concurrent.futures import ThreadPoolExecutor

    target = clickhouse.url(f"busy_{uuid.uuid4().hex[:8]}")
    with open_sink(target) as sink:
        sink.migrate()

    def migrate_often(_: int) -> int:
        with open_sink(target) as sink:
            for _ in range(6):
                sink.migrate()
        return 6

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(migrate_often, range(4))) == 24
    with open_sink(target) as sink:
        schema_is_complete(sink)
        _, rows = sink.query(
            f"SELECT name FROM system.tables WHERE database = '{sink.database}' "
            "AND name LIKE '%\\\\_\\\\_next\\\\_%'"
        )
        assert rows == []

"""sinks/migrations.py's planner (pure): from what a database holds, what the server has
and the settings, which statements a migrate runs."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sinks.migrations import (
    MIGRATIONS_TABLE,
    STEPS,
    ColumnState,
    Snapshot,
    plan,
)
from sinks.tables import (
    BY_NAME,
    CURRENT,
    PLAIN,
    TABLES,
    Capabilities,
    Cluster,
    Table,
    view_definitions,
)
from tests import previous_release
from touchstream.config import Settings

ALL = frozenset(s.version for s in STEPS)


def made_by(
    tables: list[Table] | tuple[Table, ...] = TABLES,
    caps: Capabilities = PLAIN,
    applied: frozenset[int] | None = ALL,
    ttl_days: dict[str, int] | None = None,
) -> Snapshot:
    """The snapshot of a database this description made on a server with ``caps``."""
    cols = {
        t.name: {c.name: ColumnState(c.type_in(caps), c.codec_in(caps)) for c in t.all_columns}
        for t in tables
    }
    ttls = {t.name: t.ttl_expression(caps, ttl_days) for t in tables}
    return Snapshot(True, cols, ttls, applied)


def previous_release_snapshot() -> Snapshot:
    cols = {
        name: {c: ColumnState(ty) for c, ty in pairs}
        for name, pairs in previous_release.tables().items()
    }
    return Snapshot(True, cols, dict.fromkeys(cols, ""), None)


def by_group(p) -> dict[str, list[str]]:
    return {g.label.split(":")[0]: list(g.statements) for g in p.groups}


# -- the steps and the description ----------------------------------------------------


def test_steps_are_numbered_one_up_from_one_with_distinct_names():
    assert [s.version for s in STEPS] == list(range(1, len(STEPS) + 1))
    assert len({s.name for s in STEPS}) == len(STEPS)


def test_every_table_and_column_comes_from_a_step_no_earlier_than_its_table():
    for t in TABLES:
        assert t.since in ALL, t.name
        for c in t.all_columns:
            assert c.since in ALL and c.since >= t.since, (t.name, c.name)


def test_the_baseline_is_exactly_the_tables_of_the_previous_release():
    baseline = {
        t.name: [(c.name, c.type) for c in t.all_columns if c.since == 1]
        for t in TABLES
        if t.since == 1
    }
    assert baseline == previous_release.tables()


def test_low_cardinality_is_only_for_strings_outside_the_sorting_key():
    for t in TABLES:
        for c in t.all_columns:
            if c.low_cardinality:
                assert c.type == "String" and c.name not in t.key, (t.name, c.name)


def test_every_table_with_a_ttl_has_a_setting_whose_default_is_the_tables():
    with_ttl = {t.name: t.ttl[1] for t in TABLES if t.ttl}
    assert with_ttl == {"dead_letters": 30, "rfm_cutoffs": 7}
    assert Settings().ttl_days == with_ttl
    for t in TABLES:
        if t.ttl:
            assert dict(t.columns + tuple((c.name, c.type) for c in t.all_columns))[
                t.ttl[0]
            ].startswith("DateTime")


# -- capabilities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((18, 16, 1), PLAIN),
        ((19, 5, 0), dataclasses.replace(PLAIN, replace_view=True)),
        ((21, 3, 20), dataclasses.replace(PLAIN, replace_view=True)),
        ((21, 8, 0), CURRENT),
        ((26, 9, 2), CURRENT),
    ],
)
def test_capabilities_follow_the_server_version(version, expected):
    assert Capabilities.of(version) == expected


# -- fresh databases ------------------------------------------------------------------


def test_a_fresh_database_on_18_16_gets_every_table_whole_in_step_one_in_the_plain_dialect():
    p = plan("db", Snapshot(), PLAIN)
    groups = by_group(p)
    assert groups[MIGRATIONS_TABLE][0] == "CREATE DATABASE IF NOT EXISTS db"
    assert groups[MIGRATIONS_TABLE][1].startswith(
        f"CREATE TABLE IF NOT EXISTS db.{MIGRATIONS_TABLE}"
    )
    created = [
        re.match(r"CREATE TABLE IF NOT EXISTS db\.(\w+) ", s).group(1) for s in groups["step 1"]
    ]
    assert created == [t.name for t in TABLES]
    for sql in p.statements:
        assert not re.search(r"LowCardinality|CODEC|TTL", sql), sql
    assert "`satisfaction` String MATERIALIZED" in groups["step 1"][0]  # step 2's, whole
    assert [g.step.version for g in p.groups if g.step] == [1, 2, 3]
    assert groups["step 2"] == groups["step 3"] == []
    assert "check" not in groups and "dialect" not in groups
    assert not p.predates_migrations


def test_a_fresh_database_on_a_current_server_gets_low_cardinality_codecs_and_ttl():
    p = plan("db", Snapshot(), CURRENT, {"dead_letters": 14, "rfm_cutoffs": 0})
    ddl = {
        re.match(r"CREATE TABLE IF NOT EXISTS db\.(\w+) ", s).group(1): s for s in p.statements[2:]
    }
    assert "`type` LowCardinality(String)," in ddl["events"]
    assert "`occurred_at` DateTime('UTC') CODEC(Delta(4), ZSTD(1))," in ddl["events"]
    assert "`attributes` String CODEC(ZSTD(3))," in ddl["events"]
    assert "`stage` LowCardinality(String)," in ddl["customer_state"]
    assert ddl["dead_letters"].endswith("TTL received_at + toIntervalDay(14)")
    assert "TTL" not in ddl["rfm_cutoffs"]  # 0 days: kept forever
    assert "`written_at` DateTime('UTC') DEFAULT now() CODEC(" in ddl["rfm_cutoffs"]
    assert "dialect" not in by_group(p)


@pytest.mark.parametrize("caps", [PLAIN, CURRENT], ids=["18.16", "current"])
def test_a_database_this_release_made_plans_nothing(caps):
    assert plan("db", made_by(caps=caps), caps).statements == []


# -- databases of earlier releases ----------------------------------------------------


def test_the_previous_release_on_18_16_is_adopted_with_check_then_add_columns():
    p = plan("db", previous_release_snapshot(), PLAIN)
    assert p.predates_migrations
    groups = by_group(p)
    assert groups[MIGRATIONS_TABLE] == [
        s for s in groups[MIGRATIONS_TABLE] if s.startswith("CREATE TABLE IF NOT EXISTS db.schema")
    ]
    assert groups["step 1"] == []  # every baseline table and column is there
    assert groups["step 2"] == [
        "ALTER TABLE db.events ADD COLUMN `satisfaction` String MATERIALIZED "
        "visitParamExtractString(attributes, 'satisfaction')",
        "ALTER TABLE db.events ADD COLUMN `complaint_id` String MATERIALIZED "
        "visitParamExtractString(attributes, 'complaint_id') AFTER `satisfaction`",
        "ALTER TABLE db.events ADD COLUMN `category` String MATERIALIZED "
        "visitParamExtractString(attributes, 'category') AFTER `complaint_id`",
        "ALTER TABLE db.events ADD COLUMN `reason` String MATERIALIZED "
        "visitParamExtractString(attributes, 'reason') AFTER `category`",
    ]
    assert groups["step 3"] == [
        "ALTER TABLE db.rfm_cutoffs ADD COLUMN `written_at` DateTime('UTC') DEFAULT now() "
        "AFTER `version`"
    ]
    assert "check" not in groups and "dialect" not in groups


def test_the_previous_release_on_a_current_server_gets_if_not_exists_and_its_dialect():
    p = plan("db", previous_release_snapshot(), CURRENT)
    groups = by_group(p)
    assert all(" ADD COLUMN IF NOT EXISTS " in s for s in groups["step 2"] + groups["step 3"])
    dialect = groups["dialect"]
    events = next(s for s in dialect if s.startswith("ALTER TABLE db.events "))
    assert "MODIFY COLUMN `type` LowCardinality(String)" in events
    assert "MODIFY COLUMN `occurred_at` DateTime('UTC') CODEC(Delta(4), ZSTD(1))" in events
    # the columns step 2 just added are made in this dialect already
    assert "`satisfaction`" not in events
    assert "ALTER TABLE db.dead_letters MODIFY TTL received_at + toIntervalDay(30)" in dialect
    assert "ALTER TABLE db.rfm_cutoffs MODIFY TTL written_at + toIntervalDay(7)" in dialect
    assert not any("model_params" in s for s in dialect)  # nothing of its to change


def test_tables_older_than_the_previous_release_get_their_missing_columns_in_step_one():
    old = {
        "customer_state": {
            c.name: ColumnState(c.type)
            for c in BY_NAME["customer_state"].all_columns
            if c.name not in ("p_alive", "scored_at")
        }
    }
    p = plan("db", Snapshot(True, old, {}, None), PLAIN)
    step1 = by_group(p)["step 1"]
    adds = [s for s in step1 if "ADD COLUMN" in s]
    assert adds == [
        "ALTER TABLE db.customer_state ADD COLUMN `p_alive` Nullable(Float64) "
        "AFTER `complaint_outcome`",
        "ALTER TABLE db.customer_state ADD COLUMN `scored_at` Nullable(DateTime('UTC')) "
        "AFTER `model_version`",
    ]
    assert len(step1) == len(adds) + len(TABLES) - 1  # the other tables are created


def test_recorded_steps_are_not_planned_again_but_what_they_made_is_checked():
    snap = made_by()
    events = dict(snap.tables["events"])
    del events["reason"]
    tables = {**snap.tables, "events": events}
    tables.pop("stream_clock")
    p = plan("db", Snapshot(True, tables, snap.ttls, ALL), PLAIN)
    assert p.pending == []
    groups = by_group(p)
    assert list(groups) == ["check"]
    assert groups["check"][0].startswith("ALTER TABLE db.events ADD COLUMN `reason` String")
    assert groups["check"][1].startswith("CREATE TABLE IF NOT EXISTS db.stream_clock (")


def test_only_the_unrecorded_steps_are_pending():
    p = plan("db", made_by(applied=frozenset({1})), PLAIN)
    assert [s.version for s in p.pending] == [2, 3]
    assert p.statements == []  # their columns are there: recorded, nothing to run


# -- a server upgraded from 18.16, and the TTL settings -------------------------------


def test_a_database_of_18_16_on_an_upgraded_server_gets_the_current_dialect_only():
    p = plan("db", made_by(caps=PLAIN), CURRENT)
    groups = by_group(p)
    assert list(groups) == ["dialect"]
    tables = [s.split()[2] for s in groups["dialect"] if " MODIFY COLUMN " in s]
    assert tables == [
        f"db.{t.name}" for t in TABLES if any(c.codec or c.low_cardinality for c in t.all_columns)
    ]
    again = made_by(caps=CURRENT)
    assert plan("db", again, CURRENT).statements == []


def test_other_ttl_days_modify_the_ttl_and_zero_removes_it():
    p = plan("db", made_by(caps=CURRENT), CURRENT, {"dead_letters": 90, "rfm_cutoffs": 0})
    assert p.statements == [
        "ALTER TABLE db.dead_letters MODIFY TTL received_at + toIntervalDay(90)",
        "ALTER TABLE db.rfm_cutoffs REMOVE TTL",
    ]
    assert plan("db", made_by(caps=PLAIN), PLAIN, {"dead_letters": 90}).statements == []


def test_a_type_the_description_does_not_know_is_left_to_a_step():
    snap = made_by(caps=CURRENT)
    events = {**snap.tables["events"], "type": ColumnState("Enum8('purchase' = 1)")}
    p = plan("db", Snapshot(True, {**snap.tables, "events": events}, snap.ttls, ALL), CURRENT)
    assert p.statements == []


# -- cluster mode ----------------------------------------------------------------------

CLUSTER = Cluster("c2x2")


def made_in_cluster(caps: Capabilities = PLAIN) -> Snapshot:
    """A database this description made in cluster mode: local tables and Distributed ones."""
    snap = made_by(caps=caps)
    dist = {t.name: t.distributed_columns(caps) for t in TABLES}
    return dataclasses.replace(snap, distributed=dist)


@pytest.mark.parametrize("caps", [PLAIN, CURRENT])
def test_a_fresh_database_in_cluster_mode_runs_every_statement_on_the_cluster(caps):
    p = plan("ts", Snapshot(), caps, cluster=CLUSTER)
    assert all(" ON CLUSTER c2x2 " in sql.split("(", 1)[0] + " " for sql in p.statements)
    creates = by_group(p)["step 1"]
    for t in TABLES:
        local = next(sql for sql in creates if f"ts.{t.name}_local " in sql)
        assert f"ENGINE = Replicated{t.engine.split('(', 1)[0]}(" in local
        assert f"'/clickhouse/tables/{{shard}}/ts/{t.name}_local', '{{replica}}', version)" in local
        assert t.engine.split(")", 1)[1] in local, "the same PARTITION BY and ORDER BY"
    dist = by_group(p)["Distributed tables on cluster c2x2"]
    assert len(dist) == len(TABLES)
    events = next(sql for sql in dist if "ts.events " in sql)
    assert "Distributed(c2x2, ts, events_local, cityHash64(customer_id))" in events
    satisfaction = BY_NAME["events"].all_columns[11]
    alias = "ALIAS visitParamExtractString(attributes, 'satisfaction')"
    assert f"`satisfaction` {satisfaction.type_in(caps)} {alias}" in events
    assert "MATERIALIZED" not in events and "CODEC" not in events
    assert "ReplicatedMergeTree('/clickhouse/tables/all/ts/schema_migrations'" in p.statements[1]


def test_tables_without_a_customer_are_sharded_by_their_whole_key():
    assert BY_NAME["transitions"].shard_key == "cityHash64(customer_id)"
    assert BY_NAME["dead_letters"].shard_key == "cityHash64(topic, partition, offset)"
    assert BY_NAME["stream_clock"].shard_key == "cityHash64(partition)"


@pytest.mark.parametrize("caps", [PLAIN, CURRENT])
def test_a_database_this_release_made_in_cluster_mode_plans_nothing(caps):
    assert plan("ts", made_in_cluster(caps), caps, cluster=CLUSTER).statements == []


def test_a_step_adding_a_column_alters_the_local_tables_and_swaps_the_distributed_one():
    snap = made_in_cluster()
    cols = {t: dict(c) for t, c in snap.tables.items()}
    del cols["rfm_cutoffs"]["written_at"]
    dist = dict(snap.distributed)
    dist["rfm_cutoffs"] = tuple(c for c in dist["rfm_cutoffs"] if c[0] != "written_at")
    snap = dataclasses.replace(snap, tables=cols, applied=frozenset({1, 2}), distributed=dist)
    groups = by_group(plan("ts", snap, PLAIN, cluster=CLUSTER))
    assert groups["step 3"] == [
        "ALTER TABLE ts.rfm_cutoffs_local ON CLUSTER c2x2 ADD COLUMN `written_at` "
        "DateTime('UTC') DEFAULT now() AFTER `version`"
    ]
    swap = groups["Distributed tables on cluster c2x2"]
    assert swap[0] == "DROP TABLE IF EXISTS ts.rfm_cutoffs__next ON CLUSTER c2x2"
    assert swap[1].startswith("CREATE TABLE IF NOT EXISTS ts.rfm_cutoffs__next ON CLUSTER c2x2")
    assert swap[2] == (
        "RENAME TABLE ts.rfm_cutoffs TO ts.rfm_cutoffs__previous, "
        "ts.rfm_cutoffs__next TO ts.rfm_cutoffs ON CLUSTER c2x2"
    )
    assert swap[3] == "DROP TABLE IF EXISTS ts.rfm_cutoffs__previous ON CLUSTER c2x2"


def test_without_a_cluster_the_plan_is_the_single_servers():
    assert "ON CLUSTER" not in " ".join(plan("ts", Snapshot(), PLAIN).statements)


def test_views_join_globally_in_cluster_mode_and_array_joins_stay_as_they_are():
    one = view_definitions("ts")
    many = view_definitions("ts", cluster=CLUSTER)
    assert "GLOBAL" not in " ".join(one.values())
    assert "AS s GLOBAL ANY LEFT JOIN" in many["customer_churn"]
    assert "GLOBAL CROSS JOIN" in many["customer_scores"]
    for name, select in many.items():
        assert "GLOBAL ARRAY" not in select
        assert select.count("JOIN") == one[name].count("JOIN")
        assert select.count("GLOBAL") == one[name].count("JOIN") - one[name].count("ARRAY JOIN")

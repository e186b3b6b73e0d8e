"""Numbered schema migrations, recorded in the database's ``schema_migrations`` table.

``STEPS`` is the ordered list of schema changes. Step 1 is the baseline: the tables of
the release before numbered migrations. Each later change is a new step, never an edit
of an old one. What a step does comes from the table description (sinks/tables.py): a
table or column with ``since=N`` is created or added by step N. Each step, once its
statements ran, is recorded (version, name, applied_at, touchstream_version).

``plan`` is pure: from a ``Snapshot`` of the database (its tables, columns, TTLs and
recorded steps) and the server's ``Capabilities`` it gives the statements to run, in
groups. A table is created with every column it has now, in the server's dialect; a
step adds its columns to tables that existed before. After the steps, a check adds any
table or column still missing (a database whose records say more than it holds), and
the dialect group brings column types, codecs and TTLs to what this server and the
settings call for (a server upgraded from 18.16 gets LowCardinality and codecs there).
A database made before numbered migrations has tables and no ``schema_migrations``: every
step is pending, each finds what is there already and adds what is not, and is recorded.

``migrate`` runs the plan, then replaces the views in place. It is safe with several
processes at once: every statement is idempotent (IF NOT EXISTS where the server has it,
check-then-add on 18.16), and a statement that fails is checked against a fresh plan:
if that no longer holds it, another process did it first and the error is ignored.

In cluster mode (a ``Cluster``) every statement runs ``ON CLUSTER``: the tables are the
replicated ``<table>_local`` ones, a last group creates the Distributed tables in front
of them or, when their columns differ (a step added one), swaps new ones in (18.16
refuses ALTER ON CLUSTER of a table that is not replicated in a replicated cluster), and
``schema_migrations`` is one replicated table all servers share, so a migrate connected
to any server sees the records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sinks.errors import SinkError
from sinks.tables import (
    TABLES,
    Capabilities,
    Cluster,
    Column,
    Table,
    on_cluster,
    stored_name,
    view_definitions,
)
from sinks.views import sql_str

if TYPE_CHECKING:
    from sinks.base import Sink

MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Step:
    version: int
    name: str


STEPS: tuple[Step, ...] = (
    Step(1, "baseline: the tables of the release before numbered migrations"),
    Step(2, "events: satisfaction, complaint_id, category and reason as columns (from attributes)"),
    Step(3, "rfm_cutoffs: written_at, the insert's wall-clock time the TTL counts from"),
)


def migrations_ddl(db: str, cluster: Cluster | None = None) -> str:
    # In a cluster one replicated table on every server (a single ZooKeeper path, every
    # server a replica of it): the records are the same wherever a migrate connects.
    engine = (
        f"ReplicatedMergeTree('/clickhouse/tables/all/{db}/{MIGRATIONS_TABLE}', "
        "'{shard}-{replica}')"
        if cluster
        else "MergeTree"
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE}{on_cluster(cluster)} (\n"
        "  `version` UInt32,\n  `name` String,\n  `applied_at` DateTime('UTC'),\n"
        f"  `touchstream_version` String\n) ENGINE = {engine} ORDER BY version"
    )


def record_sql(db: str, step: Step, touchstream_version: str) -> str:
    # Two processes applying the same step both record it: readers group by version.
    return (
        f"INSERT INTO {db}.{MIGRATIONS_TABLE} (version, name, applied_at, touchstream_version) "
        f"SELECT {step.version}, {sql_str(step.name)}, now(), {sql_str(touchstream_version)}"
    )


@dataclass(frozen=True)
class ColumnState:
    type: str
    codec: str = ""  # as system.columns.compression_codec gives it ('' for none or unknown)


@dataclass(frozen=True)
class Snapshot:
    """What a database holds, as read before planning."""

    database: bool = False  # the database exists
    tables: Mapping[str, Mapping[str, ColumnState]] = field(default_factory=dict)
    ttls: Mapping[str, str] = field(default_factory=dict)  # table -> TTL expression
    applied: frozenset[int] | None = None  # recorded steps; None: no schema_migrations
    # Cluster mode: table -> the (name, type) columns of its Distributed table.
    distributed: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @property
    def predates_migrations(self) -> bool:
        """Tables of a release before numbered migrations, and no record of any step."""
        return self.applied is None and any(t.name in self.tables for t in TABLES)


@dataclass(frozen=True)
class Group:
    label: str
    statements: tuple[str, ...]
    step: Step | None = None  # recorded once its statements ran


@dataclass(frozen=True)
class Plan:
    groups: tuple[Group, ...]
    predates_migrations: bool = False

    @property
    def statements(self) -> list[str]:
        return [sql for g in self.groups for sql in g.statements]

    @property
    def pending(self) -> list[Step]:
        return [g.step for g in self.groups if g.step is not None]


class _Model:
    """The database as planned so far: the snapshot plus the planned statements' effects."""

    def __init__(self, snap: Snapshot) -> None:
        self.tables = {t: dict(cols) for t, cols in snap.tables.items()}
        self.ttls = dict(snap.ttls)

    def create(self, t: Table, caps: Capabilities, ttl: str) -> None:
        self.tables[t.name] = {c.name: _state(c, caps) for c in t.all_columns}
        self.ttls[t.name] = ttl


def _state(c: Column, caps: Capabilities) -> ColumnState:
    return ColumnState(c.type_in(caps), c.codec_in(caps))


def _materialized(c: Column) -> bool:
    return c.fill.startswith("MATERIALIZED")


def _ensure(
    db: str,
    model: _Model,
    caps: Capabilities,
    ttl_days: Mapping[str, int] | None,
    tables: Iterable[Table],
    wanted: Callable[[Table | Column], bool],
    cluster: Cluster | None = None,
) -> list[str]:
    """Create the wanted tables that are missing (whole, as they are now) and add the
    wanted columns missing from the others, each after the column before it."""
    out = []
    for t in tables:
        if t.name not in model.tables:
            if wanted(t):
                ttl = t.ttl_expression(caps, ttl_days)
                out.append(t.ddl(db, caps, ttl_days, cluster))
                model.create(t, caps, ttl)
            continue
        have = model.tables[t.name]
        for i, c in enumerate(t.all_columns):
            if c.name in have or not wanted(c):
                continue
            # 18.16 keeps MATERIALIZED columns in a list of their own: AFTER finds only those.
            before = [
                b.name
                for b in t.all_columns[:i]
                if b.name in have and _materialized(b) == _materialized(c)
            ]
            where = f" AFTER `{before[-1]}`" if before else ""
            if_not = "IF NOT EXISTS " if caps.add_column_if_not_exists else ""
            out.append(
                f"ALTER TABLE {db}.{stored_name(t.name, cluster)}{on_cluster(cluster)} "
                f"ADD COLUMN {if_not}{c.ddl(caps)}{where}"
            )
            have[c.name] = _state(c, caps)
    return out


def _dialect(
    db: str,
    model: _Model,
    caps: Capabilities,
    ttl_days: Mapping[str, int] | None,
    tables: Iterable[Table],
    cluster: Cluster | None = None,
) -> list[str]:
    """Types, codecs and TTLs as this server and the settings call for, on tables made
    in another dialect (by an earlier release, or before the server was upgraded) or
    with other TTL days. Only dialect differences are changed: LowCardinality or not,
    the codec; a change of type is a step of its own."""
    if not (caps.low_cardinality or caps.codecs or caps.ttl):
        return []
    out = []
    for t in tables:
        have = model.tables.get(t.name)
        if have is None:
            continue
        alter = f"ALTER TABLE {db}.{stored_name(t.name, cluster)}{on_cluster(cluster)} "
        modify = []
        for c in t.all_columns:
            now, want = have.get(c.name), _state(c, caps)
            if now is None or now.type not in (c.type, f"LowCardinality({c.type})"):
                continue
            if now.type != want.type or (want.codec and now.codec != want.codec):
                modify.append(f"MODIFY COLUMN {c.ddl(caps)}")
                have[c.name] = want
        if modify:
            out.append(alter + ", ".join(modify))
        if t.ttl is not None and caps.ttl:
            want_ttl = t.ttl_expression(caps, ttl_days)
            if model.ttls.get(t.name, "") != want_ttl:
                out.append(alter + (f"MODIFY TTL {want_ttl}" if want_ttl else "REMOVE TTL"))
                model.ttls[t.name] = want_ttl
    return out


def _distributed(
    db: str, snap: Snapshot, caps: Capabilities, cluster: Cluster, tables: Iterable[Table]
) -> list[str]:
    """The Distributed tables: created where missing; where the columns differ from the
    local table's (a step added one, the dialect changed a type), a new one is made
    beside it and both renamed in one statement, so readers and inserts never find the
    name missing (it holds no rows: inserts are synchronous)."""
    out = []
    for t in tables:
        have = snap.distributed.get(t.name)
        if have is None:
            out.append(t.distributed_ddl(db, caps, cluster))
        elif have != t.distributed_columns(caps):
            nxt, prev = f"{t.name}__next", f"{t.name}__previous"
            out += [
                f"DROP TABLE IF EXISTS {db}.{nxt}{cluster.on}",
                t.distributed_ddl(db, caps, cluster, nxt),
                f"RENAME TABLE {db}.{t.name} TO {db}.{prev}, {db}.{nxt} TO {db}.{t.name}"
                f"{cluster.on}",
                f"DROP TABLE IF EXISTS {db}.{prev}{cluster.on}",
            ]
    return out


def _since(version: int) -> Callable[[Any], bool]:
    """Selects what the step numbered ``version`` added."""
    return lambda x: bool(x.since == version)


def plan(
    db: str,
    snap: Snapshot,
    caps: Capabilities,
    ttl_days: Mapping[str, int] | None = None,
    steps: Sequence[Step] = STEPS,
    tables: Sequence[Table] = TABLES,
    cluster: Cluster | None = None,
) -> Plan:
    """The statements that bring ``db`` from ``snap`` to the description, in groups:
    the migrations table, each pending step (in order), a check, the dialect; in
    cluster mode then the Distributed tables."""
    model = _Model(snap)
    groups = []
    boot = [] if snap.database else [f"CREATE DATABASE IF NOT EXISTS {db}{on_cluster(cluster)}"]
    if snap.applied is None:
        boot.append(migrations_ddl(db, cluster))
    if boot:
        groups.append(Group(MIGRATIONS_TABLE, tuple(boot)))
    applied = snap.applied or frozenset()
    for step in steps:
        if step.version in applied:
            continue
        sql = _ensure(db, model, caps, ttl_days, tables, _since(step.version), cluster)
        groups.append(Group(f"step {step.version}: {step.name}", tuple(sql), step))
    check = _ensure(db, model, caps, ttl_days, tables, lambda x: True, cluster)
    if check:
        groups.append(
            Group("check: tables and columns of applied steps found missing", tuple(check))
        )
    dialect = _dialect(db, model, caps, ttl_days, tables, cluster)
    if dialect:
        groups.append(
            Group(f"dialect: column types, codecs and TTL ({caps.dialect})", tuple(dialect))
        )
    if cluster is not None:
        dist = _distributed(db, snap, caps, cluster, tables)
        if dist:
            groups.append(Group(f"Distributed tables on cluster {cluster.name}", tuple(dist)))
    return Plan(tuple(groups), snap.predates_migrations)


# -- the imperative shell: read the database, run the plan --------------------------


def read_snapshot(sink: Sink, caps: Capabilities, cluster: Cluster | None = None) -> Snapshot:
    """The database as the connected server has it (in cluster mode: its local tables
    under the tables' names, and its Distributed tables)."""
    db = sql_str(sink.database)
    _, rows = sink.query(f"SELECT count() FROM system.databases WHERE name = {db}")
    if not int(rows[0][0]):
        return Snapshot()
    _, rows = sink.catalog(
        f"SELECT name, engine_full, engine FROM system.tables WHERE database = {db} "
        "AND (engine LIKE '%MergeTree' OR engine = 'Distributed')"
    )
    # stored name -> the table's name in the description
    names = {stored_name(t.name, cluster): t.name for t in TABLES}
    names[MIGRATIONS_TABLE] = MIGRATIONS_TABLE
    ttls = {
        names.get(str(name), str(name)): _ttl_of(str(full))
        for name, full, engine in rows
        if engine != "Distributed"
    }
    dist_names = {str(name) for name, _, engine in rows if engine == "Distributed"}
    codec = "compression_codec" if caps.codecs else "''"
    _, rows = sink.catalog(
        f"SELECT table, name, type, {codec} FROM system.columns WHERE database = {db}"
    )
    tables: dict[str, dict[str, ColumnState]] = {t: {} for t in ttls}
    dist: dict[str, list[tuple[str, str]]] = {}
    for table, name, type_, c in rows:
        if cluster is not None and table in dist_names:
            dist.setdefault(str(table), []).append((str(name), str(type_)))
            continue
        logical = names.get(str(table), str(table))
        if logical in tables:
            tables[logical][name] = ColumnState(str(type_), str(c))
    applied = None
    if MIGRATIONS_TABLE in tables:
        _, rows = sink.query(f"SELECT DISTINCT version FROM {sink.database}.{MIGRATIONS_TABLE}")
        applied = frozenset(int(r[0]) for r in rows)
    distributed = {t: tuple(cols) for t, cols in dist.items()}
    return Snapshot(True, tables, ttls, applied, distributed)


_TTL = re.compile(r" TTL (.+?)(?: SETTINGS |$)")


def _ttl_of(engine_full: str) -> str:
    m = _TTL.search(engine_full)
    return m.group(1).strip() if m else ""


def _touchstream_version() -> str:
    import touchstream

    return touchstream.__version__


def migrate(
    sink: Sink,
    segment_map: Sequence[Sequence[str]] | None = None,
    ttl_days: Mapping[str, int] | None = None,
) -> list[str]:
    """Apply the pending steps in order, recording each, then the check and the dialect
    groups, then create or replace the views. Returns the statements run."""
    db, caps, cluster = sink.database, sink.capabilities(), sink.cluster_mode()
    todo = plan(db, read_snapshot(sink, caps, cluster), caps, ttl_days, cluster=cluster)
    done: list[str] = []
    for group in todo.groups:
        for sql in group.statements:
            try:
                sink.execute(sql)
            except SinkError:
                # Another process may have done it in between (18.16 has no IF NOT
                # EXISTS for columns; concurrent CREATEs race): is it still to do?
                snap = read_snapshot(sink, caps, cluster)
                again = plan(db, snap, caps, ttl_days, cluster=cluster)
                if sql in again.statements:
                    raise
                continue
            done.append(sql)
        if group.step is not None:
            done.append(record_sql(db, group.step, _touchstream_version()))
            sink.execute(done[-1])
    return done + _views(sink, caps, segment_map)


def _views(
    sink: Sink, caps: Capabilities, segment_map: Sequence[Sequence[str]] | None
) -> list[str]:
    """Views hold no data: each is replaced in place (CREATE OR REPLACE VIEW), so a new
    definition or segment map takes effect at once and a query never finds it missing;
    18.16 has no CREATE OR REPLACE VIEW, so Sink.swap_views swaps changed ones."""
    cluster = sink.cluster_mode()
    defs = view_definitions(sink.database, segment_map, cluster)
    if not caps.replace_view:
        return sink.swap_views(defs)
    on = on_cluster(cluster)
    views = [f"CREATE OR REPLACE VIEW {sink.database}.{n}{on} AS\n{s}" for n, s in defs.items()]
    for sql in views:
        sink.execute(sql)
    return views


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    applied_at: str
    touchstream_version: str


@dataclass(frozen=True)
class Status:
    server_version: tuple[int, ...]
    capabilities: Capabilities
    applied: tuple[Applied, ...]
    plan: Plan


def status(sink: Sink, ttl_days: Mapping[str, int] | None = None) -> Status:
    """The recorded steps and what a migrate would do now (views aside); changes nothing."""
    version = sink.server_version()
    caps, cluster = Capabilities.of(version), sink.cluster_mode()
    snap = read_snapshot(sink, caps, cluster)
    applied: list[Applied] = []
    if snap.applied is not None:
        _, rows = sink.query(
            "SELECT version, any(name), toString(min(applied_at)), "
            "argMin(touchstream_version, applied_at) "
            f"FROM {sink.database}.{MIGRATIONS_TABLE} GROUP BY version ORDER BY version"
        )
        applied = [Applied(int(v), str(n), str(at), str(tv)) for v, n, at, tv in rows]
    todo = plan(sink.database, snap, caps, ttl_days, cluster=cluster)
    return Status(version, caps, tuple(applied), todo)

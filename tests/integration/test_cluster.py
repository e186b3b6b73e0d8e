"""Cluster mode on real servers: Debian's ZooKeeper and four ClickHouse 18.16 servers,
two shards of two replicas, each on its own ports and data directory. The same rows go
through the worker's writer to the cluster and to one server, and every view must give
the same answer on both; CDNOW replayed into the cluster must give lifetimes' summary for
every customer; a replica stopped in the middle of the writes must hold every row of its
shard once it is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sinks import BatchingWriter, Sink, open_sink
from sinks.errors import SinkTransient
from sinks.migrations import MIGRATIONS_TABLE, STEPS, status
from sinks.tables import TABLES, view_definitions
from tests.integration.test_views import (
    alert_rows,
    lifecycle_rows,
    override,
    population_data,
    population_events,
    processed,
    select,
    shop_events,
)
from touchstream.local_servers import (
    ClickHouseServer,
    ClusterNode,
    ZooKeeper,
    free_port,
    zookeeper_bin,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        zookeeper_bin() is None,
        reason="ZooKeeper is not installed: apt-get install zookeeper (./run test does)",
    ),
]

NAME = "touchstream_test"
SHARDS, REPLICAS = 2, 2


@dataclass
class Cluster:
    servers: list[list[ClickHouseServer]]  # by shard, then replica

    def sink(self, shard: int, replica: int, db: str, cluster: bool = True) -> Sink:
        """A sink connected to one server: in cluster mode, or plain (its local tables)."""
        server = self.servers[shard][replica]
        if server.proc.poll() is not None:  # say why, not only "connection refused"
            raise AssertionError(
                f"server {shard + 1}-{replica + 1} exited with code {server.proc.returncode}; "
                f"its error log ends: {server.error_log_tail()}"
            )
        return open_sink(server.url(db), NAME if cluster else "")


def start_servers(root: Path, zookeeper_port: int, started: list[ClickHouseServer]) -> None:
    ports = tuple(tuple(free_port() for _ in range(REPLICAS)) for _ in range(SHARDS))
    for s, shard_ports in enumerate(ports, 1):
        for r, port in enumerate(shard_ports, 1):
            node = ClusterNode(NAME, ports, zookeeper_port, s, r)
            server = ClickHouseServer(root / f"clickhouse-{s}-{r}", port=port, cluster=node)
            started.append(server)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    started: list[ClickHouseServer] = []

    def stop_all() -> None:  # at once: an 18.16 server with replicas takes seconds to stop
        for server in started:
            if server.proc.poll() is None:
                server.proc.terminate()
        for server in started:
            server.stop()
        started.clear()

    with ZooKeeper(root / "zookeeper") as zk, ExitStack() as stack:
        stack.callback(stop_all)
        # Another tenant of a shared machine may take a chosen port before a server binds
        # it: the servers start again on new ports, and the third failure is the test's.
        for attempt in range(3):
            try:
                start_servers(root / f"attempt-{attempt}", zk.port, started)
                break
            except RuntimeError:
                stop_all()
                if attempt == 2:
                    raise
        yield Cluster([started[i : i + REPLICAS] for i in range(0, len(started), REPLICAS)])


def all_rows() -> tuple[dict[str, list[tuple]], dict[str, tuple]]:
    """The views tests' shop and generated population together, with transitions and
    alerts; and the domain's scores of the population's buyers."""
    rows, expected = population_data()
    shop, _, _ = processed(shop_events())
    states = override(shop["customer_state"], "c2", stage="decline", alert_level=2)
    rows["events"] += shop["events"]
    rows["customer_state"] += override(states, "c6", stage="churned", alert_level=3)
    rows["transitions"] = lifecycle_rows()
    rows["alerts"] = alert_rows()
    return rows, expected


def write(sink: Sink, rows: dict[str, list[tuple]]) -> int:
    """Through the worker's writer, retrying a transient failure as the worker does;
    returns the retries."""
    writer = BatchingWriter(sink)
    for table, r in rows.items():
        writer.add(table, r)
    for retries in range(60):
        try:
            writer.flush()
            return retries
        except SinkTransient:
            time.sleep(0.5)
    raise AssertionError("the writes did not succeed within 30 s")


@dataclass
class Loaded:
    db: str
    first: list[str]
    second: list[str]
    expected: dict[str, tuple]
    single: Sink


@pytest.fixture(scope="module")
def loaded(cluster: Cluster, clickhouse: ClickHouseServer) -> Iterator[Loaded]:
    db = f"cluster_{uuid.uuid4().hex[:8]}"
    rows, expected = all_rows()
    with cluster.sink(0, 0, db) as sink, open_sink(clickhouse.url(db)) as single:
        first = sink.migrate()
        second = sink.migrate()
        write(sink, rows)
        write(sink, rows)  # a replayed batch: the same keys again, nothing counts twice
        single.migrate()
        write(single, rows)
        yield Loaded(db, first, second, expected, single)


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def test_migrate_makes_replicated_local_tables_distributed_tables_and_views_on_every_server(
    cluster: Cluster, loaded: Loaded
) -> None:
    ddl = [sql for sql in loaded.first if not sql.startswith("INSERT")]
    assert ddl and all(" ON CLUSTER touchstream_test" in sql.split("\n", 1)[0] for sql in ddl)
    assert loaded.second == [], "a second migrate finds nothing to do"
    views = set(view_definitions(loaded.db))
    for shard in range(SHARDS):
        for replica in range(REPLICAS):
            with cluster.sink(shard, replica, loaded.db) as sink:
                _, rows = sink.query(
                    f"SELECT name, engine FROM system.tables WHERE database = '{loaded.db}'"
                )
                engines = dict(rows)
                for t in TABLES:
                    assert engines[f"{t.name}_local"] == "ReplicatedReplacingMergeTree"
                    assert engines[t.name] == "Distributed"
                assert {n for n, e in engines.items() if e == "View"} == views
                assert engines[MIGRATIONS_TABLE] == "ReplicatedMergeTree"

                def recorded(s: Sink = sink) -> bool:
                    _, r = s.query(f"SELECT DISTINCT version FROM {loaded.db}.{MIGRATIONS_TABLE}")
                    return {v for (v,) in r} == {s.version for s in STEPS}

                wait_for(recorded, f"the steps recorded on server {shard + 1}-{replica + 1}")
                # Seen from any server, the schema is complete.
                assert status(sink).plan.statements == []


def test_every_view_on_another_server_answers_as_one_server_given_the_same_rows(
    cluster: Cluster, loaded: Loaded
) -> None:
    nonempty = 0
    with cluster.sink(SHARDS - 1, REPLICAS - 1, loaded.db) as far:
        for view in view_definitions(loaded.db):
            one = sorted(select(loaded.single, f"SELECT * FROM {{db}}.{view}"), key=repr)
            many = sorted(select(far, f"SELECT * FROM {{db}}.{view}"), key=repr)
            assert many == one, view
            nonempty += bool(one)
        scores = {
            r[0]: r[1:]
            for r in select(
                far,
                "SELECT customer_id, r_score, f_score, m_score, segment, quadrant, "
                "key_account, transaction_buyer FROM {db}.customer_scores "
                "WHERE customer_id LIKE 'p%'",
            )
        }
    assert scores == loaded.expected  # the domain's own answers, as in test_views
    assert nonempty >= len(view_definitions(loaded.db)) - 1, "the data must reach the views"


def local_keys(sink: Sink, db: str, table: str, where: str = "1") -> list[tuple[Any, ...]]:
    t = next(t for t in TABLES if t.name == table)
    _, rows = sink.query(
        f"SELECT {', '.join(t.key)} FROM {db}.{table}_local FINAL WHERE {where} "
        f"ORDER BY {', '.join(t.key)}"
    )
    return rows


def test_each_customers_rows_live_on_one_shard_and_on_both_its_replicas(
    cluster: Cluster, loaded: Loaded
) -> None:
    customers = []
    for shard in range(SHARDS):
        replicas = []
        for replica in range(REPLICAS):
            with cluster.sink(shard, replica, loaded.db, cluster=False) as sink:
                sink.execute(f"SYSTEM SYNC REPLICA {loaded.db}.events_local")
                replicas.append(local_keys(sink, loaded.db, "events"))
        assert replicas[0] == replicas[1], f"shard {shard + 1}: its replicas differ"
        customers.append({cid for cid, _ in replicas[0]})
    assert all(customers), "both shards hold customers"
    assert not customers[0] & customers[1], "a customer's rows on one shard only"
    _, (n,) = loaded.single.query(f"SELECT uniqExact(customer_id) FROM {loaded.db}.events")
    assert len(customers[0]) + len(customers[1]) == n[0]


def test_cdnow_replayed_into_the_cluster_gives_lifetimes_summary_for_every_customer(
    cluster: Cluster,
) -> None:
    from bench.holdout import _replay
    from tests.integration.lifetimes_check import RFM_SQL, cdnow_reference, mismatches
    from touchstream.datasets import cdnow_events

    db = f"cdnow_{uuid.uuid4().hex[:8]}"
    with cluster.sink(0, 0, db) as sink:
        sink.migrate()
        # The worker's batch path, partitioned as Kafka would, batches of 5,000, every
        # batch's rows through the worker's writer into the Distributed tables.
        _replay(list(cdnow_events()), "1998-06-30T00:00:00Z", 8, sink=sink)
    ref = cdnow_reference()
    found: list[str] = []

    def matches() -> bool:  # read on another shard's server, replicas possibly behind
        with cluster.sink(1, 1, db) as other:
            _, rows = other.query(RFM_SQL.format(db=db))
        found[:] = mismatches(ref, {r[0]: r[1:] for r in rows})
        return not found

    wait_for(matches, f"CDNOW on the cluster ({len(found)} mismatches)", timeout=60)
    assert len(ref) == 23_570


def test_a_replica_stopped_in_the_middle_of_the_writes_has_every_row_once_it_is_back(
    cluster: Cluster, loaded: Loaded
) -> None:
    events = population_events(300, seed=11)
    for e in events:
        e["customer_id"] = "w" + e["customer_id"]
    rows, _, _ = processed(events)
    chunks = [rows["events"][i::12] for i in range(12)]
    stopped = cluster.servers[1][1]  # shard 2's second replica; the writes go to 1-1
    retries = 0
    with cluster.sink(0, 0, loaded.db) as sink:
        for i, chunk in enumerate(chunks):
            if i == 4:
                stopped.proc.terminate()  # it stops while the writes go on
            if i == 9:
                stopped.stop()
                stopped.start()
            retries += write(sink, {"events": chunk})
    written = sorted((r[1], r[0]) for r in rows["events"])  # (customer_id, event_id)
    during = {(r[1], r[0]) for c in chunks[4:9] for r in c}
    where = "customer_id LIKE 'w%'"
    held = []
    for shard in range(SHARDS):
        replicas = []
        for replica in range(REPLICAS):
            with cluster.sink(shard, replica, loaded.db, cluster=False) as s:
                s.execute(f"SYSTEM SYNC REPLICA {loaded.db}.events_local")
                replicas.append(local_keys(s, loaded.db, "events", where))
        assert replicas[0] == replicas[1], f"shard {shard + 1}: its replicas differ"
        held.append(replicas[0])
    assert sorted(held[0] + held[1]) == written, "every row once, none lost"
    assert during & set(held[1]), "rows reached the stopped replica's shard while it was down"
    with cluster.sink(1, 1, loaded.db) as back:
        _, ((n,),) = back.query(f"SELECT count() FROM {loaded.db}.events FINAL WHERE {where}")
    assert n == len(written)
    print(f"writes retried {retries} times while the replica was down")

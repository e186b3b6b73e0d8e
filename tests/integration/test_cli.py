"""The `touchstream` command as a user runs it, against real servers."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sinks import open_sink
from touchstream.local_servers import ClickHouseServer, Tansu, free_port

from .conftest import ROOT, unique, worker_env
from .conftest import settings_for as make_settings
from .lifetimes_check import RFM_SQL, cdnow_reference, mismatches

pytestmark = pytest.mark.integration


def touchstream(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchstream.cli", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_migrate_twice_on_a_clickhouse_server_succeeds_and_creates_topics(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = make_settings(broker, clickhouse.url(unique("mig")), tmp_path)
    env = worker_env(s) | {"TOUCHSTREAM_INPUT_TOPIC": unique("fresh")}
    first = touchstream("migrate", env=env)
    second = touchstream("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert env["TOUCHSTREAM_INPUT_TOPIC"] in first.stdout
    assert "none (all existed)" in second.stdout
    with open_sink(s.clickhouse_url) as sink:
        _, rows = sink.query(f"SHOW TABLES FROM {sink.database}")
    assert {r[0] for r in rows} >= {
        "events",
        "customer_state",
        "dead_letters",
        "stream_clock",
        "customer_rfm",
    }


def test_an_unreachable_clickhouse_gives_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    r = touchstream(
        "migrate", env={"TOUCHSTREAM_CLICKHOUSE_URL": f"clickhouse://127.0.0.1:{free_port()}/x"}
    )
    assert r.returncode == 2
    assert "cannot reach ClickHouse" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_wrong_clickhouse_password_gives_a_one_line_error_not_a_traceback(
    clickhouse: ClickHouseServer,
) -> None:
    url = clickhouse.url("x").replace("default:@", "default:wrong@")
    r = touchstream("migrate", "--no-topics", env={"TOUCHSTREAM_CLICKHOUSE_URL": url})
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "refused authentication" in line and "password" in line.lower()
    assert "Traceback" not in r.stderr


def test_a_readonly_clickhouse_user_fails_the_migration_in_one_line(
    clickhouse: ClickHouseServer,
) -> None:
    url = clickhouse.url(unique("ro")).replace("default:@", "analyst:analyst@")
    r = touchstream("migrate", "--no-topics", env={"TOUCHSTREAM_CLICKHOUSE_URL": url})
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "ClickHouse refused the migration: Code: 164." in line
    assert "Traceback" not in r.stderr


def test_an_unreachable_broker_gives_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_text(
        '{"event_id":"1","customer_id":"c","type":"account","change":"moved",'
        '"occurred_at":"2020-01-01T00:00:00Z"}\n'
    )
    r = touchstream(
        "produce", str(f), env={"TOUCHSTREAM_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    )
    assert r.returncode == 2
    assert "cannot reach a Kafka broker" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_worker_refuses_to_start_when_the_input_topic_has_another_partition_count(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = make_settings(broker, clickhouse.url(unique("parts")), tmp_path, partitions=3)
    r = touchstream("worker", env=worker_env(s) | {"TOUCHSTREAM_PARTITIONS": "4"}, timeout=60)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert f"topic '{s.input_topic}' has 3 partitions but TOUCHSTREAM_PARTITIONS is 4" in line
    assert "Traceback" not in r.stderr


def test_produce_validates_first_and_names_the_bad_lines(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = make_settings(broker, clickhouse.url(unique("prod")), tmp_path)
    ok = {
        "event_id": "1",
        "customer_id": "c",
        "type": "account",
        "change": "moved",
        "occurred_at": "2020-01-01T00:00:00Z",
    }
    bad = {**ok, "event_id": "2", "occurred_at": "2020-01-01T00:00:00"}
    f = tmp_path / "e.jsonl"
    f.write_bytes(b"\n".join([orjson.dumps(ok), orjson.dumps(bad), b"{nope"]) + b"\n")
    r = touchstream("produce", str(f), env=worker_env(s))
    assert r.returncode == 1
    assert "sent 1 events" in r.stdout
    assert "line 2:" in r.stderr and "timezone" in r.stderr
    assert "line 3:" in r.stderr and "not valid JSON" in r.stderr


def test_produce_reads_csv_with_a_header_row(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = make_settings(broker, clickhouse.url(unique("csv")), tmp_path)
    f = tmp_path / "e.csv"
    f.write_text(
        "event_id,customer_id,type,occurred_at,amount,currency,direction,reason,duration_s,"
        "resolved\n"
        "1,c,purchase,2020-01-01T10:00:00Z,12.50,USD,,,,\n"
        "2,c,call,2020-01-02T10:00:00+01:00,,,inbound,billing,120,true\n"
        "3,c,purchase,2020-01-03T10:00:00Z,-1,USD,,,,\n"
    )
    r = touchstream("produce", str(f), env=worker_env(s))
    assert "sent 2 events" in r.stdout
    assert r.returncode == 1 and "line 4:" in r.stderr and "greater than or equal to 0" in r.stderr


def test_query_prints_a_table_and_reports_sql_errors_plainly(
    clickhouse: ClickHouseServer,
) -> None:
    env = {"TOUCHSTREAM_CLICKHOUSE_URL": clickhouse.url("default")}
    r = touchstream("query", "SELECT 40 + 2 AS answer", env=env)
    assert r.returncode == 0 and "answer" in r.stdout and "42" in r.stdout
    bad = touchstream("query", "SELECT nope FROM nowhere", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    # the server's whole message, on one line, without its stack trace
    assert bad.stderr.strip().count("\n") == 0
    assert "Code: 60" in bad.stderr and "nowhere doesn't exist" in bad.stderr
    assert "Stack trace" not in bad.stderr


WIDE_SQL = (
    "SELECT "
    + ", ".join(f"toString({i}) || '-value' AS column_number_{i}" for i in range(40))
    + ", toDateTime('2024-03-20 12:00:00', "
    "'UTC') AS at, toDecimal64(12.5, 4) AS amount, CAST(NULL AS Nullable(String)) AS "
    "missing, 'a,b \"c\"' AS text"
)


@pytest.fixture(params=["server", "chdb"])
def query_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse")
        return {"TOUCHSTREAM_CLICKHOUSE_URL": server.url("default")}
    return {"TOUCHSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}


def test_query_in_a_pipe_prints_every_column_of_a_wide_row_whole(
    query_env: dict[str, str],
) -> None:
    r = touchstream("query", WIDE_SQL, env=query_env)
    assert r.returncode == 0, r.stderr
    header, _, row = r.stdout.splitlines()
    for i in range(40):
        assert f"column_number_{i}" in header and f"{i}-value" in row
    assert "2024-03-20 12:00:00" in row and "NULL" in row


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("csv", 'amount,missing,text\n12.5,,"a,b ""c"""\n'),
        ("tsv", 'amount\tmissing\ttext\n12.5\t\\N\ta,b "c"\n'),
        ("json", '{"amount": 12.5, "missing": null, "text": "a,b \\"c\\""}\n'),
        ("vertical", 'Row 1:\n──────\namount:  12.5\nmissing: NULL\ntext:    a,b "c"\n'),
    ],
)
def test_query_formats_are_alike_on_a_server_and_on_chdb(
    query_env: dict[str, str],
    fmt: str,
    expected: str,
) -> None:
    sql = (
        "SELECT toDecimal64(12.5, 2) AS amount, CAST(NULL AS Nullable(String)) AS missing, "
        "'a,b \"c\"' AS text;"
    )  # a trailing semicolon, as people type it
    r = touchstream("query", "--format", fmt, sql, env=query_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected


def test_a_format_clause_passes_through_on_chdb_and_is_refused_plainly_by_a_server(
    clickhouse: ClickHouseServer,
    tmp_path: Path,
) -> None:
    sql = "SELECT 1 AS a, 'x' AS b FORMAT CSVWithNames"
    embedded = touchstream(
        "query", sql, env={"TOUCHSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    )
    assert embedded.returncode == 0 and embedded.stdout == '"a","b"\n1,"x"\n'
    server = touchstream(
        "query", sql, env={"TOUCHSTREAM_CLICKHOUSE_URL": clickhouse.url("default")}
    )
    assert server.returncode == 2 and "use --format" in server.stderr


def test_the_demo_runs_on_embedded_defaults_and_its_cdnow_results_match_lifetimes(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    r = touchstream("demo", "--workdir", str(workdir), "--sample-customers", "20", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for title in ("Customers and revenue", "RFM", "Top customers", "Dead letters"):
        assert title in r.stdout
    url = f"chdb://{(workdir / 'chdb').resolve()}"
    assert f"report: {(workdir / 'report.html').resolve()}" in r.stdout
    assert (workdir / "report.html").stat().st_size > 10_000
    command = next(line.strip() for line in r.stdout.splitlines() if "touchstream query" in line)
    assert command.startswith(f"TOUCHSTREAM_CLICKHOUSE_URL={url} touchstream query ")
    rest = command.partition(" touchstream ")[2]
    shown = touchstream(*shlex.split(rest), env={"TOUCHSTREAM_CLICKHOUSE_URL": url})
    assert shown.returncode == 0 and "visits_this_month" in shown.stdout, shown.stderr
    with open_sink(f"chdb://{workdir / 'chdb'}") as sink:
        _, rows = sink.query(RFM_SQL.format(db=sink.database))
        dead = sink.query(f"SELECT count() FROM {sink.database}.dead_letters FINAL")[1]
    ours = {r[0]: r[1:] for r in rows if not r[0].startswith("S")}
    assert mismatches(cdnow_reference(), ours) == []
    assert dead == [(5,)]

"""The worker and the CLI reach Kafka over TLS, verifying the broker against a test CA,
and write into ClickHouse over TLS with a password from a file: everything secured at once.

The Tansu build here does not serve TLS itself (its `--cert` and `--key` cannot be given
together, and its listener stays plaintext), so the broker's TLS listener is a TLS proxy
in front of it, and Tansu advertises the proxy's port: every client connection, bootstrap
and per-broker, goes through a TLS handshake that the client verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sinks import open_sink
from touchstream.config import Settings
from touchstream.datasets import sample_events
from touchstream.local_servers import (
    ClickHouseServer,
    LocalCA,
    Tansu,
    TlsProxy,
    clickhouse_server_bin,
    free_port,
    make_test_ca,
    stop_process,
)

from .conftest import ROOT, unique

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        clickhouse_server_bin() is None, reason="clickhouse-server is not installed"
    ),
]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> Iterator[TlsProxy]:
    port = free_port()
    with (
        Tansu(tmp_path_factory.mktemp("tansu-tls"), advertised_port=port) as t,
        TlsProxy(ca, t.port, port=port) as proxy,
    ):
        yield proxy


@pytest.fixture(scope="module")
def tls_clickhouse(
    tmp_path_factory: pytest.TempPathFactory, ca: LocalCA
) -> Iterator[ClickHouseServer]:
    with ClickHouseServer(
        tmp_path_factory.mktemp("ch-tls"), tls=ca, users={"writer": "w-pass"}
    ) as ch:
        yield ch


def secure_env(
    tmp_path: Path, proxy: TlsProxy, ch: ClickHouseServer, ca_file: Path, partitions: int = 2
) -> dict[str, str]:
    name = unique("tls")
    (tmp_path / "ch_password").write_text("w-pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    return env | {
        "TOUCHSTREAM_BROKER": f"kafka://127.0.0.1:{proxy.port}",
        "TOUCHSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "TOUCHSTREAM_KAFKA_SSL_CAFILE": str(ca_file),
        "TOUCHSTREAM_CLICKHOUSE_URL": f"clickhouses://writer@127.0.0.1:{ch.tls_port}/{name}",
        "TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE": str(tmp_path / "ch_password"),
        "TOUCHSTREAM_CLICKHOUSE_CA_FILE": str(ca_file),
        "TOUCHSTREAM_APP_ID": f"ts-{name}",
        "TOUCHSTREAM_INPUT_TOPIC": f"{name}.in",
        "TOUCHSTREAM_DLQ_TOPIC": f"{name}.dlq",
        "TOUCHSTREAM_ALERTS_TOPIC": f"{name}.alerts",
        "TOUCHSTREAM_TRANSITIONS_TOPIC": f"{name}.transitions",
        "TOUCHSTREAM_PARTITIONS": str(partitions),
        "TOUCHSTREAM_DATA_DIR": str(tmp_path / "w"),
        "TOUCHSTREAM_BATCH_WITHIN_S": "0.2",
        "TOUCHSTREAM_PRODUCER_MAX_BATCH_SIZE": "1",
        "TOUCHSTREAM_WEB_PORT": str(free_port()),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchstream.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in env.items():
        if k.startswith("TOUCHSTREAM_"):
            monkeypatch.setenv(k, v)
    return Settings()


def test_a_worker_and_the_cli_over_tls_process_events_into_clickhouse_over_tls(
    tls_broker, tls_clickhouse, ca, tmp_path, monkeypatch
):
    env = secure_env(tmp_path, tls_broker, tls_clickhouse, ca.ca_cert)
    s = settings_of(env, monkeypatch)
    events = list(sample_events(customers=6))
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    r = cli(env, "migrate")
    assert r.returncode == 0, r.stderr
    before = tls_broker.handshakes
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "touchstream.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        r = cli(env, "produce", str(tmp_path / "events.jsonl"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"sent {len(events)} events" in r.stdout
        expected = len({e["event_id"] for e in events})
        with open_sink(s.clickhouse_url) as sink:
            sql = f"SELECT count() FROM {sink.database}.events FINAL"
            deadline = time.monotonic() + 180
            while (n := sink.query(sql)[1][0][0]) < expected:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{n} of {expected} events after 180 s"
                time.sleep(0.5)
    finally:
        stop_process(proc, 30)
    assert n == expected
    assert tls_broker.handshakes > before + 2  # the CLI's clients and the worker's


def test_a_broker_certificate_from_another_ca_is_refused_by_the_cli_with_one_line(
    tls_broker, tls_clickhouse, tmp_path
):
    other = make_test_ca(tmp_path / "other", name="some other CA")
    env = secure_env(tmp_path, tls_broker, tls_clickhouse, other.ca_cert)
    env["TOUCHSTREAM_CLICKHOUSE_CA_FILE"] = env["TOUCHSTREAM_KAFKA_SSL_CAFILE"]
    r = cli(env, "migrate", "--no-topics")  # ClickHouse with the other CA fails first
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CERTIFICATE_VERIFY_FAILED" in lines[0], r.stderr
    (tmp_path / "one.jsonl").write_bytes(orjson.dumps(next(iter(sample_events(customers=1)))))
    r = cli(env, "produce", str(tmp_path / "one.jsonl"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Kafka broker" in lines[0], r.stderr
    assert "TOUCHSTREAM_KAFKA_SSL_CAFILE" in lines[0]

"""A sink reaches a real ClickHouse server (Debian's 18.16) over TLS, with a password
from a file and the server verified against a test CA made with openssl."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks import SinkUnavailable, open_sink
from touchstream.config import Settings
from touchstream.local_servers import ClickHouseServer, LocalCA, clickhouse_server_bin, make_test_ca

pytestmark = pytest.mark.skipif(
    clickhouse_server_bin() is None, reason="clickhouse-server is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "tls-Pa55:word/with@signs"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> Iterator[ClickHouseServer]:
    with ClickHouseServer(
        tmp_path_factory.mktemp("clickhouse-tls"), tls=ca, users={"writer": PASSWORD}
    ) as ch:
        yield ch


def settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, password: str, ca_file: Path
) -> Settings:
    (tmp_path / "ch_password").write_text(password + "\n")
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_URL", url)
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "ch_password"))
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_CA_FILE", str(ca_file))
    return Settings()


def test_a_sink_connects_over_tls_with_a_password_from_a_file_and_migrates_inserts_and_queries(
    server, ca, monkeypatch, tmp_path
):
    s = settings(
        monkeypatch,
        tmp_path,
        f"clickhouses://writer@127.0.0.1:{server.tls_port}/tls",
        PASSWORD,
        ca.ca_cert,
    )
    with open_sink(s.clickhouse_url) as sink:
        sink.migrate(None)
        assert sink.query("SELECT user FROM system.processes")[1] == [("writer",)]
        sink.insert("stream_clock", [(3, 1_700_000_000_000, 7)])
        _, rows = sink.query(
            "SELECT partition, toUnixTimestamp(stream_time), version FROM tls.stream_clock FINAL"
        )
    assert rows == [(3, 1_700_000_000, 7)]


def test_a_server_certificate_from_another_ca_is_refused_with_one_line(
    server, monkeypatch, tmp_path
):
    other = make_test_ca(tmp_path / "other", name="some other CA")
    s = settings(
        monkeypatch,
        tmp_path,
        f"clickhouses://writer@127.0.0.1:{server.tls_port}/tls",
        PASSWORD,
        other.ca_cert,
    )
    with pytest.raises(SinkUnavailable) as e:
        open_sink(s.clickhouse_url)
    msg = str(e.value)
    assert "\n" not in msg
    assert "TLS" in msg and "TOUCHSTREAM_CLICKHOUSE_CA_FILE" in msg
    assert "CERTIFICATE_VERIFY_FAILED" in msg


def test_a_wrong_password_is_refused_with_one_line_naming_authentication(
    server, ca, monkeypatch, tmp_path
):
    s = settings(
        monkeypatch,
        tmp_path,
        f"clickhouses://writer@127.0.0.1:{server.tls_port}/tls",
        "not-the-password",
        ca.ca_cert,
    )
    with pytest.raises(SinkUnavailable) as e:
        open_sink(s.clickhouse_url)
    msg = str(e.value)
    assert "\n" not in msg and "authentication" in msg and "'writer'" in msg


def test_the_query_command_with_a_wrong_password_prints_one_line_not_a_traceback(
    server, ca, tmp_path
):
    (tmp_path / "pw").write_text("wrong\n")
    env = {
        **os.environ,
        "TOUCHSTREAM_CLICKHOUSE_URL": f"clickhouses://writer@127.0.0.1:{server.tls_port}/tls",
        "TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE": str(tmp_path / "pw"),
        "TOUCHSTREAM_CLICKHOUSE_CA_FILE": str(ca.ca_cert),
    }
    r = subprocess.run(
        [sys.executable, "-m", "touchstream.cli", "query", "SELECT 1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "authentication" in lines[0], r.stderr


def test_the_plaintext_port_still_serves_without_tls(server):
    with open_sink(server.url("default")) as sink:
        assert sink.query("SELECT 1")[1] == [(1,)]

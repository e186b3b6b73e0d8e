"""Settings from files (TOUCHSTREAM_<NAME>_FILE), the ClickHouse password and CA put into
its URL, and the Kafka security options: configuration only, no server."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from touchstream.config import Settings
from touchstream.security import ConfigError, faust_credentials, kafka_options

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for k in list(os.environ):
        if k.upper().startswith("TOUCHSTREAM_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's


def test_any_setting_can_be_read_from_a_file_without_its_trailing_newline(monkeypatch, tmp_path):
    (tmp_path / "url").write_text("clickhouse://writer:s3cret@ch:9000/prod\n")
    (tmp_path / "partitions").write_text("12\n")
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("TOUCHSTREAM_PARTITIONS_FILE", str(tmp_path / "partitions"))
    s = Settings()
    assert s.clickhouse_url == "clickhouse://writer:s3cret@ch:9000/prod"
    assert s.partitions == 12


def test_a_secret_file_keeps_inner_whitespace_and_strips_only_one_final_newline(
    monkeypatch, tmp_path
):
    (tmp_path / "pw").write_text(" pass word \n\n")
    monkeypatch.setenv("TOUCHSTREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    assert Settings().kafka_sasl_password == " pass word \n"


def test_a_list_setting_from_a_file_is_read_as_json(monkeypatch, tmp_path):
    (tmp_path / "r").write_text("[365, 180, 90, 30]\n")
    monkeypatch.setenv("TOUCHSTREAM_RFM_FIXED_RECENCY_DAYS_FILE", str(tmp_path / "r"))
    assert Settings().rfm_fixed_recency_days == [365, 180, 90, 30]


def test_a_missing_secret_file_is_an_error_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as e:
        Settings()
    msg = str(e.value)
    assert "TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE" in msg and "nope" in msg
    assert "\n" not in msg


def test_an_unreadable_secret_file_is_a_one_line_error_from_the_command(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TOUCHSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "touchstream.cli", "query", "SELECT 1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "TOUCHSTREAM_KAFKA_SASL_PASSWORD_FILE" in lines[0] and "Traceback" not in r.stderr


def test_a_setting_given_both_directly_and_as_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "pw").write_text("a")
    monkeypatch.setenv("TOUCHSTREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("TOUCHSTREAM_KAFKA_SASL_PASSWORD", "b")
    with pytest.raises(ConfigError, match="set only one"):
        Settings()


def test_a_clickhouse_password_left_out_of_the_url_comes_from_its_own_file(monkeypatch, tmp_path):
    (tmp_path / "pw").write_text("p@ss:w/rd\n")
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_URL", "clickhouses://writer@ch.example:9440/prod")
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("TOUCHSTREAM_CLICKHOUSE_CA_FILE", "/etc/ca.pem")
    assert Settings().clickhouse_url == (
        "clickhouses://writer:p%40ss%3Aw%2Frd@ch.example:9440/prod?ca_certs=%2Fetc%2Fca.pem"
    )


def test_a_clickhouse_password_without_a_user_is_the_default_users(monkeypatch):
    s = Settings(clickhouse_url="clickhouse://ch:9000/db", clickhouse_password="x")
    assert s.clickhouse_url == "clickhouse://default:x@ch:9000/db"


def test_a_password_in_both_the_url_and_the_setting_is_refused():
    with pytest.raises(ConfigError, match="only once"):
        Settings(clickhouse_url="clickhouse://u:a@ch:9000/db", clickhouse_password="b")


def test_a_ca_file_for_a_plaintext_clickhouse_url_is_refused():
    with pytest.raises(ConfigError, match="clickhouses://"):
        Settings(clickhouse_url="clickhouse://u@ch:9000/db", clickhouse_ca_file="/ca.pem")


def test_plaintext_kafka_adds_no_client_options():
    s = Settings()
    assert kafka_options(s) == {}
    assert faust_credentials(s) is None


def test_kafka_ssl_verifies_the_broker_against_the_system_cas_by_default():
    opts = kafka_options(Settings(kafka_security_protocol="SSL"))
    assert opts["security_protocol"] == "SSL"
    ctx = opts["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_kafka_ssl_with_a_missing_ca_file_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="TOUCHSTREAM_KAFKA_SSL_CAFILE"):
        kafka_options(
            Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "none.pem"))
        )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_sasl_ssl_maps_to_kafka_python_and_faust_options(mechanism):
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    opts = kafka_options(s)
    assert {k: v for k, v in opts.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    creds = faust_credentials(s)
    assert str(creds.protocol.value) == "SASL_SSL"
    assert creds.mechanism.value == mechanism
    assert (creds.username, creds.password) == ("svc", "pw")


def test_kafka_sasl_plaintext_has_no_tls_context():
    s = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    assert "ssl_context" not in kafka_options(s)
    assert str(faust_credentials(s).protocol.value) == "SASL_PLAINTEXT"


def test_kafka_sasl_without_a_password_is_an_error_naming_what_to_set():
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc")
    with pytest.raises(ConfigError, match="TOUCHSTREAM_KAFKA_SASL_PASSWORD"):
        kafka_options(s)

"""Real servers, started by the tests on free ports with their own data directories:
a Tansu broker (Kafka protocol) and Debian's ClickHouse server; chdb runs in process."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from touchstream.config import Settings
from touchstream.demo import wait_until_processed
from touchstream.kafka import ensure_topics
from touchstream.local_servers import ClickHouseServer, Tansu, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    with Tansu(tmp_path_factory.mktemp("tansu")) as t:
        yield t


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    with ClickHouseServer(tmp_path_factory.mktemp("clickhouse")) as ch:
        yield ch


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def settings_for(broker: Tansu, clickhouse_url: str, tmp: Path, partitions: int = 4) -> Settings:
    """Settings for one test: its own topics, consumer group and worker data dir."""
    name = unique("t")
    s = Settings(
        broker=broker.url,
        clickhouse_url=clickhouse_url,
        app_id=f"ts-{name}",
        input_topic=f"{name}.in",
        dlq_topic=f"{name}.dlq",
        alerts_topic=f"{name}.alerts",
        transitions_topic=f"{name}.transitions",
        partitions=partitions,
        data_dir=str(tmp / f"worker-{name}"),
        batch_within_s=0.2,
        fit_interval_s=0,  # no scheduled churn model fit unless a test asks for one
    )
    ensure_topics(
        s.bootstrap,
        dict.fromkeys(
            (s.input_topic, s.dlq_topic, s.alerts_topic, s.transitions_topic), partitions
        ),
    )
    return s


def worker_env(s: Settings) -> dict[str, str]:
    return s.environment(
        (
            "broker",
            "clickhouse_url",
            "clickhouse_cluster",
            "app_id",
            "input_topic",
            "dlq_topic",
            "alerts_topic",
            "transitions_topic",
            "partitions",
            "data_dir",
            "store",
            "standbys",
            "batch_max",
            "batch_within_s",
            "session_timeout_s",
            "cutoff_interval_s",
            "producer_max_batch_size",
            "idle_s",
            "tick_s",
            "web_port",
            "web_host",
            "fit_interval_s",
            "model_poll_s",
            "health_clickhouse_failing_s",
            "log_format",
            "group_instance_id",
        )
    )


def spawn_worker(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A real `touchstream worker` process, its output appended to ``log``. Its web
    server gets a free port unless the settings name one."""
    env = worker_env(s)
    if s.web_port == Settings.model_fields["web_port"].default:
        env["TOUCHSTREAM_WEB_PORT"] = str(free_port())
    return subprocess.Popen(
        [sys.executable, "-m", "touchstream.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


@contextmanager
def running_worker(s: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `touchstream worker` process (``spawn_worker``); stopped (SIGTERM, then
    kill) on exit."""
    proc = spawn_worker(s, log)
    try:
        yield proc
    finally:
        stop_process(proc, 30)


def wait_committed(
    s: Settings, end: dict[int, int], proc: subprocess.Popen[bytes], log: Path, timeout: float = 300
) -> None:
    try:
        wait_until_processed(s, end, proc, timeout=timeout)
    except (RuntimeError, TimeoutError) as e:
        raise AssertionError(f"{e}:\n{log.read_text()[-3000:]}") from e

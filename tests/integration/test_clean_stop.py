"""A stop is not a crash: SIGTERM makes a worker on the embedded ClickHouse close cleanly
and exit 0, whether it was still starting or busy (real broker and chdb)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from touchstream.local_servers import Tansu
from touchstream.producing import send_events
from touchstream.simulate import simulate

from .conftest import ROOT, settings_for, unique, wait_committed, worker_env

pytestmark = pytest.mark.integration


def start(s, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "touchstream.cli", "worker"],
        env=worker_env(s),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_a_worker_stopped_after_its_work_exits_zero(broker: Tansu, tmp_path: Path) -> None:
    s = settings_for(broker, f"chdb://{tmp_path / unique('chdb')}", tmp_path)
    log = tmp_path / "worker.log"
    proc = start(s, log)
    try:
        events, _ = simulate(40, seed=3)
        report = send_events(s, enumerate(events, 1))
        wait_committed(s, report.end_offsets, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-2000:]
    assert "Closing event loop" in log.read_text()


# Seconds after the spawn: importing, creating topics, opening the embedded ClickHouse
# and migrating, all before Faust runs (a stop once chdb was open crashed the teardown).
@pytest.mark.parametrize("after_s", [1.0, 3.0, 5.0])
def test_a_worker_stopped_while_starting_exits_zero(
    broker: Tansu, tmp_path: Path, after_s: float
) -> None:
    s = settings_for(broker, f"chdb://{tmp_path / unique('chdb')}", tmp_path)
    log = tmp_path / "worker.log"
    proc = start(s, log)
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-2000:]

"""`touchstream report`: a self-contained HTML file whose every chart a real browser
(Debian's headless Chromium) draws, and the key tables on the console."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from sinks import open_sink

from .conftest import ROOT
from .test_cli import touchstream
from .test_views import AS_OF, alert_rows, lifecycle_rows, processed, shop_events

pytestmark = pytest.mark.integration

CHARTS = (
    "segments",
    "segment-revenue",
    "funnel",
    "exit-patterns",
    "defections",
    "retention",
    "complaints",
    "csm",
)


def chromium() -> str:
    """The browser, installed through ./run's install path when missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run([str(ROOT / "run"), "install-browser"], check=False, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium could not be installed (./run install-browser needs apt-get)")
    return found


def dump_dom(html: Path, profile: Path) -> str:
    r = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_every_chart_of_the_report_is_drawn_by_a_browser(tmp_path: Path) -> None:
    db = f"report_{uuid.uuid4().hex[:8]}"
    url = f"chdb://{tmp_path / 'chdb'}?database={db}"
    rows, _, _ = processed(shop_events())
    with open_sink(url) as sink:
        sink.migrate()
        sink.insert("events", rows["events"])
        sink.insert("customer_state", rows["customer_state"])
        sink.insert("transitions", lifecycle_rows())
        sink.insert("alerts", alert_rows())
        ms = int(AS_OF.timestamp() * 1000)
        sink.insert("stream_clock", [(0, ms, ms)])
        sink.insert("rfm_cutoffs", [(ms, "quantile", 6, *(0.0,) * 12, 0.0, 0.0, ms)])
    out = tmp_path / "out" / "report.html"
    r = touchstream("report", "--out", str(out), env={"TOUCHSTREAM_CLICKHOUSE_URL": url})
    assert r.returncode == 0, r.stderr
    for title in (
        "Segments now",
        "Lifecycle funnel",
        "Exit patterns",
        "Complaint outcome and repurchase",
        "Customer value matrix",
    ):
        assert title in r.stdout
    assert str(out.resolve()) in r.stdout

    page = out.read_text()
    assert (
        "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        and "https://" not in page
        and "<script src" not in page
    ), "self-contained: nothing fetched"
    dom = dump_dom(out, tmp_path / "chromium-profile")
    assert f'data-charts="{len(CHARTS)}/{len(CHARTS)}"' in dom
    for chart in CHARTS:
        fig = re.search(rf'<figure[^>]*id="chart-{chart}"[^>]*>', dom)
        assert fig, f"chart {chart} missing"
        assert 'data-rendered="yes"' in fig.group(0), fig.group(0)
        assert int(re.search(r'data-marks="(\d+)"', fig.group(0)).group(1)) > 0


def test_an_empty_database_gives_a_report_that_says_there_is_no_data_yet(
    tmp_path: Path,
) -> None:
    url = f"chdb://{tmp_path / 'chdb'}?database=empty_{uuid.uuid4().hex[:6]}"
    with open_sink(url) as sink:
        sink.migrate()
    out = tmp_path / "report.html"
    r = touchstream("report", "--out", str(out), env={"TOUCHSTREAM_CLICKHOUSE_URL": url})
    assert r.returncode == 0, r.stderr
    dom = dump_dom(out, tmp_path / "chromium-profile")
    assert "no data yet" in dom
    assert 'data-charts="' in dom and "Traceback" not in r.stderr


def test_a_report_before_any_migrate_fails_in_one_line(tmp_path: Path) -> None:
    r = touchstream(
        "report",
        "--out",
        str(tmp_path / "r.html"),
        env={"TOUCHSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'none'}"},
    )
    assert r.returncode == 2 and "touchstream migrate" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr

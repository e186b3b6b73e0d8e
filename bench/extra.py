"""The opt-in jobs of ``python -m bench`` (run only when named in ``--only``):

  latency  event -> ClickHouse and event -> alert latency at a fixed offered load
           (bench/latency.py); ``--rate 0`` (the default) = half of the touchstream-ch (else
           touchstream) job's median events/s of the same run, the issue's rule
  cdnow    CDNOW through broker, worker and a ClickHouse server: time to queryable
           (bench/cdnow.py)
  scale    state bytes per customer and RSS for ``--scale-customers`` customers, in
           process (bench/scale.py)

Each prints its own table; ``run_extra`` returns its figures for the JSON output and the
details table.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

EXTRA_JOBS = ("latency", "cdnow", "scale")


def run_extra(
    name: str,
    broker_url: str,
    workdir: Path,
    touchstream_median: float | None,
    rate: float,
    seconds: float,
    scale_customers: int,
    partitions: int,
    console: Any,
) -> dict[str, Any]:
    if name == "latency":
        from bench.latency import report, run_latency

        if rate <= 0:
            if not touchstream_median:
                raise ValueError(
                    "latency needs --rate, or the touchstream-ch (or touchstream) "
                    "job in the same run (--only touchstream-ch,latency): half "
                    "its max is used"
                )
            rate = touchstream_median / 2
            console.print(
                f"latency: offered load {rate:,.0f} events/s = half of the "
                f"touchstream worker's median {touchstream_median:,.0f} events/s"
            )
        lat = run_latency(
            broker_url, workdir / "latency", rate, seconds, partitions, console=console
        )
        report(lat, console)
        return asdict(lat)
    if name == "cdnow":
        from bench.cdnow import report as cdnow_report
        from bench.cdnow import run_cdnow

        cd = run_cdnow(broker_url, workdir / "cdnow", partitions, console=console)
        cdnow_report(cd, console)
        return asdict(cd)
    if name == "scale":
        from bench.scale import report as scale_report
        from bench.scale import run_scale

        with console.status(f"scale: {scale_customers:,} customers in process"):
            sc = run_scale(scale_customers, partitions=partitions)
        scale_report(sc, console)
        return asdict(sc)
    raise ValueError(f"unknown extra job {name}")


def details(notes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Lines for the bench's "touchstream details" table."""
    out: dict[str, str] = {}
    lat = notes.get("latency")
    if lat:
        for key, path in (
            ("to_clickhouse_ms", "event-to-ClickHouse"),
            ("to_alert_ms", "event-to-alert"),
        ):
            d = lat[key]
            out[f"latency {path} p50/p99 at {lat['rate_offered']:,.0f} events/s"] = (
                f"{d.get('p50', 0):,.0f} / {d.get('p99', 0):,.0f} ms"
                + ("" if lat["kept_up"] else " (did not keep up)")
            )
    cd = notes.get("cdnow")
    if cd and cd.get("queryable_s"):
        out["CDNOW first produce -> all queryable (ClickHouse server)"] = (
            f"{cd['queryable_s']:.1f}s ({cd['events_per_s']:,.0f} events/s)"
        )
    sc = notes.get("scale")
    if sc:
        out[f"state RSS growth per customer ({sc['customers']:,} customers)"] = (
            f"{sc['growth_bytes_per_customer']:,.0f} bytes"
        )
        out["projected RSS for 1,000,000 customers"] = (
            f"{sc['projected_rss_mb_at_target']:,.0f} MiB"
        )
    return out

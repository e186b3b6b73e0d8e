"""The till: GET /customers/{id} on two workers sharing the partitions. Either worker
answers for any customer (Faust's table routing forwards to the owner), from the live
table; `touchstream customer` reads it, or ClickHouse when no worker is reachable."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from sinks import open_sink
from touchstream.local_servers import ClickHouseServer, Tansu, free_port
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed, worker_env
from .test_cli import touchstream

pytestmark = pytest.mark.integration


def shop(customers: int, seed: int) -> list[dict[str, Any]]:
    """Purchases in February and March 2024; every partition's stream time ends in March."""
    rnd = random.Random(seed)
    events = []
    for c in range(customers):
        days = sorted(rnd.sample(range(1, 29), rnd.randint(1, 5)))
        for month, day in [(2, rnd.randint(1, 28)), *((3, d) for d in days)]:
            events.append(
                {
                    "event_id": f"e{len(events)}",
                    "customer_id": f"cust-{c:03d}",
                    "type": "purchase",
                    "amount": f"{rnd.randint(1, 90)}.50",
                    "currency": "EUR",
                    "occurred_at": f"2024-{month:02d}-{day:02d}T10:00:00Z",
                }
            )
    return events


def get(port: int, customer_id: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/customers/{customer_id}", timeout=10
        ) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_either_worker_answers_for_any_customer_from_the_live_table(
    broker: Tansu,
    clickhouse: ClickHouseServer,
    tmp_path: Path,
) -> None:
    events = shop(40, seed=5)
    s = settings_for(broker, clickhouse.url(unique("till")), tmp_path)
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        procs = []
        for n, port in enumerate(ports):
            w = s.model_copy(
                update={
                    "data_dir": str(tmp_path / f"worker-{n}"),
                    "web_port": port,
                    "web_host": "127.0.0.1",
                }
            )
            procs.append(stack.enter_context(running_worker(w, tmp_path / f"worker-{n}.log")))
        time.sleep(8)  # both join the group before the data arrives (Tansu: about 5 s)
        report = send_events(s, enumerate(events, 1))
        wait_committed(s, report.end_offsets, procs[0], tmp_path / "worker-0.log")
        time.sleep(6)  # the assignment both workers route by has settled

        with open_sink(s.clickhouse_url) as sink:
            _, rows = sink.query(
                f"SELECT customer_id, visits_this_month, toString(spend_this_month), "
                f"purchases FROM {sink.database}.customer_profile"
            )
        expected = {r[0]: (r[1], float(r[2]), r[3]) for r in rows}
        assert len(expected) == 40
        owners = set()
        for cid, (visits, spend, purchases) in expected.items():
            answers = [get(port, cid) for port in ports]
            for status, body in answers:
                assert status == 200, body
                assert body["month"] == "2024-03" and body["source"] == "worker"
                assert (
                    body["visits_this_month"],
                    float(body["spend_this_month"]),
                    body["purchases"],
                ) == (visits, spend, purchases)
                assert body["spend_this_month_exact"] is True
            assert answers[0][1] == answers[1][1], "both workers give the owner's answer"
            owners.add(answers[0][1]["worker"])
        assert owners == {f"http://127.0.0.1:{p}" for p in ports}, (
            "each worker owns some customers: the other one forwarded those requests"
        )

        status, body = get(ports[0], "nobody")
        assert status == 404 and "nobody" in body["error"]

        # current to the last processed event: one more visit shows at once
        more = [
            {
                "event_id": "late-1",
                "customer_id": "cust-007",
                "type": "purchase",
                "amount": "1.00",
                "currency": "EUR",
                "occurred_at": "2024-03-29T09:00:00Z",
            }
        ]
        before = get(ports[1], "cust-007")[1]
        report = send_events(s, enumerate(more, 1))
        wait_committed(s, report.end_offsets, procs[0], tmp_path / "worker-0.log")
        after = get(ports[1], "cust-007")[1]
        assert after["purchases"] == before["purchases"] + 1
        assert after["visits_this_month"] == before["visits_this_month"] + 1

        env = worker_env(s) | {"TOUCHSTREAM_WORKER_URL": f"http://127.0.0.1:{ports[1]}"}
        live = touchstream("customer", "cust-007", "--json", env=env)
        assert live.returncode == 0, live.stderr
        assert json.loads(live.stdout)["purchases"] == after["purchases"]
        assert "live, from the worker" in live.stderr
        shown = touchstream("customer", "cust-007", env=env)
        assert "visits_this_month" in shown.stdout and "2024-03" in shown.stdout
        missing = touchstream("customer", "nobody", env=env)
        assert missing.returncode == 1 and "no customer 'nobody'" in missing.stderr

    # the workers are gone: ClickHouse answers, and says so
    env = worker_env(s) | {"TOUCHSTREAM_WORKER_URL": f"http://127.0.0.1:{ports[0]}"}
    offline = touchstream("customer", "cust-007", "--json", env=env)
    assert offline.returncode == 0, offline.stderr
    assert "from ClickHouse" in offline.stderr and "no worker at" in offline.stderr
    profile = json.loads(offline.stdout)
    assert profile["source"] == "clickhouse"
    assert profile["visits_this_month"] == after["visits_this_month"]

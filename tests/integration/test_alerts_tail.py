"""`touchstream alerts` (touchstream.alerts_tail.tail) against a real Tansu broker."""

from __future__ import annotations

import io
import threading
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from rich.console import Console

from touchstream.alerts_tail import tail
from touchstream.config import Settings
from touchstream.domain.alerts import Alert
from touchstream.domain.messages import alert_json
from touchstream.kafka import BrokerUnavailable, ensure_topics
from touchstream.local_servers import Tansu, free_port

pytestmark = pytest.mark.integration


def alert(customer_id: str, kind: str, severity: int, message: str) -> Alert:
    return Alert(
        alert_id=f"{customer_id}/1/{kind}",
        customer_id=customer_id,
        at_ms=1_581_328_800_000,
        kind=kind,
        episode=1,
        stage="decline" if kind == "decline" else "stability",
        previous_stage="formation" if kind == "decline" else "stability",
        defection_type="product" if kind == "decline" else "unknown",
        confidence=0.71,
        severity=severity,
        net_spend=Decimal("680"),
        last_purchase_ms=1_578_736_800_000,
        evidence=("2020-01-13 refund:defective",),
        message=message,
        version=4,
    )


def test_tail_prints_every_alert_once_from_the_beginning(tmp_path: Path) -> None:
    with Tansu(tmp_path) as t:
        topic = "touchpoints.alerts"
        ensure_topics(t.bootstrap, {topic: 2})
        sent = [
            alert("cust-A", "decline", 3, "Customer cust-A is declining: likely product."),
            alert("cust-B", "churn_risk", 1, "Customer cust-B is at risk while still stable."),
        ]
        producer = KafkaProducer(bootstrap_servers=t.bootstrap, acks="all")
        for a in [*sent, sent[0]]:  # the first one twice, as a worker replay would
            producer.send(topic, key=a.customer_id.encode(), value=orjson.dumps(alert_json(a)))
        producer.flush()
        producer.close()

        out = io.StringIO()
        settings = Settings(broker=t.url, alerts_topic=topic)
        shown = tail(
            settings,
            from_beginning=True,
            follow=False,
            console=Console(file=out, width=200),
            idle_timeout_ms=3_000,
        )
        text = out.getvalue()

    assert shown == 2
    for a in sent:
        assert a.customer_id in text
        assert a.message in text
    assert text.count("cust-A is declining") == 1
    assert "product (0.71)" in text
    assert "HIGH" in text and "LOW" in text
    assert "1 repeated deliveries not shown" in text


def test_tail_of_new_alerts_only_skips_the_old_ones(tmp_path: Path) -> None:
    with Tansu(tmp_path) as t:
        topic = "alerts-latest"
        ensure_topics(t.bootstrap, {topic: 1})
        producer = KafkaProducer(bootstrap_servers=t.bootstrap, acks="all")
        old = alert("cust-old", "decline", 2, "an old alert")
        producer.send(topic, key=b"cust-old", value=orjson.dumps(alert_json(old)))
        producer.flush()
        out = io.StringIO()
        result: list[int] = []
        reader = threading.Thread(
            target=lambda: result.append(
                tail(
                    Settings(broker=t.url, alerts_topic=topic),
                    from_beginning=False,
                    follow=False,
                    console=Console(file=out, width=200),
                    idle_timeout_ms=6_000,
                )
            )
        )
        reader.start()
        time.sleep(2.5)  # the reader is positioned at the end of the topic by now
        new = alert("cust-new", "churn_risk", 4, "a new alert")
        producer.send(topic, key=b"cust-new", value=orjson.dumps(alert_json(new)))
        producer.flush()
        producer.close()
        reader.join(30)
    assert result == [1]
    assert "cust-new" in out.getvalue() and "CRITICAL" in out.getvalue()
    assert "cust-old" not in out.getvalue()


def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    s = Settings(broker=f"kafka://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerUnavailable, match="cannot reach a Kafka broker"):
        tail(s, from_beginning=True, follow=False, console=Console(file=io.StringIO()))


def test_tail_keeps_only_the_kinds_and_severities_asked_for_as_json_lines(
    tmp_path: Path,
) -> None:
    from touchstream.alerts_tail import AlertFilter

    with Tansu(tmp_path) as t:
        topic = "touchpoints.alerts"
        ensure_topics(t.bootstrap, {topic: 1})
        sent = [
            alert("A", "decline", 3, "A declines"),
            alert("B", "decline", 1, "B declines"),
            alert("C", "churn_risk", 4, "C at risk"),
            alert("D", "churned", 4, "D gone"),
        ]
        producer = KafkaProducer(bootstrap_servers=t.bootstrap, acks="all")
        for a in sent:
            producer.send(topic, key=a.customer_id.encode(), value=orjson.dumps(alert_json(a)))
        producer.flush()
        producer.close()
        out, status = io.StringIO(), io.StringIO()
        shown = tail(
            Settings(broker=t.url, alerts_topic=topic),
            from_beginning=True,
            follow=False,
            console=Console(file=out, width=200),
            idle_timeout_ms=3_000,
            wanted=AlertFilter.of(["decline", "churned"], "high"),
            as_json=True,
            status=Console(file=status, width=200),
        )
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert shown == 2
    assert [(m["customer_id"], m["kind"], m["severity"]) for m in lines] == [
        ("A", "decline", 3),
        ("D", "churned", 4),
    ]
    assert "2 alerts" in status.getvalue()  # the status lines stay out of the JSON

"""Messages into the input topic from a thread while a test does harm to the pipeline:
at a steady rate, each one's partition and offset recorded, so that a verifier can say
which ones must be in ClickHouse afterwards (tests/integration/verify.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer

START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Message:
    """One Kafka message to send: ``event`` is the dict it encodes when the test means it
    as a valid event, None when it is meant to be dead-lettered."""

    key: bytes | None
    value: bytes | None
    event: dict[str, Any] | None = None
    what: str = ""  # for a failure message: which kind of malformed input


@dataclass(frozen=True)
class Sent:
    message: Message
    partition: int
    offset: int


def valid(event: dict[str, Any]) -> Message:
    return Message(event["customer_id"].encode(), orjson.dumps(event), event)


class Stream:
    """Sends ``messages`` from a thread, ``per_second`` of them, until they run out or
    ``stop``; then every send is confirmed and ``sent`` / ``end`` say where each landed."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        messages: Iterable[Message],
        per_second: float = 250,
    ) -> None:
        self.bootstrap, self.topic, self.per_second = bootstrap, topic, per_second
        self.messages = messages
        self.sent: list[Sent] = []
        self.end: dict[int, int] = {}  # partition -> last offset + 1
        self.count = 0  # handed to the producer so far
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._send()
        except BaseException as e:  # reported by stop(): a test must not pass on half a stream
            self.error = e
        finally:
            self._done.set()

    def _send(self) -> None:
        # Room for the 1 MB values of the malformed-input test (Kafka's default is 1 MiB
        # per request, the record's framing included).
        p = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
            retries=5,
        )
        pending = []
        began = time.monotonic()
        it = iter(self.messages)
        while not self._stop.is_set():
            # Paced in ticks of 10 ms: as many as are due by now.
            due = int((time.monotonic() - began) * self.per_second) + 1
            exhausted = False
            while self.count < due:
                m = next(it, None)
                if m is None:
                    exhausted = True
                    break
                pending.append((m, p.send(self.topic, key=m.key, value=m.value)))
                self.count += 1
            if exhausted:
                break
            time.sleep(0.01)
        p.flush()
        for m, f in pending:
            md = f.get(timeout=60)
            self.sent.append(Sent(m, md.partition, md.offset))
            self.end[md.partition] = max(self.end.get(md.partition, 0), md.offset + 1)
        p.close()

    @property
    def finished(self) -> bool:
        """Every message sent and confirmed (or the stream failed)."""
        return self._done.is_set()

    def wait(self, timeout: float = 300) -> Stream:
        """Until every message is sent and confirmed."""
        if not self._done.wait(timeout):
            raise AssertionError(f"the stream did not finish in {timeout} s ({self.count} sent)")
        return self.stop()

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def stop(self) -> Stream:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the producer thread did not finish"
        if self.error is not None:
            raise AssertionError(f"the stream failed: {self.error!r}") from self.error
        return self

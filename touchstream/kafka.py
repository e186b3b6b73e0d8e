"""Kafka plumbing for the CLI (kafka-python): explicit topics, producing, group progress.

Every helper takes the bootstrap string and, optionally, the security options
(touchstream.security.kafka_options); without them, the options of the environment's
Settings, built once per process (none for PLAINTEXT: the clients' defaults)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


class BrokerUnavailable(RuntimeError):
    pass


def _unreachable(
    bootstrap: str, e: Exception, options: Mapping[str, Any] | None = None
) -> BrokerUnavailable:
    tls = (
        " (TLS: does TOUCHSTREAM_KAFKA_SSL_CAFILE hold the CA of the broker's certificate?)"
        if options and "ssl_context" in options
        else ""
    )
    return BrokerUnavailable(
        f"cannot reach a Kafka broker at {bootstrap}: {e.__class__.__name__}: {e}. "
        f"Is it running, and is TOUCHSTREAM_BROKER right?{tls}"
    )


@functools.cache
def _environment_options() -> Mapping[str, Any]:
    from touchstream.config import Settings
    from touchstream.security import kafka_options

    return kafka_options(Settings())


def client_options(options: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return _environment_options() if options is None else options


def admin(bootstrap: str, options: Mapping[str, Any] | None = None) -> KafkaAdminClient:
    options = client_options(options)
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000, **options)
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e, options) from e


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create missing topics with the partition counts we mean (a broker that
    auto-creates would pick its own). Returns the topics created."""
    a = admin(bootstrap, options)
    try:
        existing = set(a.list_topics())
        missing = [n for n in topics if n not in existing]
        created = []
        for name in missing:
            try:
                a.create_topics([NewTopic(name, topics[name], replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        a.close()


def partition_count(
    bootstrap: str, topic: str, options: Mapping[str, Any] | None = None
) -> int | None:
    """The topic's partition count as the broker has it (None: no such topic)."""
    a = admin(bootstrap, options)
    try:
        [described] = a.describe_topics([topic])
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e) from e
    finally:
        a.close()
    return len(described["partitions"]) if described["error_code"] == 0 else None


def producer(bootstrap: str, options: Mapping[str, Any] | None = None) -> KafkaProducer:
    options = client_options(options)
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            retries=5,
            **options,
        )
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e, options) from e


def committed_offsets(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: Iterable[int],
    options: Mapping[str, Any] | None = None,
) -> dict[int, int]:
    """Offsets the consumer group has committed on ``topic`` (missing = nothing yet)."""
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **client_options(options),
    )
    try:
        out = {}
        for p in partitions:
            off = c.committed(TopicPartition(topic, p))
            if off is not None:
                out[p] = off
        return out
    finally:
        c.close()

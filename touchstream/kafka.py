"""Kafka plumbing for the CLI (kafka-python): explicit topics, producing, group progress."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


class BrokerUnavailable(RuntimeError):
    pass


def _unreachable(bootstrap: str, e: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach a Kafka broker at {bootstrap}: {e.__class__.__name__}: {e}. "
        "Is it running, and is TOUCHSTREAM_BROKER right?"
    )


def admin(bootstrap: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e) from e


def ensure_topics(bootstrap: str, topics: dict[str, int], replication: int = 1) -> list[str]:
    """Create missing topics with the partition counts we mean (a broker that
    auto-creates would pick its own). Returns the topics created."""
    a = admin(bootstrap)
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


def partition_count(bootstrap: str, topic: str) -> int | None:
    """The topic's partition count as the broker has it (None: no such topic)."""
    a = admin(bootstrap)
    try:
        [described] = a.describe_topics([topic])
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e) from e
    finally:
        a.close()
    return len(described["partitions"]) if described["error_code"] == 0 else None


def producer(bootstrap: str) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            retries=5,
        )
    except (KafkaError, OSError) as e:
        raise _unreachable(bootstrap, e) from e


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """Offsets the consumer group has committed on ``topic`` (missing = nothing yet)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for p in partitions:
            off = c.committed(TopicPartition(topic, p))
            if off is not None:
                out[p] = off
        return out
    finally:
        c.close()

"""What every bench job shares: the input (made once), producing it to a topic fast,
watching a consumer group's committed offsets, peak memory of a process, the machine."""

from __future__ import annotations

import asyncio
import gc
import heapq
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import orjson

from schemas.events import SATISFACTION_LEVELS, Call, Complaint, Refund
from touchstream.local_servers import stop_process

YEAR_S = 365 * 86_400
START_S = 1_735_689_600  # 2025-01-01T00:00:00Z


def _values(model: Any, field_name: str) -> tuple[str, ...]:
    """The values a Literal field of the event contract takes."""
    return get_args(model.model_fields[field_name].annotation)


@dataclass
class Input:
    """The bench's input, made once: (key, value) per message in send order, and the
    partition and offset each one gets (murmur2 on the key, as the Java client, aiokafka
    and Faust partition), so an in-process replay sees what the broker holds."""

    mix: str
    customers: int
    messages: list[tuple[bytes, bytes]]
    partitions: int
    placement: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)

    @property
    def n(self) -> int:
        return len(self.messages)

    @property
    def mean_value_bytes(self) -> float:
        return sum(len(v) for _, v in self.messages) / max(1, self.n)

    def end_offsets(self) -> dict[int, int]:
        end: dict[int, int] = {}
        for p, o in self.placement:
            end[p] = max(end.get(p, 0), o + 1)
        return end


def purchases(n: int, customers: int, seed: int = 1) -> list[dict[str, object]]:
    """``n`` valid purchase events of ``customers`` customers (uniformly drawn), in time
    order, spread over 2025."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = START_S + (i * YEAR_S) // max(1, n)
        out.append(
            {
                "event_id": f"bench-{i:09d}",
                "customer_id": f"C{rng.randrange(customers):06d}",
                "type": "purchase",
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
                "amount": round(rng.uniform(5.0, 250.0), 2),
                "currency": "USD",
                "channel": "web",
            }
        )
    return out


def simulated(n: int, customers: int) -> list[dict[str, object]]:
    """touchstream.simulate's realistic mix (every touchpoint type, planted defectors),
    the first ``n`` events in time order."""
    from touchstream.simulate import simulate

    events, _ = simulate(customers=customers)
    return events[:n]


# The retail mix: a retailer's traffic, written from what shops see, not from the
# lifecycle rules, so that the bench does not grade the domain with its own assumptions.
RETAIL_START_S = 1_640_995_200  # 2022-01-01T00:00:00Z
RETAIL_EVENTS_PER_CUSTOMER = 175  # --customers default for this mix: loyal shoppers
# Per purchase, the chance that the customer also calls, complains, asks a refund or
# answers a survey in the days after it (a few percent in all).
RETAIL_SIDE = (("call", 0.025), ("complaint", 0.008), ("refund", 0.012), ("survey", 0.015))
# The contract's own values (schemas/events.py), so the input never drifts from it.
COMPLAINT_CATEGORIES = _values(Complaint, "category")
CALL_REASONS = _values(Call, "reason")
REFUND_REASONS = _values(Refund, "reason")
SATISFACTION = tuple(SATISFACTION_LEVELS)  # best to worst, as the weights below
SATISFACTION_WEIGHTS = (20, 35, 20, 12, 6, 4, 3)
CATEGORIES = ("grocery", "household", "beauty", "garden", "toys", "electronics")


def retail(n: int, customers: int, seed: int = 1) -> list[dict[str, object]]:
    """``n`` events of a retailer's customer base, in time order, deterministic for a
    seed. Each customer buys in a rhythm of its own: a mean gap (gamma over the
    customers, 2 to 90 days) with irregular gaps around it (gamma of shape 3), amounts
    lognormal around a median of its own. Most customers are there from the start, the
    rest join over the period; one in ten stops buying at some point. After a purchase,
    now and then, a service call, a complaint (opened, and most resolved or rejected
    days later under the same complaint_id), a refund of part of it, a survey."""
    rng = random.Random(seed)
    day = 86_400.0
    gaps = [min(90.0, max(2.0, rng.gammavariate(2.0, 6.0))) for _ in range(customers)]
    # The period: long enough for n events at these rhythms (the side events ~6%).
    span = n / max(1e-9, sum(1 / g for g in gaps)) / 1.06 * day
    heap: list[tuple[float, int, str, int, dict[str, object]]] = []
    seq = 0

    def push(t: float, kind: str, c: int, extra: dict[str, object]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, c, extra))

    median_amount: list[float] = []
    stop: list[float] = []
    for c in range(customers):
        median_amount.append(math.exp(rng.gauss(math.log(35.0), 0.6)))
        joined = rng.uniform(0, 30 * day) if rng.random() < 0.8 else rng.uniform(0, span)
        stop.append(rng.uniform(joined, span) if rng.random() < 0.1 else math.inf)
        push(RETAIL_START_S + joined, "purchase", c, {})
    out: list[dict[str, object]] = []
    complaints = 0
    while heap and len(out) < n:
        t, _, kind, c, extra = heapq.heappop(heap)
        e: dict[str, object] = {
            "event_id": f"retail-{len(out):09d}",
            "customer_id": f"R{c:06d}",
            "type": kind,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        }
        if kind == "purchase":
            amount = median_amount[c] * math.exp(rng.gauss(0.0, 0.5))
            order = f"o{len(out)}"
            e |= {
                "amount": f"{amount:.2f}",
                "currency": "EUR",
                "order_id": order,
                "category": rng.choice(CATEGORIES),
                "channel": "store" if rng.random() < 0.7 else "web",
            }
            nxt = t + rng.gammavariate(3.0, gaps[c] / 3.0) * day
            if nxt - RETAIL_START_S < stop[c]:
                push(nxt, "purchase", c, {})
            for side, p in RETAIL_SIDE:
                if rng.random() >= p:
                    continue
                at = t + rng.uniform(0.1, 5.0) * day
                if side == "refund":
                    share = 1.0 if rng.random() < 0.5 else rng.uniform(0.1, 0.9)
                    push(at, side, c, {"amount": f"{amount * share:.2f}", "order_id": order})
                elif side == "complaint":
                    complaints += 1
                    push(at, side, c, {"complaint_id": f"k{complaints}"})
                else:
                    push(at, side, c, {})
        elif kind == "call":
            e |= {
                "direction": "inbound" if rng.random() < 0.85 else "outbound",
                "reason": rng.choice(CALL_REASONS),
                "duration_s": round(rng.gammavariate(2.0, 150.0), 1),
                "wait_s": round(rng.expovariate(1 / 60), 1),
                "resolved": rng.random() < 0.8,
            }
        elif kind == "complaint":
            e |= {
                "complaint_id": extra["complaint_id"],
                "category": extra.get("category") or rng.choice(COMPLAINT_CATEGORIES),
                "severity": extra.get("severity") or rng.randint(1, 4),
                "status": extra.get("status", "open"),
            }
            if e["status"] == "open":
                u = rng.random()  # most are closed days later; a few are left open
                if u < 0.9:
                    status = "resolved" if u < 0.8 else "rejected"
                    follow = {k: e[k] for k in ("complaint_id", "category", "severity")}
                    push(
                        t + rng.gammavariate(2.0, 2.0) * day,
                        "complaint",
                        c,
                        follow | {"status": status},
                    )
        elif kind == "refund":
            e |= {
                "amount": extra["amount"],
                "order_id": extra["order_id"],
                "reason": rng.choice(REFUND_REASONS),
            }
        else:
            e["satisfaction"] = rng.choices(SATISFACTION, SATISFACTION_WEIGHTS)[0]
        out.append(e)
    return out


MIXES = ("retail", "purchase", "sim")


def default_customers(n: int, mix: str) -> int:
    """Customers when --customers is not given: the retail mix's are loyal shoppers
    (about RETAIL_EVENTS_PER_CUSTOMER events each over the period), the others 20,000."""
    return max(1, n // RETAIL_EVENTS_PER_CUSTOMER) if mix == "retail" else 20_000


def make_input(n: int, customers: int, partitions: int, mix: str) -> Input:
    if mix == "retail":
        events = retail(n, customers)
    elif mix == "purchase":
        events = purchases(n, customers)
    else:
        events = simulated(n, customers)
    return input_of(events, partitions, mix)


def input_of(events: Sequence[dict[str, object]], partitions: int, mix: str) -> Input:
    """An Input of the given events (key = customer_id), placed as the broker will."""
    from aiokafka.partitioner import DefaultPartitioner

    from schemas.decode import Rejected, decode

    messages = [(str(e["customer_id"]).encode(), orjson.dumps(e)) for e in events]
    for _, v in messages[:2000]:  # the input must be valid: a reject is not a benchmark
        if isinstance(ev := decode(v), Rejected):
            raise ValueError(f"bench input rejected by touchstream: {ev.reason}: {v!r}")
    part = DefaultPartitioner()
    all_p = list(range(partitions))
    next_offset = [0] * partitions
    placement = []
    for k, _ in messages:
        p = part(k, all_p, all_p)
        placement.append((p, next_offset[p]))
        next_offset[p] += 1
    return Input(mix, len({k for k, _ in messages}), messages, partitions, placement)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """A topic with explicit retention configs: Quix Streams derives its changelog
    topic's config from the input topic's and fails (KeyError 'retention.ms') when the
    broker reports none, as Tansu does for topics created without configs."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions,
                    1,
                    topic_configs={"retention.ms": "-1", "retention.bytes": "-1"},
                )
            ]
        )
    finally:
        admin.close()


async def _produce(bootstrap: str, topic: str, inp: Input) -> dict[int, int]:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await p.start()
    try:
        batches: dict[int, object] = {}
        sent = []
        for (k, v), (part, _) in zip(inp.messages, inp.placement, strict=True):
            b = batches.get(part)
            if b is None:
                b = batches[part] = p.create_batch()
            if b.append(key=k, value=v, timestamp=None) is None:  # type: ignore[attr-defined]
                sent.append(
                    (
                        part,
                        b.record_count(),  # type: ignore[attr-defined]
                        await p.send_batch(b, topic, partition=part),
                    )
                )
                b = batches[part] = p.create_batch()
                b.append(key=k, value=v, timestamp=None)  # type: ignore[attr-defined]
        for part, b in batches.items():
            sent.append(
                (
                    part,
                    b.record_count(),  # type: ignore[attr-defined]
                    await p.send_batch(b, topic, partition=part),
                )
            )
        # Tansu quirk: ListOffsets(latest) is wrong, so the end of each partition comes
        # from the producer's RecordMetadata (base offset + records in the batch).
        end: dict[int, int] = {}
        for part, count, fut in sent:
            md = await fut
            end[part] = max(end.get(part, 0), md.offset + count)
        return end
    finally:
        await p.stop()


def produce(bootstrap: str, topic: str, inp: Input) -> dict[int, int]:
    """Send the input to ``topic`` (which exists with ``inp.partitions`` partitions) in
    per-partition batches; the end offset of each partition, from the broker's answers."""
    end = asyncio.run(_produce(bootstrap, topic, inp))
    if end != inp.end_offsets():
        raise RuntimeError(
            f"{topic}: the broker placed the input unlike expected: {end} != {inp.end_offsets()}"
        )
    return end


@dataclass
class Progress:
    """A consumer group's committed offsets over time, until they reach the end."""

    started: float  # when the process was spawned (time.monotonic)
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # time, committed, cpu s
    done: float | None = None
    peak_rss: int | None = None  # bytes

    def commits(self) -> list[tuple[float, int, float]]:
        """The samples where the committed count moved: (first time seen, count, cpu)."""
        out: list[tuple[float, int, float]] = []
        for t, c, cpu in self.samples:
            if c > 0 and (not out or c != out[-1][1]):
                out.append((t, c, cpu))
        return out

    def window(self, total: int) -> tuple[tuple[float, int, float], tuple[float, int, float], str]:
        """The two samples the rate is taken between (see ``rate``)."""
        assert self.done is not None
        moves = self.commits()
        partial = [m for m in moves if m[1] < total]
        if len(partial) >= 2 and partial[-1][1] - partial[0][1] >= total / 4:
            return partial[0], partial[-1], "commit slope"
        end = self.samples[-1]
        if moves and moves[0][1] < total / 2 and self.done > moves[0][0]:
            return moves[0], end, "first-to-last commit"
        return (self.started, 0, 0.0), end, "spawn-to-last commit (quick job)"

    def cpu_us_per_event(self, total: int) -> float | None:
        """The job process's CPU time (all threads) per event over the same window."""
        a, b, _ = self.window(total)
        return (b[2] - a[2]) / (b[1] - a[1]) * 1e6 if b[1] > a[1] and b[2] > 0 else None

    def rate(self, total: int) -> tuple[float, str]:
        """Events per second from the commits, so process start, group join, recovery
        and the first batch stay out of the figure. A commit at time t covers what was
        done by t, but the last one (everything) comes up to a commit interval after the
        work ended: so the slope is taken from the first commit seen to the last one
        before the end, when there are two; else to the end (biased low by at most one
        commit interval); else, for a job too quick for its commits, from the spawn."""
        a, b, how = self.window(total)
        return (b[1] - a[1]) / (b[0] - a[0]), how


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), in bytes, while it is alive."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except Exception:
            return 0.0


def current_rss(pid: int) -> int | None:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    end: dict[int, int],
    proc: subprocess.Popen[bytes] | Sequence[subprocess.Popen[bytes]],
    started: float,
    timeout: float,
    log: Path,
    poll_s: float = 0.2,
    on_progress=None,
) -> Progress:
    """Poll ``group``'s committed offsets on ``topic`` (one OffsetFetch per poll) until
    each partition reached ``end``. Fails if a process exits or time runs out. With
    several processes (workers of one group), CPU is their sum and RSS their largest."""
    from kafka import KafkaAdminClient

    procs = [proc] if isinstance(proc, subprocess.Popen) else list(proc)
    prog = Progress(started)
    total = sum(end.values())
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    sampled_rss = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"the job exited with code {p.returncode}; log {log}:\n{tail(log)}"
                    )
            try:
                offsets = admin.list_group_offsets(group).get(group, {})
            except Exception:  # the group does not exist before its first join
                offsets = {}
            done = {
                tp.partition: om.offset
                for tp, om in offsets.items()
                if tp.topic == topic and om.offset >= 0
            }
            now = time.monotonic()
            committed = sum(min(done.get(p, 0), e) for p, e in end.items())
            prog.samples.append((now, committed, sum(cpu_seconds(p.pid) for p in procs)))
            sampled_rss = max([sampled_rss, *(current_rss(p.pid) or 0 for p in procs)])
            if on_progress is not None:
                on_progress(committed, total)
            if all(done.get(p, 0) >= e for p, e in end.items()):
                prog.done = now
                peaks = [peak_rss(p.pid) or 0 for p in procs]
                prog.peak_rss = max(peaks) or sampled_rss or None
                return prog
            time.sleep(poll_s)
        raise TimeoutError(
            f"{group} did not commit every offset of {topic} in {timeout:.0f}s"
            f"; log {log}:\n{tail(log)}"
        )
    finally:
        admin.close()


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    stop_process(proc, grace)


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@contextmanager
def worker_gc(apply: bool = True) -> Iterator[None]:
    """The worker's GC settings for the block (agents/metrics.py: what is alive now is
    frozen, as the worker's start-up heap; the caller freezes after each batch with
    ``agents.metrics.after_batch``), CPython's own again after it. ``apply`` False: no
    change."""
    from agents import metrics

    if not apply:
        yield
        return
    before = gc.get_threshold()
    gc.collect()
    metrics.worker_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
        metrics.stop_worker_gc()


@contextmanager
def gc_pauses() -> Iterator[dict[int, list[float]]]:
    """Every garbage collection in the block, timed start to stop (``gc.callbacks``,
    perf_counter), as seconds per generation."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started)

    gc.callbacks.append(timed)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timed)


def pause_summary(pauses: dict[int, list[float]]) -> dict[int, str]:
    """Per generation: collections, nearest-rank p50 / p99 / max and total, in ms."""
    out = {}
    for g, xs in sorted(pauses.items()):
        if not xs:
            out[g] = "0 collections"
            continue
        s = sorted(xs)

        def rank(q: float, s: list[float] = s) -> float:
            return s[max(1, math.ceil(q * len(s))) - 1] * 1e3

        out[g] = (
            f"{len(s):,} collections, p50 {rank(0.5):.2f} ms, p99 {rank(0.99):.2f} ms, "
            f"max {s[-1] * 1e3:.2f} ms, total {sum(s) * 1e3:.0f} ms"
        )
    return out


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def standalone_start() -> tuple[Any, dict[str, str]]:
    """bench.latency, bench.cdnow and bench.scale run on their own: a console, and the
    machine and its load printed first."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 130)
    m = machine()
    console.print(
        f"[bold]machine[/] {m['nproc']} cores, {m['memory']}, {m['cpu']}, "
        f"Python {m['python']}; load average {loadavg()}"
    )
    return console, m


@contextmanager
def broker_workdir(prefix: str, keep: bool, console: Any) -> Iterator[tuple[Path, Any]]:
    """A fresh work dir with a Tansu broker in it; removed afterwards unless ``keep``."""
    from touchstream.local_servers import Tansu

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with Tansu(workdir / "broker") as broker:
            yield workdir, broker
    finally:
        if keep:
            console.print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def standalone_end(
    console: Any, m: dict[str, str], json_out: str | None, key: str, result: Any
) -> None:
    """The load average at the end, and the machine and ``result`` as JSON if asked."""
    console.print(f"load average at the end {loadavg()}")
    if json_out:
        Path(json_out).write_text(json.dumps({"machine": m, key: result}, indent=2))

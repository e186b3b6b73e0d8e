"""The till: ``GET /customers/{customer_id}`` on every worker's Faust web server.

The customer's profile (touchstream.profile) straight from the live table, so it is
current to the last event the worker processed. Any worker answers: Faust's table
routing (``app.table_route``) forwards the request to the worker that owns the
customer's partition (its ``canonical_url``: TOUCHSTREAM_WEB_HOST and
TOUCHSTREAM_WEB_PORT). 404 when the table has no such customer, 503 while the partition
has no owner (a rebalance). docs/analysts.md, "The till".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from agents.records import Stored
from touchstream.profile import live_profile

PATH = "/customers/{customer_id}"


def add_customer_page(
    app: faust.App,
    table: Any,
    load: Callable[[bytes], bytes | None],
    stream_time: Callable[[], int],
    quick_days: float,
) -> type[View]:
    """Register the page. ``load``: a customer's stored bytes as the batch path reads
    them (agents/state.py: current to the last processed batch); ``stream_time``: the
    worker's stream time, epoch ms."""
    url = str(app.conf.canonical_url)

    @app.page(PATH, name="customer")
    class CustomerPage(View):
        @app.table_route(table=table, match_info="customer_id")  # type: ignore[arg-type]  # Faust types views without path parameters
        async def get(self, request: Request, customer_id: str) -> Response:
            raw = load(customer_id.encode())
            if raw is None:
                return self.json(
                    {"error": f"no customer {customer_id!r}", "worker": url}, status=404
                )
            profile = live_profile(Stored.decode(raw).state, stream_time(), quick_days)
            return self.json({**profile, "source": "worker", "worker": url})

    return CustomerPage

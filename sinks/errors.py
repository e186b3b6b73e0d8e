"""What a failed ClickHouse call means for the worker: wait and retry, set rows aside, or
stop. Both sinks raise these (sinks/base.py documents the interface); ``classify`` maps
clickhouse-driver's, chdb's and pyarrow's exceptions onto them by ClickHouse error code.

- ``SinkTransient``: the server is away, slow or busy (network, timeouts, too many parts,
  memory). The same write can succeed later: retry with backoff.
- ``RowsRefused``: something in the rows' values (out of range, a type the column cannot
  take). Some rows of the insert will never be taken: find them and set them aside.
- ``SinkFatal``: the configuration (authentication, permissions, a missing database, table
  or column). No row can be written until a person fixes it: stop, saying why.

An error of no known kind is transient: retrying loses nothing, while setting rows aside
for an error that is not theirs would.
"""

from __future__ import annotations

import re
import struct
from decimal import InvalidOperation


class SinkError(RuntimeError):
    """A ClickHouse call failed; ``str()`` is the server's (or driver's) one-line reason."""


class SinkTransient(SinkError):
    """Retry later: the same write can succeed."""


class RowsRefused(SinkError):
    """The rows' values: at least one row of this insert is refused."""


class SinkFatal(SinkError):
    """A configuration error: nothing can be written until it is fixed."""


TRANSIENT_CODES = frozenset(
    {
        3,
        23,
        24,
        32,
        159,
        160,
        173,
        201,
        202,
        203,
        209,
        210,
        225,
        236,
        241,
        242,
        243,
        252,
        285,
        286,
        319,
        394,
        425,
        439,
        999,
        1000,
    }
)
ROW_CODES = frozenset(
    {
        6,
        25,
        26,
        27,
        38,
        41,
        53,
        69,
        70,
        72,
        117,
        131,
        190,
        321,
        349,
        407,
        469,
        691,
    }
)
FATAL_CODES = frozenset(
    {
        8,
        10,
        16,
        20,
        44,
        46,
        47,
        48,
        50,
        60,
        62,
        73,
        81,
        115,
        164,
        192,
        193,
        194,
        195,
        291,
        497,
        516,
    }
)

_CODE = re.compile(r"Code:\s*(\d+)")
_MAX_REASON = 400


def error_code(e: BaseException) -> int | None:
    code = getattr(e, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE.search(str(e))
    return int(m.group(1)) if m else None


def one_line(e: BaseException) -> str:
    """The exception's message on one line, without the server's stack trace."""
    text = str(e).split("Stack trace:", 1)[0]
    text = re.sub(r"\.\.+$", ".", " ".join(text.split())) or e.__class__.__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def classify(e: BaseException) -> SinkError:
    """The kind of a failed ClickHouse call (``e`` itself if it is one already)."""
    if isinstance(e, SinkError):
        return e
    code, reason = error_code(e), one_line(e)
    if code == 252 and "partitions for single INSERT" in reason:
        return RowsRefused(reason)  # fewer rows per insert: fewer partitions
    if code in FATAL_CODES:
        return SinkFatal(reason)
    if code in ROW_CODES:
        return RowsRefused(reason)
    if code in TRANSIENT_CODES or isinstance(e, OSError | EOFError | TimeoutError):
        return SinkTransient(reason)
    if isinstance(e, struct.error | OverflowError | InvalidOperation) or _is_arrow_value_error(e):
        return RowsRefused(reason)  # a value the column's encoding cannot take
    return SinkTransient(reason)


def _is_arrow_value_error(e: BaseException) -> bool:
    # pyarrow refusing a value while building a column (chdb's inserts): ArrowInvalid
    # ("... does not fit into precision", "Integer value out of bounds"), ArrowTypeError.
    return type(e).__module__.startswith("pyarrow") and type(e).__name__ in (
        "ArrowInvalid",
        "ArrowTypeError",
    )

"""TOUCHSTREAM_LOG_FORMAT=json: one JSON object per line, a traceback included."""

from __future__ import annotations

import json
import logging
import logging.config

from touchstream.jsonlog import JsonFormatter, logging_config


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    r = logging.LogRecord("touchstream.worker", logging.ERROR, __file__, 1, msg, args, exc_info)
    r.created, r.msecs = 1_700_000_000.25, 250.0
    return r


def test_a_record_is_one_line_of_json_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("totals %s\nand more", {"a": 1}))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "ERROR",
        "logger": "touchstream.worker",
        "message": "totals {'a': 1}\nand more",
    }


def test_an_exception_keeps_its_traceback_in_the_same_line() -> None:
    line = JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert (
        entry["exception"].startswith("Traceback")
        and "ValueError: bad\nvalue" in entry["exception"]
    )


def test_the_logging_config_is_one_dictconfig_takes() -> None:
    config = logging_config("info")
    assert config["root"]["level"] == "INFO"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

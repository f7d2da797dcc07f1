"""Structured logs: one parseable JSON object per line."""

from __future__ import annotations

import json
import logging

from edgekv.logs import JsonFormatter


def test_json_formatter_emits_one_object_per_record() -> None:
    record = logging.LogRecord(
        "edgekv.node", logging.WARNING, __file__, 1, "peer %s down", ("b",), None
    )
    entry = json.loads(JsonFormatter("a-1").format(record))
    assert entry["level"] == "warning" and entry["node"] == "a-1"
    assert entry["msg"] == "peer b down" and entry["logger"] == "edgekv.node"
    assert entry["ts"].endswith("Z")

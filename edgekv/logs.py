"""Log set-up of an edgekv process: plain text for people, JSON lines for shippers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node_id,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, log_format: str = "text", node_id: str = "") -> None:
    """Send every log record to stderr at ``level``, as text or (``json``) JSON lines in UTC."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
        logging.Formatter.converter = time.gmtime
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_task_death(task: asyncio.Task[None]) -> None:
    """Done-callback of a long-lived task: a task that died says so, with its traceback."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("edgekv.node").error(
            "background task %s died", task.get_name(), exc_info=task.exception()
        )

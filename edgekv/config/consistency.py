"""The cluster file's ``consistency:`` section (read levels, session tokens)."""

from __future__ import annotations

from edgekv.config.model import ConsistencySettings
from edgekv.config.values import as_int, as_mapping, check_keys
from edgekv.errors import ConfigError

# A SESSION read waits at most this long for replication before it is forwarded.
MAX_SESSION_WAIT_MS = 10_000


def parse_consistency(value: object) -> ConsistencySettings:
    """``consistency: {session_wait_ms: 300}``; ConfigError naming the entry and the bound."""
    if value is None:
        return ConsistencySettings()
    entry = as_mapping(value, "consistency")
    check_keys(entry, "consistency", required=(), optional=("session_wait_ms",))
    default = ConsistencySettings()
    wait_ms = as_int(
        entry.get("session_wait_ms", default.session_wait_ms),
        "consistency.session_wait_ms",
        minimum=0,
    )
    if wait_ms > MAX_SESSION_WAIT_MS:
        raise ConfigError(
            f"consistency.session_wait_ms is {wait_ms}; the limit is {MAX_SESSION_WAIT_MS}"
        )
    return ConsistencySettings(session_wait_ms=wait_ms)

"""Size limits that every entry point enforces the same way.

The engine checks them before writing anything, so a rejected request changes
nothing. Messages name the actual size, the limit and the setting that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.errors import InvalidArgument

MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_BATCH_OPS = 1000
DEFAULT_MAX_SCAN_LIMIT = 10_000
# A gRPC message must hold the largest value plus its key and framing.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Calls one client address may have in flight, and all clients together: a flood
# gets RESOURCE_EXHAUSTED instead of memory growth; replication has its own port.
DEFAULT_MAX_INFLIGHT_PER_CLIENT = 1024
DEFAULT_MAX_CONCURRENT_RPCS = 8192
# Calls in progress on the peer port, all peers together. A peer normally has
# one replication stream, one heartbeat and one anti-entropy call open here;
# beyond the limit gRPC answers RESOURCE_EXHAUSTED, so a flood on the peer port
# costs bounded memory.
DEFAULT_MAX_PEER_CONCURRENT_RPCS = 1024
# The least max_peer_concurrent_rpcs per peer: stream, heartbeat, anti-entropy, and one spare.
PEER_RPCS_PER_PEER = 4


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-node limits; the cluster file's ``limits`` section overrides the defaults."""

    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_batch_ops: int = DEFAULT_MAX_BATCH_OPS
    max_scan_limit: int = DEFAULT_MAX_SCAN_LIMIT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_inflight_per_client: int = DEFAULT_MAX_INFLIGHT_PER_CLIENT
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_peer_concurrent_rpcs: int = DEFAULT_MAX_PEER_CONCURRENT_RPCS

    def __post_init__(self) -> None:
        for name in (
            "max_value_bytes",
            "max_batch_ops",
            "max_scan_limit",
            "max_message_bytes",
            "max_inflight_per_client",
            "max_concurrent_rpcs",
            "max_peer_concurrent_rpcs",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")

    def check_key(self, key: object) -> None:
        """Raise InvalidArgument unless ``key`` is 1..MAX_KEY_BYTES bytes."""
        if not isinstance(key, bytes):
            raise InvalidArgument(f"key must be bytes, got {type(key).__name__}")
        n = len(key)
        if n == 0:
            raise InvalidArgument("key is empty; keys are 1 to 1024 bytes")
        if n > MAX_KEY_BYTES:
            raise InvalidArgument(f"key is {n} bytes; the limit is {MAX_KEY_BYTES}")

    def check_value(self, value: object) -> None:
        """Raise InvalidArgument unless ``value`` is bytes within max_value_bytes."""
        if not isinstance(value, bytes):
            raise InvalidArgument(f"value must be bytes, got {type(value).__name__}")
        n = len(value)
        if n > self.max_value_bytes:
            raise InvalidArgument(
                f"value is {n} bytes; the limit is {self.max_value_bytes} (max_value_bytes)"
            )

    def check_batch(self, n_ops: int) -> None:
        if n_ops == 0:
            raise InvalidArgument("batch is empty; send at least one put or delete")
        if n_ops > self.max_batch_ops:
            raise InvalidArgument(
                f"batch has {n_ops} operations; the limit is {self.max_batch_ops} (max_batch_ops)"
            )


DEFAULT_LIMITS = Limits()

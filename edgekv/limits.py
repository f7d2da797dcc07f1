"""Size limits that every entry point enforces the same way.

The engine checks them before writing anything, so a rejected request changes
nothing. Messages name the actual size, the limit and the setting that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekv.errors import InvalidArgument, ResourceExhausted

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
# Watch streams one client address may hold open at once (streams are long-lived,
# so they are counted apart from the calls in flight above).
DEFAULT_MAX_WATCHES_PER_CLIENT = 64
# KV.Stream calls one client address may hold open (an SDK opens one per PoP it
# talks to), and the operations one stream may have running or waiting to be
# answered: as many as the unary calls one client may have in flight.
DEFAULT_MAX_STREAMS_PER_CLIENT = 64
DEFAULT_MAX_STREAM_INFLIGHT = DEFAULT_MAX_INFLIGHT_PER_CLIENT
# Bytes of changes one Watch may have queued for a slow client before it is ended.
DEFAULT_MAX_WATCH_QUEUE_BYTES = 16 * 1024 * 1024
# Bytes per second anti-entropy may move through one node (replication/pacer.py):
# by default a repair of 2.5 GB takes about 2.5 minutes; slower than the minimum,
# a page of max_message_bytes would wait for seconds inside one peer call.
DEFAULT_ANTIENTROPY_BYTES_PER_S = 16 * 1024 * 1024
MIN_ANTIENTROPY_BYTES_PER_S = 1024 * 1024
# Framing on top of the largest value in one message: key, headers, protobuf overhead.
MESSAGE_SLACK_BYTES = 64 * 1024


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
    max_watches_per_client: int = DEFAULT_MAX_WATCHES_PER_CLIENT
    max_watch_queue_bytes: int = DEFAULT_MAX_WATCH_QUEUE_BYTES
    max_streams_per_client: int = DEFAULT_MAX_STREAMS_PER_CLIENT
    max_stream_inflight: int = DEFAULT_MAX_STREAM_INFLIGHT

    def __post_init__(self) -> None:
        for name in (
            "max_value_bytes",
            "max_batch_ops",
            "max_scan_limit",
            "max_message_bytes",
            "max_inflight_per_client",
            "max_concurrent_rpcs",
            "max_peer_concurrent_rpcs",
            "max_watches_per_client",
            "max_watch_queue_bytes",
            "max_streams_per_client",
            "max_stream_inflight",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")

    @property
    def message_bytes(self) -> int:
        """The largest gRPC message a client call may carry: a full value plus framing."""
        return max(self.max_message_bytes, self.max_value_bytes + MESSAGE_SLACK_BYTES)

    @property
    def response_bytes(self) -> int:
        """What the items of one answer (a Scan page, a BatchGet) may add up to.

        The message limit less framing: never less than max_value_bytes, so one
        item of any allowed size always fits.
        """
        return self.message_bytes - MESSAGE_SLACK_BYTES

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
        self.check_value_size(len(value))

    def check_value_size(self, n: int) -> None:
        """Raise InvalidArgument when a value of ``n`` bytes exceeds max_value_bytes.

        Doors that learn a value's size before reading it (an HTTP body's
        Content-Length) call this to refuse it unread, with the engine's message.
        """
        if n > self.max_value_bytes:
            raise InvalidArgument(
                f"value is {n} bytes; the limit is {self.max_value_bytes} (max_value_bytes)"
            )

    def check_scan_limit(self, limit: int) -> None:
        """Raise InvalidArgument unless a scan page's ``limit`` is 1..max_scan_limit."""
        if limit < 1 or limit > self.max_scan_limit:
            raise InvalidArgument(
                f"scan limit is {limit}; it must be 1 to {self.max_scan_limit} (max_scan_limit)"
            )

    def check_batch_get(self, n_keys: int) -> None:
        """Raise InvalidArgument when a BatchGet names more than max_batch_ops keys."""
        if n_keys > self.max_batch_ops:
            raise InvalidArgument(
                f"batch get has {n_keys} keys; the limit is {self.max_batch_ops} (max_batch_ops)"
            )

    def check_response_bytes(self, nbytes: int, what: str) -> None:
        """Raise ResourceExhausted when an answer's items exceed ``response_bytes``."""
        if nbytes > self.response_bytes:
            raise ResourceExhausted(
                f"{what} answer is at least {nbytes} bytes; the limit is {self.response_bytes} "
                "(max_message_bytes, less framing); ask for fewer keys"
            )

    def check_batch(self, n_ops: int) -> None:
        if n_ops == 0:
            raise InvalidArgument("batch is empty; send at least one put or delete")
        if n_ops > self.max_batch_ops:
            raise InvalidArgument(
                f"batch has {n_ops} operations; the limit is {self.max_batch_ops} (max_batch_ops)"
            )


DEFAULT_LIMITS = Limits()

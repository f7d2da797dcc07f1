"""Resumable Watch: a node's change feed (storage/feed.py) served from a resume token.

What "without gaps or duplicates" means here, for the keys under a prefix:

* **Same PoP** (the token was issued by this node, same feed epoch): the
  stream resumes at the feed entry after the token's, so it is exactly the
  suffix of the changes that became visible on this node: no change is missed
  or delivered twice, whatever happened between (a disconnect, a restart,
  ``kill -9``: the feed is written in the change's own WriteBatch).
* **Another PoP** (failover): the token's vector says, per origin node, the
  greatest timestamp the watcher has passed. This node first waits (up to
  ``watch.failover_wait_ms``) until it has applied that much of every origin,
  then replays its feed skipping every change at or below the vector (seen
  already) and every change its own data has since superseded. Per key,
  versions delivered strictly increase and the key's final state is
  delivered; intermediate versions another PoP superseded may be skipped
  (last-writer-wins means no PoP has to hold them). This relies on each PoP
  applying an origin's writes in that origin's order, which replication
  streams do; records repaired out of order by anti-entropy after a peer was
  away past the log's retention can break it for those records.
* A token older than the feed retains (trimmed past it, or, from another PoP,
  past its vector) is WatchTokenExpired (OUT_OF_RANGE): rescan the range and
  watch from the first scan page's ``watch_token``.

Every event carries a token positioned after it; an idle watch gets a progress
event (empty key, ``progress`` true) every ``watch.progress_interval_ms`` with a
fresh token, and, when asked (``initial_progress``), one at the start, so a
client holds a token before the first change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import NamedTuple

from edgekv import native
from edgekv.aiowait import wait_event
from edgekv.config.watch import WatchSettings
from edgekv.coordinator.results import ChangeEvent
from edgekv.coordinator.watchtoken import WatchToken, decode_token, encode_token
from edgekv.errors import WatchTokenExpired
from edgekv.replication.changefeed import ChangeFeed
from edgekv.storage.engine import Engine
from edgekv.storage.feed import ChangeLog, Vector, origin_and_timestamp

log = logging.getLogger(__name__)

# Feed entries read per RocksDB pass of a tail.
FEED_PAGE = 256
# How often a failover resume checks whether this node has caught up with the token.
_CATCH_UP_POLL_S = 0.02


class Start(NamedTuple):
    """Where a tail starts: after feed seq ``seq``, with ``vector`` passed so far.

    ``seen`` is a foreign token's vector: changes at or below it were delivered
    (or superseded) on the PoP that issued it.
    """

    seq: int
    vector: dict[str, int]
    seen: Vector | None


class FeedWatches:
    """Opens Watch streams on one node's change feed. Runs on the node's event loop.

    ``signals`` wakes a tail after each change; ``held`` (None: every key) says
    which keys this node may serve, so a token never makes it replay a key it
    may not hold.
    """

    def __init__(
        self, engine: Engine, signals: ChangeFeed, settings: WatchSettings, node_id: str
    ) -> None:
        self._engine = engine
        self._signals = signals
        self.settings = settings
        self.node_id = node_id

    @property
    def _feed(self) -> ChangeLog:  # the engine's: a reopen (storage/recovery.py) builds another
        return self._engine.feed

    def token_now(self) -> bytes:
        """A token at the feed's head: a Watch from it sees every change made after this call."""
        head = self._feed.head
        return encode_token(WatchToken(self.node_id, self._feed.epoch, head.seq, head.vector))

    async def start(self, raw_token: bytes) -> Start:
        """Resolve a request's token (b"": now) to a feed position; raises WatchTokenExpired."""
        feed = self._feed
        if not raw_token:
            head = feed.head
            return Start(head.seq, dict(head.vector), None)
        token = decode_token(raw_token)
        mine = token.node_id == self.node_id and token.epoch == feed.epoch
        if mine and token.seq <= feed.head.seq:  # else: this feed lost it, resume as elsewhere
            if token.seq < feed.trimmed.seq:
                raise WatchTokenExpired(
                    f"resume token is at feed seq {token.seq} of {self.node_id}; its feed "
                    f"now starts after seq {feed.trimmed.seq} (watch.feed_max_entries, "
                    "feed_max_bytes, feed_max_age_s): rescan, then watch from the scan's "
                    "watch_token"
                )
            return Start(token.seq, dict(token.vector), None)
        await self._catch_up(token.vector)
        trimmed = feed.trimmed
        ahead = sorted(o for o, ts in trimmed.vector.items() if ts > token.vector.get(o, 0))
        if ahead:
            raise WatchTokenExpired(
                f"resume token from {token.node_id} is older than {self.node_id}'s change feed "
                f"(it dropped changes of {', '.join(ahead)} the token has not seen): rescan, "
                "then watch from the scan's watch_token"
            )
        return Start(trimmed.seq, dict(token.vector), token.vector)

    async def _catch_up(self, vector: Vector) -> None:
        """Wait (bounded) until this node has applied every origin up to ``vector``."""
        deadline = time.monotonic() + self.settings.failover_wait_ms / 1000
        while True:
            have = self._feed.head.vector
            if all(have.get(origin, 0) >= ts for origin, ts in vector.items()):
                return
            if time.monotonic() >= deadline:
                behind = sorted(o for o, ts in vector.items() if have.get(o, 0) < ts)
                log.info("watch failover resumes before catching up with %s", behind)
                return
            await asyncio.sleep(_CATCH_UP_POLL_S)

    async def tail(
        self,
        prefix: bytes,
        start: Start,
        held: Callable[[bytes], bool] | None = None,
        initial_progress: bool = False,
    ) -> AsyncGenerator[ChangeEvent, None]:
        """Events under ``prefix`` after ``start``, then live ones; never ends by itself.

        With ``initial_progress`` the first event is a progress event at ``start``.

        Raises WatchTokenExpired when the feed is trimmed past a watcher that
        fell that far behind.
        """
        node_id, epoch = self.node_id, self._feed.epoch
        decode, get_record = native.decode_record, self._engine.get_record
        interval_s = self.settings.progress_interval_ms / 1000
        seq, vector, seen = start
        signal = self._signals.signal()

        def token() -> bytes:
            return encode_token(WatchToken(node_id, epoch, seq, vector))

        def progress() -> ChangeEvent:
            return ChangeEvent(b"", b"", 0, "", False, 0, False, node_id, token(), True)

        try:
            if initial_progress:
                yield progress()
            last_sent = time.monotonic()
            while True:
                feed = self._feed  # the engine's now (a reopen builds a new one)
                signal.clear()
                entries = feed.read(seq + 1, FEED_PAGE)
                if seq < feed.trimmed.seq:
                    raise WatchTokenExpired(
                        f"watch fell behind {node_id}'s change feed (it kept changes after "
                        f"seq {feed.trimmed.seq}; the watch was at {seq}): rescan, then watch "
                        "from the scan's watch_token"
                    )
                for entry in entries:
                    key, record = entry.key, entry.record
                    origin, ts = origin_and_timestamp(record)
                    deliver = key.startswith(prefix) and (held is None or held(key))
                    if deliver and seen is not None:
                        deliver = ts > seen.get(origin, 0) and not _superseded(
                            get_record(key), ts, origin
                        )
                    seq = entry.seq
                    if ts > vector.get(origin, 0):
                        vector[origin] = ts
                    if deliver:
                        tombstone, _, expires_at_ms, _, value = decode(record)
                        yield ChangeEvent(
                            key, value, ts, origin, tombstone, expires_at_ms,
                            origin == node_id, node_id, token(),
                        )  # fmt: skip
                        last_sent = time.monotonic()
                idle_s = time.monotonic() - last_sent
                if idle_s >= interval_s:  # nothing delivered for a while, busy or not
                    yield progress()
                    last_sent, idle_s = time.monotonic(), 0.0
                if entries and seq < feed.head.seq:
                    await asyncio.sleep(0)  # more to replay: let the loop serve others first
                    continue
                if not entries:
                    await wait_event(signal, interval_s - idle_s)
        finally:
            self._signals.unsignal(signal)

    async def run_feed_trimmer(self) -> None:
        """Trim the feed to its bounds every ``watch.trim_interval_ms`` (off the loop)."""
        s = self.settings
        while True:
            await asyncio.sleep(s.trim_interval_ms / 1000)
            try:
                await asyncio.to_thread(
                    self._feed.trim, s.feed_max_entries, s.feed_max_bytes, s.feed_max_age_s * 1000
                )
            except Exception:  # a task boundary: log and go on
                log.exception("change feed trim failed")


def _superseded(stored: bytes | None, ts: int, origin: str) -> bool:
    """Whether this node's record of the key is newer than version (ts, origin)."""
    if stored is None:
        return False
    stored_origin, stored_ts = origin_and_timestamp(stored)
    return (stored_ts, stored_origin) > (ts, origin)

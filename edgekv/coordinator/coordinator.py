"""The request layer of one node: every front door calls it, so each rule exists once.

Given a call (who is calling, from where, until when) and a request in plain values, the
``Coordinator`` authorizes the principal, serves the request from the local engine or forwards it
to the nearest node allowed to hold its keys, fans multi-key and range requests out over placements
and merges the answers, and picks the write path (inline, or group commit with ``sync_writes``). It
returns plain results (``coordinator.results``) or raises ``EdgeKVError``s; turning those into a
wire format is the door's job (server/kv_service.py for gRPC, edgekv/http for Connect, gRPC-Web and
REST). Nothing here knows which protocol a call came in by.

Reads and writes of keys this node may hold run inline on the event loop: a RocksDB point read or
write takes microseconds, and a thread hop per call would cost more than the work
(performance-notes.md). Only large scans leave the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from edgekv.cluster.routing import Router
from edgekv.config.watch import WatchSettings
from edgekv.coordinator.call import Call
from edgekv.coordinator.draining import StreamDrain
from edgekv.coordinator.forwarding import Forwarder, GrpcForwarder
from edgekv.coordinator.home import STRONG, Homes
from edgekv.coordinator.results import (
    BatchGetResult,
    ChangeEvent,
    Found,
    GetResult,
    ScanResult,
    WriteAck,
)
from edgekv.coordinator.session import SessionReads
from edgekv.coordinator.sizing import cut_to_bytes, found_bytes, item_bytes, page_items
from edgekv.coordinator.stitching import (
    ScanSource,
    merge_scan_pages,
    split_keys,
    split_range,
    write_target,
)
from edgekv.coordinator.watching import Watching
from edgekv.errors import (
    InvalidArgument,
    Unavailable,
)
from edgekv.keyrange import scan_bounds
from edgekv.replication.changefeed import ChangeFeed
from edgekv.replication.receipts import AwaitSpec, ReceiptWaiter
from edgekv.storage.batch import DeleteOp, PutOp, validate
from edgekv.storage.conditions import Condition
from edgekv.storage.engine import Engine
from edgekv.storage.group_commit import GroupCommitter
from edgekv.storage.record import ScanItem, ScanPage

DEFAULT_SCAN_LIMIT = 100
# Scans asking for more items than this run on a worker thread, off the event loop.
SCAN_INLINE_MAX = 1000
# Keys per local multi-get of a BatchGet: the answer's size is checked between reads.
BATCH_READ_KEYS = 128
# Items read by a scan's first run; later runs are sized by the items' bytes.
SCAN_FIRST_RUN = 128


class Coordinator:
    """Serves KV requests for one node. Runs on the node's event loop.

    A key this node's region may not hold is never touched locally: its part of
    the request goes to the nearest allowed node (``forwarder``), whose answer,
    with its ``served_by``, is returned as it is. A call that was already
    forwarded to this node is served here or refused, never forwarded again.
    """

    def __init__(
        self,
        engine: Engine,
        router: Router,
        *,
        forwarder: Forwarder | None = None,
        committer: GroupCommitter | None = None,
        feed: ChangeFeed | None = None,
        session: SessionReads | None = None,
        receipts: ReceiptWaiter | None = None,
        watch: WatchSettings | None = None,
        drain: StreamDrain | None = None,
    ) -> None:
        self._engine = engine
        self._get = engine.get  # bound native Reader.get: the hot path
        self._router = router
        self._forwarder: Forwarder = forwarder or GrpcForwarder(router)
        # Set with sync_writes: writes then share fsyncs; otherwise they run inline.
        self._committer = committer
        # Set by membership while this node's clock runs too far ahead of its peers'.
        self._fence = engine.clock.fence
        self._homes = Homes(router, self._forwarder)  # home-mode prefixes (coordinator/home.py)
        # None: this node serves no Watch.
        self._watching = (
            None
            if feed is None
            else Watching(engine, router, self._forwarder, feed, watch or WatchSettings(), drain)
        )
        self.node_id = router.spec.id
        # Fast path: with no placement rules nothing is ever forwarded.
        self._all_local = router.everything_local
        # Read levels and session tokens; receipts of writes that await replicas.
        self._session = session or SessionReads.of(engine, router, self._forwarder)
        self._receipts = receipts or ReceiptWaiter(self.node_id, {}, {}, router.placement)

    # -- reads -------------------------------------------------------------------

    async def get(self, key: bytes, call: Call) -> GetResult:
        """The live value of ``key`` (``found`` None when absent, deleted or expired)."""
        now = self.get_now(key, call)
        if now is not None:
            return now
        if call.consistency or call.session_token:  # a level or a token: coordinator/session.py
            read = self._get_strong if call.consistency == STRONG else self._get_plain
            return await self._session.get(key, call, read)  # the answer merges the token
        self._refuse_if_forwarded(call)
        return await self._forwarder.get(key, call)

    def get_now(self, key: bytes, call: Call) -> GetResult | None:
        """``get``'s answer when it needs no waiting (a LOCAL read of a key held here),
        else None. Authorizes the read either way; changes nothing on ``call``."""
        call.principal.authorize("read", (key,))
        if call.consistency or call.session_token:
            return None
        if self._all_local or self._router.is_local(key):
            return GetResult(self._get(key), self.node_id)
        return None

    async def _get_strong(self, key: bytes, call: Call) -> GetResult:
        if (home := self._homes.read_home(key)) != self.node_id:  # coordinator/home.py
            return await self._homes.get(key, home, call)
        return await self._get_plain(key, call)

    async def _get_plain(self, key: bytes, call: Call) -> GetResult:
        if self._all_local or self._router.is_local(key):
            return GetResult(self._get(key), self.node_id)
        self._refuse_if_forwarded(call)
        return await self._forwarder.get(key, call)

    async def get_many(self, keys: Sequence[bytes], call: Call) -> BatchGetResult:
        """Values of ``keys`` in request order; pinned keys are read where they live.

        Raises InvalidArgument for more than max_batch_ops keys, counted over
        all keys before any is read or forwarded, and ResourceExhausted when
        the answer would exceed the message limit (``Limits.response_bytes``):
        ask for fewer keys. Reading stops as soon as that is known.
        """
        limits = self._engine.limits
        limits.check_batch_get(len(keys))
        call.principal.authorize("read", keys)
        if call.consistency or call.session_token:
            read = self._get_many_strong if call.consistency == STRONG else self._get_many_plain
            return await self._session.get_many(keys, call, read)
        return await self._get_many_plain(keys, call)

    async def _get_many_strong(self, keys: Sequence[bytes], call: Call) -> BatchGetResult:
        homed = await self._homes.get_many(keys, call, lambda ks: self._read_many(ks)[0])
        return homed if homed is not None else await self._get_many_plain(keys, call)

    async def _get_many_plain(self, keys: Sequence[bytes], call: Call) -> BatchGetResult:
        limits = self._engine.limits
        if self._all_local:
            return BatchGetResult(self._read_many(keys)[0], self.node_id)
        router = self._router
        local, remote = split_keys(keys, router.is_local, router.placement.placement_of)
        if not remote:
            return BatchGetResult(self._read_many(keys)[0], self.node_id)
        self._refuse_if_forwarded(call)
        found: list[Found] = [None] * len(keys)
        local_found, size = self._read_many([keys[i] for i in local])
        for i, item in zip(local, local_found, strict=True):
            found[i] = item
        replies = await asyncio.gather(
            *(self._forwarder.get_many([keys[i] for i in at], call) for at in remote.values())
        )
        read_by = [self.node_id] * len(keys)
        for at, reply in zip(remote.values(), replies, strict=True):
            size += found_bytes([keys[i] for i in at], reply.found)
            for i, item, reader in zip(at, reply.found, _readers(reply), strict=True):
                found[i] = item
                read_by[i] = reader
        limits.check_response_bytes(size, "batch get")
        return BatchGetResult(found, self.node_id, read_by)

    def _read_many(self, keys: Sequence[bytes]) -> tuple[list[Found], int]:
        """Local values of ``keys`` and their answer bytes, refused once over the limit."""
        engine = self._engine
        check = engine.limits.check_response_bytes
        if len(keys) <= BATCH_READ_KEYS:
            found: list[Found] = list(engine.get_many(keys))
            size = found_bytes(keys, found)
            check(size, "batch get")
            return found, size
        found, size = [], 0
        for start in range(0, len(keys), BATCH_READ_KEYS):
            part = keys[start : start + BATCH_READ_KEYS]
            values = engine.get_many(part)
            size += found_bytes(part, values)
            check(size, "batch get")
            found += values
        return found, size

    async def scan(
        self,
        call: Call,
        *,
        prefix: bytes = b"",
        start: bytes = b"",
        end: bytes = b"",
        page_token: bytes = b"",
        limit: int = 0,
        keys_only: bool = False,
    ) -> ScanResult:
        """One page of the keys in [start, end) under ``prefix``, in key order.

        ``page_token`` (the previous page's ``next_page_token``) resumes the same
        range; ``limit`` 0 means DEFAULT_SCAN_LIMIT. A range that spans
        placements held elsewhere is stitched from the nodes that hold each part.
        """
        lo, hi = scan_bounds(prefix, start, end)
        if page_token:
            if page_token < lo or (hi and page_token >= hi):
                raise InvalidArgument(
                    "page_token does not belong to this scan's range; send the token "
                    "back with the same prefix/start/end"
                )
            lo = page_token
        limit = limit or DEFAULT_SCAN_LIMIT
        self._engine.limits.check_scan_limit(limit)  # before any part is forwarded
        call.principal.authorize("read", key_range=(lo, hi))
        if call.consistency or call.session_token:
            home = self._homes.scan_home(lo, hi) if call.consistency == STRONG else self.node_id
            if home != self.node_id:
                read = lambda: self._homes.scan(lo, hi, limit, keys_only, home, call)  # noqa: E731
            else:
                read = lambda: self._scan_plain(call, lo, hi, limit, keys_only)  # noqa: E731
            return await self._session.scan(call, lo, hi, limit, keys_only, read)
        return await self._scan_plain(call, lo, hi, limit, keys_only)

    async def _scan_plain(
        self, call: Call, lo: bytes, hi: bytes, limit: int, keys_only: bool
    ) -> ScanResult:
        if not self._all_local:
            router = self._router
            held, remote = split_range(lo, hi, router.placement, router.region)
            if remote:
                return await self._scan_stitched(held, remote, limit, keys_only, call)
        token = b"" if self._watching is None else self._watching.feeds.token_now()
        page = await self._scan_local(lo, hi, limit, keys_only=keys_only)
        items = page_items(page, keys_only)
        return ScanResult(items, page.next_start or b"", self.node_id, watch_token=token)

    async def _scan_local(
        self, lo: bytes, hi: bytes, limit: int, *, keys_only: bool = False
    ) -> ScanPage:
        self._engine.limits.check_scan_limit(limit)
        if limit > SCAN_INLINE_MAX:
            return await asyncio.to_thread(self._scan_bounded, lo, hi, limit, keys_only)
        return self._scan_bounded(lo, hi, limit, keys_only)

    def _scan_bounded(self, lo: bytes, hi: bytes, limit: int, keys_only: bool) -> ScanPage:
        """``Engine.scan`` cut at ``Limits.response_bytes`` of items (at least one item).

        Reads in runs sized by the items seen so far, so a page of big values
        never reads far past the budget; stops early (``next_start`` set) where
        the budget is met, as a page cut by ``limit`` does.
        """
        scan = self._engine.scan
        budget = self._engine.limits.response_bytes
        items: list[ScanItem] = []
        size = 0
        start = lo
        step = min(limit, SCAN_FIRST_RUN)
        while True:
            page = scan(start, hi, limit=step)
            for item in page.items:
                cost = item_bytes(item, keys_only)
                if items and size + cost > budget:
                    return ScanPage(items, item.key)  # resume at the item left out
                items.append(item)
                size += cost
            if page.next_start is None or len(items) >= limit or len(page.items) < step:
                return ScanPage(items, page.next_start)  # done, full, or examined enough
            start = page.next_start
            if hi and start >= hi:
                return ScanPage(items, None)
            average = max(1, size // max(1, len(items)))
            step = max(1, min(limit - len(items), (budget - size) // average + 1))

    async def _scan_stitched(
        self,
        held: list[tuple[bytes, bytes]],
        remote: list[tuple[bytes, bytes, bytes]],
        limit: int,
        keys_only: bool,
        call: Call,
    ) -> ScanResult:
        """A scan over several placements: each part from a node that holds it, merged.

        ``held`` and ``remote`` are the range's parts from ``split_range``. The
        local part reads only the ranges this node may hold: a copy of a range
        owned elsewhere (left behind by a rule change) is never served.
        """
        self._refuse_if_forwarded(call)
        items: list[ScanItem] = []
        resume = b""
        for i, (start, end) in enumerate(held):
            page = await self._scan_local(start, end, limit - len(items), keys_only=keys_only)
            items += page_items(page, keys_only)
            if page.next_start:
                resume = page.next_start
                break
            if len(items) >= limit:
                resume = end if i + 1 < len(held) else b""
                break
        sources = [ScanSource(items, resume, self.node_id)]
        replies = await asyncio.gather(
            *(
                self._forwarder.scan(start, end, limit, keys_only, rule_prefix, call)
                for start, end, rule_prefix in remote
            )
        )
        sources += [ScanSource(r.items, r.next_page_token, _holders(r)) for r in replies]
        items, token, held_by = merge_scan_pages(sources, limit)
        items, token = cut_to_bytes(items, token, self._engine.limits.response_bytes, keys_only)
        return ScanResult(items, token, self.node_id, held_by[: len(items)])

    # -- writes ------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes,
        ttl_ms: int,
        call: Call,
        awaits: AwaitSpec | None = None,
        condition: Condition | None = None,
    ) -> WriteAck:
        """Store ``value`` under ``key`` (``ttl_ms`` 0: no expiry); durable when it returns."""
        op = PutOp(key, value, ttl_ms, condition)
        return await self.write((op,), call, await_replicas=awaits)

    async def delete(
        self,
        key: bytes,
        call: Call,
        await_replicas: AwaitSpec | None = None,
        condition: Condition | None = None,
    ) -> WriteAck:
        """Delete ``key`` (a tombstone, so the delete replicates and wins by version)."""
        return await self.write((DeleteOp(key, condition),), call, await_replicas=await_replicas)

    async def write(
        self,
        ops: Sequence[PutOp | DeleteOp],
        call: Call,
        *,
        await_replicas: AwaitSpec | None = None,
    ) -> WriteAck:
        """Apply ``ops`` atomically with one version, here or at the node holding them all.

        Raises InvalidArgument when the batch spans placements held by different
        regions (it could not be atomic), and ClockFenced (FAILED_PRECONDITION)
        when it would be written here while this node's clock is fenced
        (cluster/clockfence.py). With ``await_replicas`` it answers once those
        PoPs applied the batch, or when the wait ends (replication/receipts.py).
        """
        call.principal.authorize("write", [op.key for op in ops])
        if home := self._homes.write_home(ops):  # homed keys: applied at their home only
            if home != self.node_id:
                validate(ops, 0, self._engine.limits, conditional=True)  # refused unsent
                return await self._homes.forward_write(ops, home, call, await_replicas)
        elif not self._all_local and ops:
            router = self._router
            target = write_target(ops, router.is_local, router.placement.placement_of)
            if target is not None:
                self._refuse_if_forwarded(call)
                # The holder checks the batch too; checked here first, a bad op (a ttl
                # past int64, an oversized value) is refused by its rule, unsent.
                validate(ops, 0, self._engine.limits)
                return await self._forwarder.write(ops, target, call, await_replicas=await_replicas)
        if self._fence.fenced:
            raise self._fence.refuse()
        receipts = self._receipts
        peers = receipts.eligible(await_replicas, [op.key for op in ops]) if await_replicas else []
        if self._committer is None:
            ack = WriteAck(self._engine.write(ops), self.node_id)
        else:
            ack = WriteAck(await self._committer.write(ops), self.node_id)
        if not await_replicas:
            return ack
        got = await receipts.confirm(await_replicas, peers, self._engine.last_seq, call)
        return ack._replace(receipts=got.receipts, not_applied_by=got.not_applied_by)

    # -- watch -------------------------------------------------------------------

    def watch(
        self, prefix: bytes, call: Call, resume_token: bytes = b"", initial_progress: bool = False
    ) -> AsyncGenerator[ChangeEvent, None]:
        """Changes under ``prefix``, from ``resume_token`` (b"": now); see coordinator/watching.py.

        Never ends by itself. Raises WatchTokenExpired (OUT_OF_RANGE) for a
        token older than the feed retains, InvalidArgument for a malformed one.
        """
        if self._watching is None:
            raise Unavailable("this node does not serve Watch")
        return self._watching.watch(prefix, call, resume_token, initial_progress)

    async def run_feed_trimmer(self) -> None:
        """Keep the change feed within the ``watch:`` retention (the node runs it)."""
        if self._watching is not None:
            await self._watching.feeds.run_feed_trimmer()

    # -- routing -----------------------------------------------------------------

    def _refuse_if_forwarded(self, call: Call) -> None:
        """A forwarded call for keys we may not hold is refused rather than bounced on."""
        if call.forwarded_by is not None:
            self._router.refuse_misrouted(call.forwarded_by)


def _readers(result: BatchGetResult) -> list[str]:
    return result.read_by or [result.served_by] * len(result.found)


def _holders(result: ScanResult) -> list[str] | str:
    return result.held_by or result.served_by

"""Handing off what this node may no longer hold, then erasing it (placement rule changes).

When the placement rules change, a node can be left holding keys its region may
no longer hold. The node never serves them (the request layer forwards every
such key, and stitched scans skip their ranges), and ``Handoff.run_handoff``
removes them: it sends each chunk to a peer in a region that may hold them (the
``HandOff`` RPC), and erases from data, log and digests (storage/purge.py) only
the keys that peer says it now holds at the same version or newer. So the only
copy of a key is never lost, even when this node was the last to hold it (a
write it took under the old rules and had not shipped yet). Once a pass leaves
nothing behind it compacts the data directory, so no byte of the removed values
stays in any file, and logs how many keys it removed (metric:
``edgekv_purged_records``).

Keys no owner confirms (none reachable, or none configured) stay and are
retried every ``retry_s``; ``confirm=False`` (``edgekv serve
--purge-disallowed``) is the operator's explicit word that they may go anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from edgekv import native
from edgekv.cluster.routing import Router
from edgekv.storage import tombstones
from edgekv.storage.engine import Engine
from edgekv.storage.record import Change
from edgekv.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger(__name__)

_CALL_TIMEOUT_S = 30.0
_CHUNK_RECORDS = 256
_CHUNK_BYTES = 1 << 20  # well under the peer port's message limit


def held_keys(
    engine: Engine, records: Sequence[tuple[bytes, bytes]], may_hold: Callable[[bytes], bool]
) -> list[bytes]:
    """The keys of ``records`` that ``engine`` holds at their version or newer (HandOff's answer).

    A dead record past the collection horizon counts as held when nothing is
    stored: the receiver rightly did not store it, and nothing newer can be lost.
    A key the receiver may not hold is never held.
    """
    mine = [(k, r) for k, r in records if may_hold(k)]
    stored = dict(engine.records([k for k, _ in mine]))
    version = native.record_version
    horizon = engine.collection.horizon_ms
    held = []
    for key, record in mine:
        have = stored.get(key)
        if have is not None:
            if version(have) >= version(record):
                held.append(key)
        elif horizon and tombstones.collectable(record, horizon):
            held.append(key)
    return held


class Handoff:
    """Hands this node's refused keys to their owners and erases them here.

    ``router.refused``: the key ranges this node may not hold (none: nothing
    to do); ``router.candidates(key)``: the peers that may hold ``key``,
    nearest first, tried in that order. ``confirm=False`` erases without
    asking (the operator's ``--purge-disallowed``). Runs on the node's event
    loop; disk work goes to worker threads.
    """

    def __init__(
        self,
        engine: Engine,
        router: Router,
        stub_for: Callable[[str], replication_pb2_grpc.ReplicationStub],
        *,
        confirm: bool = True,
        retry_s: float | None = None,
    ) -> None:
        self._engine = engine
        self.refused = router.refused
        self._owners_of = router.candidates
        self._stub_for = stub_for
        self._hello = replication_pb2.PeerHello(
            node_id=router.spec.id, cluster=router.config.cluster
        )
        self.confirm = confirm
        # Retried as often as anti-entropy runs: an owner coming back is noticed then.
        self.retry_s = (
            router.config.replication.antientropy_interval_s if retry_s is None else retry_s
        )
        self.removed_total = 0  # records erased here since start (metrics)
        self.kept = 0  # refused records still here after the last pass (metrics)
        self.done = False  # a pass left nothing behind

    async def run_handoff(self) -> None:
        """Pass over the refused keys until none is left, then end."""
        while True:
            try:
                if await self.handoff_once():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # task boundary: the next pass retries
                log.exception("handing off keys this node may no longer hold failed")
            await asyncio.sleep(self.retry_s)

    async def handoff_once(self) -> bool:
        """One pass over every refused key here; True when none is left."""
        purge = self._engine.purge
        dropped = await asyncio.to_thread(purge.drop_quarantined, self.refused)
        unfed = await asyncio.to_thread(purge.drop_feed_entries, self.refused)
        if dropped:
            log.info("dropped %d set-aside records of keys this node may no longer hold", dropped)
        log_seqs = await asyncio.to_thread(purge.log_entries_in, self.refused)
        removed = kept = 0
        start: bytes | None = b""
        while start is not None:
            chunk, start = await asyncio.to_thread(
                purge.records_in,
                self.refused,
                start=start,
                limit=_CHUNK_RECORDS,
                max_bytes=_CHUNK_BYTES,
            )
            confirmed = await self._confirmed(chunk) if self.confirm else chunk
            kept += len(chunk) - len(confirmed)
            removed += await asyncio.to_thread(purge.remove, confirmed, log_seqs)
        orphans = await asyncio.to_thread(purge.remove_orphan_log_entries, log_seqs)
        if removed or orphans or unfed:
            await asyncio.to_thread(purge.compact)
            log.info(
                "removed %d records this node may no longer hold under its placement rules "
                "from data, log and digests (and %d log entries of keys already gone), and "
                "compacted them away; %d kept until an owner confirms it holds them",
                removed, orphans, kept,
            )  # fmt: skip
        elif kept:
            log.warning(
                "%d keys this node may no longer hold are kept until a node allowed to hold "
                "them confirms it does (none answered); they are not served here. Restart "
                "with --purge-disallowed to erase them without that confirmation",
                kept,
            )
        self.removed_total += removed
        self.kept = kept
        self.done = kept == 0
        return self.done

    async def _confirmed(self, chunk: list[Change]) -> list[Change]:
        """The records of ``chunk`` that an owner now holds at their version or newer."""
        by_owners: dict[tuple[str, ...], list[Change]] = {}
        for change in chunk:
            by_owners.setdefault(tuple(self._owners_of(change.key)), []).append(change)
        confirmed: list[Change] = []
        for owners, changes in by_owners.items():
            for peer in owners:
                try:
                    resp = await self._stub_for(peer).HandOff(
                        replication_pb2.RecordBatch(
                            hello=self._hello,
                            records=[
                                replication_pb2.KeyRecord(key=k, record=r) for k, r in changes
                            ],
                        ),
                        timeout=_CALL_TIMEOUT_S,
                    )
                except grpc.aio.AioRpcError as exc:
                    log.debug("hand-off to %s failed: %s", peer, exc.code().name)
                    continue
                held = set(resp.held)
                confirmed += [c for c in changes if c.key in held]
                changes = [c for c in changes if c.key not in held]
                if not changes:
                    break
        return confirmed

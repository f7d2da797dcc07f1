"""Watch streams over real gRPC: a stream that ends unsubscribes at once, on every node
it spans (the local feed and the relayed part at the PoP that holds a pinned prefix)."""

from __future__ import annotations

import asyncio

from edgekv.local.inprocess import ClusterFactory


async def test_cancelled_watch_unsubscribes_on_every_node_it_spans(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(placement=(("eu/", ["eu-west"]),))
    iad = cluster.client("iad-1")

    def streams(node_id: str) -> float:
        return cluster.metric(node_id, "edgekv_watch_streams")

    seen: list[bytes] = []

    async def watch() -> None:
        async for event in iad.watch(b""):  # spans eu/ (relayed from fra-1) and the rest
            seen.append(event.key)

    task = asyncio.create_task(watch())
    await cluster.wait_until(
        lambda: streams("iad-1") == 1 and streams("fra-1") == 1, timeout_s=10,
        what="the watch subscribed at iad-1 and, for eu/, at fra-1",
    )  # fmt: skip
    await cluster.client("fra-1").put(b"eu/w", b"x")
    await cluster.wait_until(lambda: b"eu/w" in seen, timeout_s=10, what="the relayed event")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cluster.wait_until(
        lambda: streams("iad-1") == 0 and streams("fra-1") == 0, timeout_s=10,
        what="both subscriptions gone after the client cancelled",
    )  # fmt: skip

"""A forwarded write whose answer is lost is not sent to another node (found by torture).

The forwarding node fails a call over to the next allowed PoP on UNAVAILABLE.
For a write, UNAVAILABLE may come after the first PoP applied it (the
connection broke on the way back): sending it again elsewhere stored the same
write twice, under two versions, and a reader saw the value at a version the
writer was never given. A write is now sent elsewhere only when the first PoP
was never reached; otherwise its outcome is unknown and the caller is told so.
"""

from __future__ import annotations

import asyncio

import pytest

from edgekv.errors import Unavailable
from edgekv.local.inprocess import ClusterFactory

REGIONS = (("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45))
NODES = (("fra-1", "eu-west"), ("fra-2", "eu-west"), ("iad-1", "us-east"))
EU = ["fra-1", "fra-2"]


async def test_forwarded_write_whose_answer_is_lost_is_not_applied_twice(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(regions=REGIONS, nodes=NODES, placement=(("eu/", ["eu-west"]),))
    iad = cluster.client("iad-1", timeout_s=30.0)
    await iad.put(b"eu/warm", b"v")  # the forwarding channels are connected
    for node in EU:  # answers take a second on the way back, whichever PoP is nearest
        cluster.set_delay("iad-1", node, 1000)
    put = asyncio.create_task(iad.put(b"eu/k", b"once"))

    def accepted_by() -> str | None:
        for node in EU:
            item = cluster.engine(node).get_item(b"eu/k")
            if item is not None:
                return item.origin
        return None

    first = await cluster.wait_until(accepted_by, timeout_s=20, what="the write applied")
    cluster.cut("iad-1", first)  # its answer, still on the wire, is lost
    with pytest.raises(Unavailable) as info:
        await put
    assert "it may have been applied there" in str(info.value)
    cluster.heal()
    for node in EU:
        cluster.set_delay("iad-1", node, 0)
    stored = await cluster.assert_converged(b"eu/k", EU)
    assert stored[b"eu/k"][0] == b"once"
    assert stored[b"eu/k"][2] == first  # one version: the one the first PoP gave it


async def test_forwarded_write_fails_over_when_the_nearest_pop_is_down(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(regions=REGIONS, nodes=NODES, placement=(("eu/", ["eu-west"]),))
    iad = cluster.client("iad-1", timeout_s=30.0)
    target = (await iad.put(b"eu/warm", b"v")).served_by
    await cluster.stop_node(target, grace_s=0)
    result = await iad.put(b"eu/k", b"v2")  # never reached the stopped PoP: safe to send on
    assert result.served_by != target

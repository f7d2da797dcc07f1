"""SESSION reads in the request layer (coordinator/session.py), on the in-process nodes
of test_coordinator.py: three engines that do not replicate to each other, so a
token from one node is never covered at another until the read is forwarded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_coordinator import CLIENT, InProcessNodes

from edgekv.consistency import SESSION, STRONG, decode_token, token_of_versions
from edgekv.coordinator import Call
from edgekv.errors import FailedPrecondition, Unavailable
from edgekv.principal import ANYONE


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[InProcessNodes]:
    cluster = InProcessNodes(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def session_call(token: bytes, level: int = SESSION) -> Call:
    return Call(ANYONE, consistency=level, session_token=token)


async def test_session_get_not_covered_is_forwarded_to_the_origin(nodes: InProcessNodes) -> None:
    ack = await nodes["fra-1"].put(b"g/s", b"v", 0, CLIENT)
    token = token_of_versions([(ack.version.timestamp, "fra-1")])
    result = await nodes["iad-1"].get(b"g/s", session_call(token))
    assert result.served_by == "fra-1" and result.found is not None
    assert decode_token(result.session_token) == {"fra-1": ack.version.timestamp}
    plain = await nodes["iad-1"].get(b"g/s", CLIENT)
    assert plain.found is None and plain.session_token == b""  # LOCAL: not replicated here


async def test_session_batch_get_and_scan_forwarded_too(nodes: InProcessNodes) -> None:
    ack = await nodes["fra-1"].put(b"g/b", b"v", 0, CLIENT)
    token = token_of_versions([(ack.version.timestamp, "fra-1")])
    many = await nodes["nrt-1"].get_many([b"g/b"], session_call(token))
    assert many.found[0] is not None and many.served_by == "fra-1"
    page = await nodes["nrt-1"].scan(session_call(token), prefix=b"g/b")
    assert [i.key for i in page.items] == [b"g/b"] and page.served_by == "fra-1"


async def test_forwarded_session_read_not_covered_is_unavailable(nodes: InProcessNodes) -> None:
    ack = await nodes["fra-1"].put(b"g/u", b"v", 0, CLIENT)
    token = token_of_versions([(ack.version.timestamp, "fra-1")])
    with pytest.raises(Unavailable, match=r"fra-1 \(this node is .* behind the token\)"):
        await nodes["iad-1"].get(b"g/u", session_call(token).forwarded("nrt-1"))


async def test_local_read_with_a_token_is_not_waited_for_but_merged(
    nodes: InProcessNodes,
) -> None:
    ack = await nodes["iad-1"].put(b"g/m", b"v", 0, CLIENT)
    token = token_of_versions([(5, "fra-1")])
    result = await nodes["iad-1"].get(b"g/m", session_call(token, level=0))
    assert result.served_by == "iad-1"
    assert decode_token(result.session_token) == {"fra-1": 5, "iad-1": ack.version.timestamp}


async def test_unknown_origins_in_a_token_are_dropped(nodes: InProcessNodes) -> None:
    token = token_of_versions([(5, "gone-1")])
    result = await nodes["iad-1"].get(b"g/x", session_call(token))
    assert result.served_by == "iad-1" and result.session_token == b""


async def test_strong_read_without_a_home_refused(nodes: InProcessNodes) -> None:
    with pytest.raises(FailedPrecondition, match="home"):
        await nodes["iad-1"].get(b"g/x", session_call(b"", level=STRONG))

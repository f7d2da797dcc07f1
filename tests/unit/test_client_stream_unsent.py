"""Operations the streamed SDK calls "never sent" never reached the node (real grpc).

A scripted KV.Stream server on loopback ends its first stream after a few
requests (an abort, or the handler returning); the client writes many puts
at once, small and large. Whatever failed as StreamNotSent must not have been
received, and the AsyncClient, which sends those again on a new stream, must
apply no put twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from edgekv import AsyncClient, errors
from edgekv.client._stream import AsyncOpStream, StreamNotSent
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

BIG = 64 << 20


class EndsFirstStream(kv_pb2_grpc.KVServicer):
    """Answers puts; its first stream ends after ``after`` requests (``how``: abort/return)."""

    def __init__(self, after: int, how: str) -> None:
        self.after, self.how = after, how
        self.streams = 0
        self.received: list[bytes] = []  # the key of every put the node got

    async def Stream(
        self, requests: AsyncIterator[kv_pb2.StreamRequest], context: Any
    ) -> AsyncIterator[kv_pb2.StreamResponse]:
        self.streams += 1
        first, count = self.streams == 1, 0
        async for request in requests:
            self.received.append(request.put.key)
            count += 1
            if first and count >= self.after:
                if self.how == "abort":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the node ended the stream")
                return
            version = common_pb2.Version(timestamp=request.id, origin="n1")
            yield kv_pb2.StreamResponse(id=request.id, put=kv_pb2.PutResponse(version=version))


async def serve(servicer: EndsFirstStream) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", BIG)])
    kv_pb2_grpc.add_KVServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


CASES = [(how, size, after) for how in ("abort", "return") for size in (10, 2_000_000)
         for after in (1, 3)]  # fmt: skip


@pytest.mark.parametrize(("how", "size", "after"), CASES)
async def test_what_failed_as_not_sent_never_reached_the_node(
    how: str, size: int, after: int
) -> None:
    node = EndsFirstStream(after, how)
    server, address = await serve(node)
    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", BIG)])
    stream = AsyncOpStream(kv_pb2_grpc.KVStub(channel), None)
    try:
        put = stream.method("Put")
        requests = [kv_pb2.PutRequest(key=b"k%02d" % i, value=b"x" * size) for i in range(20)]
        results = await asyncio.gather(*(put(r, timeout=10) for r in requests),
                                       return_exceptions=True)  # fmt: skip
        not_sent = {r.key for r, out in zip(requests, results, strict=True)
                    if isinstance(out, StreamNotSent)}  # fmt: skip
        if size > 1_000_000:  # 40 MB cannot all go out before the end (flow control)
            assert not_sent, "every put went out before the stream ended: nothing was tested"
        assert not_sent.isdisjoint(node.received)
        assert all(isinstance(out, (grpc.RpcError, kv_pb2.PutResponse)) for out in results)
    finally:
        await stream.close()
        await channel.close()
        await server.stop(0)


@pytest.mark.parametrize("how", ["abort", "return"])
async def test_the_client_sends_what_was_not_sent_again_and_applies_nothing_twice(how: str) -> None:
    node = EndsFirstStream(2, how)
    server, address = await serve(node)
    try:
        async with AsyncClient(address, discover=False, transport="stream") as client:
            keys = [f"k{i:02d}" for i in range(20)]
            value = b"v" * 500_000  # some wait behind the first writes when the stream ends
            results = await asyncio.gather(*(client.put(k, value) for k in keys),
                                           return_exceptions=True)  # fmt: skip
        received = Counter(node.received)
        assert max(received.values()) == 1  # no put reached the node twice
        succeeded = [k for k, out in zip(keys, results, strict=True)
                     if not isinstance(out, BaseException)]  # fmt: skip
        assert all(received[key.encode()] == 1 for key in succeeded)
        # Sent (or being written) when the stream ended: unknown outcome, not sent again.
        failed = [out for out in results if isinstance(out, BaseException)]
        assert all(isinstance(out, errors.Unavailable) for out in failed), failed
        # What had not gone out went on a second stream (how much is a matter of timing).
        assert node.streams <= 2
    finally:
        await server.stop(0)

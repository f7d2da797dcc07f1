"""A node that stops ends its open Watch and KV.Stream calls with UNAVAILABLE, at once.

Before, an idle watcher or a streamed SDK client held every SIGTERM for the whole
grace period (10 s) and was then cut without a status it could act on. Now the
node answers what a stream started, ends it with UNAVAILABLE (clients go to
another PoP: the SDK resumes a Watch from its token there) and exits.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import grpc
import pytest

from edgekv.local.launcher import DEFAULT_STOP_GRACE_S, NodeProcess
from edgekv.v1 import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

# The node's own drain grace (server/node.py DEFAULT_GRACE_S) is 10 s; a stop that
# waited for the open streams took it whole.
WAITED_FOR_GRACE_S = 8.0


def _drain_into(answers: queue.SimpleQueue[Any], stream: Any) -> None:
    try:
        for item in stream:
            answers.put(item)
    except grpc.RpcError as exc:
        answers.put(exc)


def test_sigterm_ends_open_watch_and_stream_with_unavailable(node: NodeProcess) -> None:
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        watch = stub.Watch(kv_pb2.WatchRequest(prefix=b"w/", initial_progress=True), timeout=60)
        requests: queue.SimpleQueue[kv_pb2.StreamRequest | None] = queue.SimpleQueue()
        stream = stub.Stream(iter(requests.get, None), timeout=60)
        watched: queue.SimpleQueue[Any] = queue.SimpleQueue()
        answered: queue.SimpleQueue[Any] = queue.SimpleQueue()
        readers = [
            threading.Thread(target=_drain_into, args=(watched, watch), daemon=True),
            threading.Thread(target=_drain_into, args=(answered, stream), daemon=True),
        ]
        for reader in readers:
            reader.start()
        assert watched.get(timeout=30).progress  # the watch is open and idle
        requests.put(kv_pb2.StreamRequest(id=1, get=kv_pb2.GetRequest(key=b"w/none")))
        assert answered.get(timeout=30).id == 1  # the stream is open and idle

        started = time.monotonic()
        assert node.stop(DEFAULT_STOP_GRACE_S) == 0
        took = time.monotonic() - started
        for ended in (watched.get(timeout=30), answered.get(timeout=30)):
            assert isinstance(ended, grpc.RpcError)
            assert ended.code() == grpc.StatusCode.UNAVAILABLE, ended
            assert "node-1 is shutting down" in (ended.details() or "")
        requests.put(None)
        for reader in readers:
            reader.join(10)
    assert took < WAITED_FOR_GRACE_S, f"the stop waited {took:.1f} s for the open streams"

# Generated from edgekv/client/aio.py by scripts/unasync.py: edit that file, not this one.
"""edgekv.Client: the synchronous SDK, on gRPC's synchronous stack (no event loop).

Generated from edgekv/client/aio.py by scripts/unasync.py, so both clients share
every line of logic. Edit aio.py, then run ``make unasync``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from edgekv.client import _codec as codec
from edgekv.client._base import DEFAULT_TIMEOUT_S
from edgekv.client._session import with_awaits
from edgekv.client._types import (
    Delete,
    Entry,
    Member,
    NodeStatus,
    Put,
    Version,
    WriteResult,
)
from edgekv.client.discovery import NodeRoute, Topology
from edgekv.client.embedded import NETWORK
from edgekv.client.retry import RetryPolicy
from edgekv.client.sync_reads import Reads
from edgekv.v1 import cluster_pb2, kv_pb2

# Indirection so tests can count and skip backoff waits without patching the real sleep.
_sleep: Callable[[float], None] = time.sleep


class Client(Reads):
    """A synchronous edgekv client.

    ``endpoints`` is one "host:port" or several seeds. With ``discover`` (the
    default) the client reads the topology from Cluster.Members, measures RTT
    to every node, and then sends each call to the nearest node allowed to
    hold its key, failing over to the next one when a node is down. With
    ``discover=False`` the client talks to the endpoints in the order given
    and connects lazily.

    Contract of every method:

    * Keys and values are bytes; ``str`` is accepted and encoded as UTF-8.
    * ``timeout_s`` (default: the client's ``timeout_s``) is the deadline of
      each attempt; a call that runs out raises ``DeadlineExceeded``.
    * Idempotent calls (get, get_many, each scan page, status, members) are
      retried with backoff on UNAVAILABLE according to ``retry``
      (``RetryPolicy``: 3 attempts, 50 ms doubling, jitter). Writes (put,
      delete, write) are never retried on the same node; with discovery, a
      write whose node is UNAVAILABLE goes to the next allowed node.
    * Failures raise ``edgekv.EdgeKVError`` subclasses mapped from the gRPC
      status: ``InvalidArgument`` (also a ``ValueError``) for bad keys, values
      and sizes, ``Unavailable``, ``DeadlineExceeded``, ``ResourceExhausted``,
      ``Unauthenticated``, ``PermissionDenied``, ...

    ``endpoint_overrides`` (node id -> host:port) dials discovered nodes at
    other addresses than they advertise (NAT, proxies, port forwards);
    ``token`` is sent as a bearer token; ``tls_ca_file`` turns on TLS.

    ``transport``: ``"stream"`` multiplexes get, put, delete, get_many and
    write over one ``KV.Stream`` per node, ``"unary"`` sends one call each;
    None picks the faster for this kind of client (README, "The streamed
    transport"). ``consistency``: ``"local"`` (default), ``"session"`` or
    ``"strong"``, the read level of get, get_many and scan (per call:
    ``consistency=``); the client carries and merges a session token
    (``session_token``, ``observe_token()``) across calls, tasks, threads and
    PoPs. Writes take ``await_replicas``/``await_regions``/``await_timeout_ms``
    and return receipts. ``embedded`` (or ``$EDGEKV_EMBEDDED_DIR``): a
    co-located node's data_dir, read in-process for LOCAL reads; if unusable,
    a warning is logged and ``embedded_error`` says why (README sections on
    consistency levels and embedded replica reads).

    Discovery runs in the constructor, which raises ``Unavailable`` if no
    seed answers. ``scan`` and ``watch`` return iterators. Thread-safe: one
    client (and its channels) may be shared by threads. Use it as a context
    manager, or call ``close()``.
    """

    _grpc = grpc

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        discover: bool = True,
        rtt_probes: int = 3,
        channel_options: Sequence[tuple[str, Any]] = (),
        endpoint_overrides: Mapping[str, str] | None = None,
        token: str | None = None,
        tls_ca_file: str | None = None,
        transport: str | None = None,
        consistency: str | None = None,
        session_token: bytes = b"",
        embedded: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            endpoints, timeout_s=timeout_s, retry=retry, rtt_probes=rtt_probes,
            channel_options=channel_options, endpoint_overrides=endpoint_overrides, token=token,
            tls_ca_file=tls_ca_file, transport=transport, consistency=consistency,
            session_token=session_token, embedded=embedded,
        )  # fmt: skip
        if discover:
            try:
                self.refresh_topology()
            except BaseException:
                self.close()
                raise

    # -- plumbing --------------------------------------------------------------

    def refresh_topology(self) -> None:
        """Re-read Cluster.Members from the nearest answering node and re-measure RTTs.

        Keeps the current topology when no node answers (and raises the error
        when there is just one node, so a bad seed fails loudly).
        """
        last: grpc.RpcError | None = None
        for node in self.topology.nearest():
            try:
                resp = self._cluster(node).Members(
                    cluster_pb2.MembersRequest(), timeout=self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                last = exc
                continue
            topology = Topology.from_members(resp, self._overrides, http=self._over_http)
            for member in topology.nodes:
                self._probe(topology, member)
            if self._embedded is not None:  # co-located: nearest, so writes land where we read
                topology.prefer(self._embedded.node_id)
            topology.reorder()
            self.topology = topology
            return
        if last is not None and len(self.topology.nodes) == 1:
            raise self._error(last, self.topology.nodes[0]) from None

    def _probe(self, topology: Topology, node: NodeRoute) -> None:
        stub = self._cluster(node)
        fastest_ms = math.inf
        for _ in range(self._rtt_probes):
            start = time.perf_counter()
            try:
                stub.Status(
                    cluster_pb2.StatusRequest(),
                    timeout=min(self.timeout_s, 2.0),
                    metadata=self._metadata,
                )
            except grpc.RpcError:
                node.failures += 1
                return
            fastest_ms = min(fastest_ms, (time.perf_counter() - start) * 1000.0)
        if fastest_ms < math.inf:  # the fastest: the first pays for the connection, any
            topology.record_rtt(node, fastest_ms)  # may meet a busy moment of this host

    def _call(
        self,
        key: bytes | None,
        method: str,
        request: Any,
        idempotent: bool,
        timeout_s: float | None,
        stubs: Callable[[NodeRoute], Any] | None = None,
    ) -> Any:
        """Send ``request`` to ``method`` on the nodes for ``key``, nearest first.

        Retries idempotent calls on UNAVAILABLE (the policy), moves to the next
        node when one stays unavailable, and raises the mapped EdgeKVError.
        """
        timeout = self.timeout_s if timeout_s is None else self._timeout(timeout_s)
        topology = self.topology
        nodes = topology.route(key, not idempotent) if key is not None else topology.nearest()
        metadata = self._metadata
        last: grpc.RpcError | None = None
        last_node: NodeRoute | None = None
        for node in nodes:
            attempt = 0
            while True:
                attempt += 1
                # Per attempt: a node that refused its stream is called unary on the next.
                rpc = getattr(stubs(node), method) if stubs else self._kv_method(node, method)
                try:
                    resp = rpc(request, timeout=timeout, metadata=metadata)
                except grpc.RpcError as exc:
                    delay = self._after_failure(exc, node, attempt, idempotent)
                    if delay is None:
                        last, last_node = exc, node
                        break
                    _sleep(delay)
                    continue
                if node.failures:
                    topology.mark_ok(node)
                return resp
        raise self._exhausted(last, last_node, len(nodes))

    # -- KV --------------------------------------------------------------------

    def get(
        self,
        key: bytes | str,
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> Entry | None:
        """The live value of ``key`` as an Entry, or None if absent, deleted or expired."""
        k = key if type(key) is bytes else codec.to_bytes(key)
        level = self._level(consistency)
        if level:
            req = kv_pb2.GetRequest(key=k)
            self._session.stamp(req, level)
            resp = self._call(k, "Get", req, True, timeout_s)
            self._session.observe(resp.session_token)
            return codec.entry_from_get(k, resp)
        if self._embedded is not None:  # LOCAL reads only: in-process from the node's files
            found = self._embedded.get(k)
            if found is not NETWORK:
                return found
        resp = self._call(k, "Get", kv_pb2.GetRequest(key=k), True, timeout_s)
        return codec.entry_from_get(k, resp)

    def get_many(
        self,
        keys: Iterable[bytes | str],
        *,
        consistency: str | None = None,
        timeout_s: float | None = None,
    ) -> list[Entry | None]:
        """``get`` of many keys in one call: one Entry or None per key, in the order of ``keys``.

        At most the node's ``max_batch_ops`` keys (1000 by default); duplicates
        are answered once per occurrence. An empty ``keys`` returns [] without a call.
        """
        req = codec.get_many_request(keys)
        if not req.keys:
            return []
        level = self._level(consistency)
        if level:
            self._session.stamp(req, level)
        elif self._embedded is not None:  # LOCAL reads only
            found = self._embedded.get_many(list(req.keys))
            if found is not NETWORK:
                return found
        resp = self._call(req.keys[0], "BatchGet", req, True, timeout_s)
        if level:
            self._session.observe(resp.session_token)
        return codec.entries_from_batch(resp)

    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        ttl_ms: int = 0,
        if_absent: bool = False,
        if_version: Version | None = None,
        await_replicas: int | None = None,
        await_regions: Sequence[str] = (),
        await_timeout_ms: int | None = None,
        timeout_s: float | None = None,
    ) -> WriteResult:
        """Store ``value`` (expiring ``ttl_ms`` after the write if > 0); returns its version.

        Durable on the serving node (a homed key's home) when it returns;
        replicated asynchronously unless ``await_*`` ask to wait. ``if_absent``
        or ``if_version`` (compare-and-set) make it conditional at the key's
        home: ``ConditionFailed`` (with ``current_version``) when it does not
        hold; keys without a home refuse conditions (FailedPrecondition).
        """
        k = key if type(key) is bytes else codec.to_bytes(key)
        req = codec.put_request(k, value, ttl_ms, codec.condition(if_absent, if_version))
        with_awaits(req, await_replicas, await_regions, await_timeout_ms)
        return self._session.write_result(self._call(k, "Put", req, False, timeout_s))

    def delete(
        self,
        key: bytes | str,
        *,
        if_version: Version | None = None,
        await_replicas: int | None = None,
        await_regions: Sequence[str] = (),
        await_timeout_ms: int | None = None,
        timeout_s: float | None = None,
    ) -> WriteResult:
        """Delete ``key`` (a tombstone that replicates); deleting a missing key succeeds.

        With ``if_version`` only if its live value has that version (see ``put``).
        """
        k = codec.to_bytes(key)
        req = kv_pb2.DeleteRequest(key=k, condition=codec.condition(False, if_version))
        with_awaits(req, await_replicas, await_regions, await_timeout_ms)
        return self._session.write_result(self._call(k, "Delete", req, False, timeout_s))

    def write(
        self,
        ops: Iterable[Put | Delete],
        *,
        await_replicas: int | None = None,
        await_regions: Sequence[str] = (),
        await_timeout_ms: int | None = None,
        timeout_s: float | None = None,
    ) -> WriteResult:
        """Apply ``Put``/``Delete`` ops atomically under one version; each key at most once.

        All keys of one batch must share one placement (they are applied on one node).
        """
        req = with_awaits(codec.write_request(ops), await_replicas, await_regions, await_timeout_ms)
        resp = self._call(codec.first_key(req), "Write", req, False, timeout_s)
        return self._session.write_result(resp)

    # -- cluster ---------------------------------------------------------------

    def status(self, *, timeout_s: float | None = None) -> NodeStatus:
        """Status of the nearest node (retried like a read)."""
        resp = self._cluster_call("Status", cluster_pb2.StatusRequest(), timeout_s)
        return codec.node_status(resp)

    def members(self, *, timeout_s: float | None = None) -> list[Member]:
        """Every node as the nearest node sees it (reachability, RTT, lag)."""
        resp = self._cluster_call("Members", cluster_pb2.MembersRequest(), timeout_s)
        return codec.members(resp)

    def _cluster_call(
        self, method: str, request: Any, timeout_s: float | None, idempotent: bool = True
    ) -> Any:
        """A Cluster-service call on the nearest node (raw response message)."""
        return self._call(None, method, request, idempotent, timeout_s, self._cluster)

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close every channel; in-flight calls are cancelled. Idempotent."""
        for channel in self._forget_channels():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

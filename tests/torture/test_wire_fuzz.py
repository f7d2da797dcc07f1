"""Wire fuzzer: generated and mutated protobuf messages and metadata against a live node.

Two node processes (a-1 in r1, b-1 in r2; ``p1/`` pinned to r1) with token auth
and a cluster peer secret. Hypothesis (derandomized: the same examples in every
run) sends b-1 messages of every client and peer method, built from the protos'
descriptors, serialized, mutated or junk, with random tokens, forwarded-by and
peer credentials, random headers and deadlines from 1 ms. Every call must end
with a status within its deadline (no hang) and never with UNKNOWN (a handler
that raised something it did not mean to). Afterwards the nodes still serve,
their residency audits are clean, and nothing is stored under the prefixes
only unauthenticated or out-of-scope callers wrote to.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.server.auth import hash_token
from edgekv.server.peer_auth import PEER_AUTH_METADATA, PEER_ID_METADATA, credential
from edgekv.v1 import cluster_pb2, kv_pb2, replication_pb2

from .wire import extra_headers, keys_under, messages, payloads, records

pytestmark = pytest.mark.integration

TOKENS = {"ops": "fuzz-ops-token", "app": "fuzz-app-token"}
SECRET = b"0123456789abcdef0123456789abcdef-fuzz-peer-secret"
CLUSTER = "fuzz"
SENTINEL = b"sentinel/k"
# Keys only callers without the right credentials use: nothing may ever be stored there.
UNAUTH, NOSCOPE = b"unauth/", b"noscope/"
EXAMPLES = 150
SLACK_S = 5.0  # a call may end this long after its deadline (a loaded machine), not longer

CLIENT_METHODS: dict[str, tuple[type[Any], bool]] = {
    "/edgekv.v1.KV/Get": (kv_pb2.GetRequest, False),
    "/edgekv.v1.KV/BatchGet": (kv_pb2.BatchGetRequest, False),
    "/edgekv.v1.KV/Put": (kv_pb2.PutRequest, False),
    "/edgekv.v1.KV/Delete": (kv_pb2.DeleteRequest, False),
    "/edgekv.v1.KV/Write": (kv_pb2.WriteRequest, False),
    "/edgekv.v1.KV/Scan": (kv_pb2.ScanRequest, False),
    "/edgekv.v1.KV/Watch": (kv_pb2.WatchRequest, True),
    "/edgekv.v1.Cluster/Status": (cluster_pb2.StatusRequest, False),
    "/edgekv.v1.Cluster/Members": (cluster_pb2.MembersRequest, False),
    "/edgekv.v1.Cluster/Audit": (cluster_pb2.AuditRequest, False),
    "/grpc.health.v1.Health/Check": (health_pb2.HealthCheckRequest, False),
    "/grpc.health.v1.Health/Watch": (health_pb2.HealthCheckRequest, True),
}  # Backup is left out: it writes a checkpoint wherever the request says.
PEER_METHODS: dict[str, type[Any]] = {
    "/edgekv.v1.Replication/Replicate": replication_pb2.ReplicateRequest,
    "/edgekv.v1.Replication/Heartbeat": replication_pb2.HeartbeatRequest,
    "/edgekv.v1.Replication/GetDigests": replication_pb2.DigestRequest,
    "/edgekv.v1.Replication/ListBuckets": replication_pb2.ListBucketsRequest,
    "/edgekv.v1.Replication/FetchRecords": replication_pb2.FetchRecordsRequest,
    "/edgekv.v1.Replication/PushRecords": replication_pb2.RecordBatch,
    "/edgekv.v1.Replication/HandOff": replication_pb2.RecordBatch,
}
# Mostly long enough to reach the handler; sometimes over before or during it.
DEADLINES = st.one_of(st.just(2.0), st.sampled_from([2.0, 0.5, 0.05, 0.001]))


@dataclass
class Fuzz:
    cluster: LocalCluster
    client: grpc.Channel
    peer: grpc.Channel
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    samples: dict[str, str] = field(default_factory=dict)  # "Method CODE" -> first details

    def call(self, channel: grpc.Channel, method: str, stream: str, payload: Any,
             metadata: list[tuple[str, str | bytes]], deadline_s: float) -> None:  # fmt: skip
        """One call; a problem if it did not end with a status in time, or ended UNKNOWN.

        Problems are collected, not raised: whether a call with a 1 ms deadline
        reaches a handler depends on timing, and hypothesis would call that flaky.
        """
        started = time.monotonic()
        code = grpc.StatusCode.OK
        details = ""
        try:
            if stream == "unary":
                channel.unary_unary(method)(payload, timeout=deadline_s, metadata=metadata)
            elif stream == "server":
                for _ in channel.unary_stream(method)(
                    payload, timeout=deadline_s, metadata=metadata
                ):
                    pass
            else:
                for _ in channel.stream_stream(method)(
                    iter(payload), timeout=deadline_s, metadata=metadata
                ):
                    pass
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        elapsed = time.monotonic() - started
        seen = f"{method.rsplit('/', 1)[1]} {code.name}"
        self.codes[seen] += 1
        self.samples.setdefault(seen, details[:150])
        shown = f"{method} {payload!r:.200} {metadata!r:.200} deadline {deadline_s}s"
        if elapsed > deadline_s + SLACK_S:
            self.problems.append(f"took {elapsed:.1f}s: {shown}")
        if code == grpc.StatusCode.UNKNOWN:
            self.problems.append(f"UNKNOWN {details!r}: {shown}")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    directory = tmp_path_factory.mktemp("fuzz")
    secret_file = directory / "peer.secret"
    secret_file.write_bytes(SECRET + b"\n")
    security = {
        "auth": {
            "mode": "tokens",
            "tokens": [
                {"name": "ops", "sha256": hash_token(TOKENS["ops"]).hex(), "scope": "admin"},
                {"name": "app", "sha256": hash_token(TOKENS["app"]).hex(), "scope": "write",
                 "prefixes": ["app/"]},
            ],
        },
        "peer_secret_file": str(secret_file),
    }  # fmt: skip
    path = write_cluster_file(
        directory, regions=(("r1", 50.0, 8.0), ("r2", 38.0, -77.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")), placement=(("p1/", ["r1"]),), cluster=CLUSTER,
        extra={"security": security, "replication": {"heartbeat_interval_s": 0.2}},
    )  # fmt: skip
    with LocalCluster(path, proxies=False, log_level="warning") as cluster:
        cluster.start()
        admin = [("authorization", f"Bearer {TOKENS['ops']}")]
        with grpc.insecure_channel(cluster.endpoint("a-1")) as a1:
            a1.unary_unary("/edgekv.v1.KV/Put")(
                kv_pb2.PutRequest(key=SENTINEL, value=b"here").SerializeToString(),
                timeout=10, metadata=admin,
            )  # fmt: skip
        peer_listen = cluster.config.node("b-1").peer_listen
        with (
            grpc.insecure_channel(cluster.endpoint("b-1")) as client,
            grpc.insecure_channel(peer_listen) as peer,
        ):
            fz = Fuzz(cluster, client, peer)
            wait_until(lambda: _get(fz, "b-1", SENTINEL) == b"here", timeout_s=30,
                       what="the sentinel replicated to b-1")  # fmt: skip
            yield fz


def _get(fz: Fuzz, node: str, key: bytes) -> bytes | None:
    with grpc.insecure_channel(fz.cluster.endpoint(node)) as ch:
        raw = ch.unary_unary("/edgekv.v1.KV/Get")(
            kv_pb2.GetRequest(key=key).SerializeToString(), timeout=10,
            metadata=[("authorization", f"Bearer {TOKENS['ops']}")],
        )  # fmt: skip
    resp = kv_pb2.GetResponse.FromString(raw)
    return resp.value if resp.found else None


def _scan_keys(fz: Fuzz, node: str, prefix: bytes) -> list[bytes]:
    with grpc.insecure_channel(fz.cluster.endpoint(node)) as ch:
        raw = ch.unary_unary("/edgekv.v1.KV/Scan")(
            kv_pb2.ScanRequest(prefix=prefix, limit=100).SerializeToString(), timeout=10,
            metadata=[("authorization", f"Bearer {TOKENS['ops']}")],
        )  # fmt: skip
    return [item.key for item in kv_pb2.ScanResponse.FromString(raw).items]


def assert_still_serving_and_clean(fz: Fuzz) -> None:
    """Both nodes answer, the sentinel reads back, audits are clean, no forbidden key stored."""
    for node in ("a-1", "b-1"):
        assert fz.cluster.nodes[node].alive(), f"{node} died:\n{fz.cluster.nodes[node].log_tail()}"
        assert _get(fz, node, SENTINEL) == b"here"
        with grpc.insecure_channel(fz.cluster.endpoint(node)) as ch:
            raw = ch.unary_unary("/edgekv.v1.Cluster/Audit")(
                b"", timeout=30, metadata=[("authorization", f"Bearer {TOKENS['ops']}")]
            )
        audit = cluster_pb2.AuditResponse.FromString(raw)
        assert audit.violations == 0, f"{node}: {list(audit.samples)[:5]}"
        for prefix in (UNAUTH, NOSCOPE):
            assert _scan_keys(fz, node, prefix) == [], f"{node} stored keys under {prefix!r}"


# -- client port ----------------------------------------------------------------

# (credential kind, authorization metadata, key prefixes it may use)
CREDENTIALS = st.sampled_from(
    [
        ("admin", [("authorization", f"Bearer {TOKENS['ops']}")], (b"fz/", b"p1/", b"app/")),
        ("scoped", [("authorization", f"Bearer {TOKENS['app']}")], (b"app/", NOSCOPE)),
        ("none", [], (UNAUTH,)),
        ("garbage", [("authorization", "Bearer not-a-token")], (UNAUTH,)),
        ("malformed", [("authorization", "Basic Zm9vOmJhcg==")], (UNAUTH,)),
    ]
)
FORWARDED = st.sampled_from(
    [[], *([("edgekv-forwarded-by", node)] for node in ("a-1", "zz-9", ""))]
)


@st.composite
def client_calls(draw: Any) -> tuple[str, str, bytes, list[tuple[str, str | bytes]], float]:
    method = draw(st.sampled_from(sorted(CLIENT_METHODS)))
    cls, server_stream = CLIENT_METHODS[method]
    _, auth, prefixes = draw(CREDENTIALS)
    payload = draw(payloads(messages(cls, keys_under(prefixes), records())))
    metadata = [*auth, *draw(FORWARDED), *draw(extra_headers())]
    deadline = min(draw(DEADLINES), 0.3) if server_stream else draw(DEADLINES)
    return method, "server" if server_stream else "unary", payload, metadata, deadline


def test_client_port_survives_fuzzing(fuzz: Fuzz) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(call=client_calls())
    def one(call: tuple[str, str, bytes, list[tuple[str, str | bytes]], float]) -> None:
        method, stream, payload, metadata, deadline = call
        fuzz.call(fuzz.client, method, stream, payload, metadata, deadline)

    one()
    print(*(f"{k} x{n}: {fuzz.samples[k]}" for k, n in sorted(fuzz.codes.items())), sep="\n")
    assert not fuzz.problems, "\n".join(fuzz.problems[:20])
    assert_still_serving_and_clean(fuzz)


# -- peer port --------------------------------------------------------------------


def _peer_auth(kind: str) -> list[tuple[str, str | bytes]]:
    now_ms = int(time.time() * 1000)
    if kind == "peer":
        return [
            (PEER_ID_METADATA, "a-1"),
            (PEER_AUTH_METADATA, credential(SECRET, CLUSTER, "a-1", now_ms)),
        ]
    if kind == "unknown-node":
        return [
            (PEER_ID_METADATA, "zz-9"),
            (PEER_AUTH_METADATA, credential(SECRET, CLUSTER, "zz-9", now_ms)),
        ]
    if kind == "stale":
        old = now_ms - 3_600_000
        return [
            (PEER_ID_METADATA, "a-1"),
            (PEER_AUTH_METADATA, credential(SECRET, CLUSTER, "a-1", old)),
        ]
    if kind == "garbage":
        return [(PEER_ID_METADATA, "a-1"), (PEER_AUTH_METADATA, "123:abcdef")]
    return []


@st.composite
def peer_calls(draw: Any) -> tuple[str, str, Any, list[tuple[str, str | bytes]], float]:
    method = draw(st.sampled_from(sorted(PEER_METHODS)))
    cls = PEER_METHODS[method]
    kind = draw(st.sampled_from(["peer", "peer", "unknown-node", "stale", "garbage", "none"]))
    prefixes = (b"fz/", b"p1/", b"sentinel/") if kind == "peer" else (UNAUTH,)
    hello = replication_pb2.PeerHello(node_id="a-1", cluster=CLUSTER) if kind == "peer" else None
    msgs = messages(cls, keys_under(prefixes), records(), hello=hello)
    metadata = [*_peer_auth(kind), *draw(extra_headers())]
    if method.endswith("/Replicate"):
        stream = draw(st.lists(payloads(msgs), min_size=0, max_size=3))
        return method, "bidi", stream, metadata, draw(DEADLINES.map(lambda d: min(d, 0.5)))
    return method, "unary", draw(payloads(msgs)), metadata, draw(DEADLINES)


def test_peer_port_survives_fuzzing(fuzz: Fuzz) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(call=peer_calls())
    def one(call: tuple[str, str, Any, list[tuple[str, str | bytes]], float]) -> None:
        method, stream, payload, metadata, deadline = call
        fuzz.call(fuzz.peer, method, stream, payload, metadata, deadline)

    one()
    print(*(f"{k} x{n}: {fuzz.samples[k]}" for k, n in sorted(fuzz.codes.items())), sep="\n")
    assert not fuzz.problems, "\n".join(fuzz.problems[:20])
    assert_still_serving_and_clean(fuzz)

"""The HTTP door read as an attacker would: malformed and hostile requests on real nodes.

One two-region cluster for the module (fra-1 in eu-west holds "eu/" keys, iad-1
in us-east forwards them) with bearer tokens and http_listen on every node.
Each test sends what a hostile or broken client could send and checks the
door answers with a 4xx naming the problem (never a 500, never an "Exception
in ASGI application" in the node's log) and stays up.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.server.auth import hash_token

pytestmark = pytest.mark.integration

WRITER = "writer-token"
UNHANDLED = "Exception in ASGI application"


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    security = {
        "auth": {
            "mode": "tokens",
            "tokens": [{"name": "writer", "sha256": hash_token(WRITER).hex(), "scope": "write"}],
        },
        "insecure_peer_plane": True,
    }
    path = write_cluster_file(
        tmp_path_factory.mktemp("http-abuse"),
        regions=(("eu-west", 50.1, 8.7), ("us-east", 38.9, -77.4)),
        nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
        placement=(("eu/", ["eu-west"]),),
        extra={"security": security},
        http=True,
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def base(door: LocalCluster, node: str = "fra-1") -> str:
    return f"http://{door.nodes[node].http_endpoint}"


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {WRITER}"}


def unhandled(door: LocalCluster, node: str) -> int:
    """How many requests the node's HTTP door failed to answer itself (uvicorn's 500)."""
    return door.nodes[node].log_path.read_text(errors="replace").count(UNHANDLED)


def assert_up(door: LocalCluster, node: str) -> None:
    answer = httpx.get(f"{base(door, node)}/v1/openapi.json", timeout=10)
    assert answer.status_code == 200


def test_connect_timeout_header_out_of_protocol_is_refused_as_connectrpc_does(
    door: LocalCluster,
) -> None:
    """connect-timeout-ms is 1 to 10 digits (Connect protocol); anything else is a 400,
    on the unary hot path as through connectrpc, never a 500 or a call without deadline."""
    before = unhandled(door, "fra-1")
    for timeout in ("1" * 5000, "9" * 400, "99999999999", "-1", "abc", "1.5"):
        for content_type in ("application/json", "application/json; charset=utf-8"):
            answer = httpx.post(
                f"{base(door)}/edgekv.v1.KV/Get",
                content=b'{"key": "YQ=="}',
                headers={**auth(), "content-type": content_type, "connect-timeout-ms": timeout},
                timeout=10,
            )
            assert answer.status_code == 400, (timeout[:20], content_type, answer.text)
            body = answer.json()
            assert body["code"] == "invalid_argument", body
            assert "timeout" in body["message"].lower(), body
    assert unhandled(door, "fra-1") == before
    assert_up(door, "fra-1")


def test_forwarded_rest_calls_with_out_of_range_numbers_are_refused_with_a_400(
    door: LocalCluster,
) -> None:
    """A PUT with a huge ttl or a list with a huge limit, on a node that forwards the key
    (iad-1 for "eu/"), is refused with the request layer's message before it is forwarded."""
    iad = base(door, "iad-1")
    before = unhandled(door, "iad-1")
    cases = [
        ("PUT", "/v1/kv/eu/ttl", {"ttl": "9" * 30}, {}, "ttl_ms is"),
        ("PUT", "/v1/kv/eu/ttl", {}, {"edgekv-ttl-ms": str(2**64)}, "ttl_ms is"),
        ("GET", "/v1/kv", {"prefix": "eu/", "limit": "9" * 30}, {}, "max_scan_limit"),
    ]
    for method, path, params, headers, message in cases:
        answer = httpx.request(
            method, iad + path, params=params, content=b"v", headers={**auth(), **headers}
        )
        assert answer.status_code == 400, (path, params, headers, answer.text)
        assert message in answer.json()["message"], answer.text
    assert unhandled(door, "iad-1") == before
    assert_up(door, "iad-1")

"""The HTTP door (issue 11) on real node processes, driven by real HTTP clients.

One two-region cluster for the module (fra-1 in eu-west holds "eu/" keys; iad-1
in us-east forwards them), with bearer tokens, a small max_value_bytes, CORS for
one origin, /metrics, and http_listen on every node. Each test works under its
own key prefix. The JavaScript clients (connect-web, gRPC-Web in workerd and a
browser) are exercised by examples/ and their Node tests; here Python speaks the
protocols: Connect unary (proto and JSON), Connect streaming, gRPC-Web framing,
and the REST face, which schemathesis also fuzzes against its OpenAPI document.
"""

from __future__ import annotations

import http.client
import json
import queue
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from doorcluster import token_entry, write_door_cluster

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.v1 import cluster_pb2, kv_pb2

pytestmark = pytest.mark.integration

WRITER, READER = "writer-token", "reader-token"
MAX_VALUE = 64 * 1024
ORIGIN = "https://app.example"
PROTO = {"content-type": "application/proto", "connect-protocol-version": "1"}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_door_cluster(
        tmp_path_factory.mktemp("http-door"),
        tokens=[token_entry("writer", WRITER, "write"), token_entry("reader", READER, "read")],
        extra={
            "limits": {"max_value_bytes": MAX_VALUE},
            "http": {"cors_allow_origins": [ORIGIN]},
        },
        metrics=True,
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def base(door: LocalCluster, node: str = "fra-1") -> str:
    return f"http://{door.nodes[node].http_endpoint}"


def auth(token: str = WRITER) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def rpc(door: LocalCluster, method: str, request: Any, node: str = "fra-1", token: str = WRITER):  # type: ignore[no-untyped-def]
    """A Connect unary call with a binary (application/proto) body."""
    return httpx.post(
        f"{base(door, node)}/edgekv.v1.KV/{method}",
        content=request.SerializeToString(),
        headers={**PROTO, **auth(token)},
    )


def metric(door: LocalCluster, node: str, name: str) -> float:
    samples = scrape_metrics(door.nodes[node].info["metrics_port"]).get(name, [])
    return sum(value for _, value in samples)


def test_connect_unary_proto_and_json_on_one_keep_alive_connection(door: LocalCluster) -> None:
    host, port = door.nodes["fra-1"].http_endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    put = json.dumps({"key": "Y29ubi9h", "value": "b25l", "ttlMs": "60000"})  # conn/a = one
    conn.request("POST", "/edgekv.v1.KV/Put", put, {"content-type": "application/json", **auth()})
    answer = conn.getresponse()
    body = json.loads(answer.read())
    assert answer.status == 200, body
    assert body["servedBy"] == "fra-1" and body["version"]["origin"] == "fra-1"
    assert answer.getheader("edgekv-served-by") == "fra-1"
    first_socket = conn.sock
    conn.request(
        "POST",
        "/edgekv.v1.KV/Get",
        kv_pb2.GetRequest(key=b"conn/a").SerializeToString(),
        {**PROTO, **auth(READER)},
    )
    answer = conn.getresponse()
    got = kv_pb2.GetResponse.FromString(answer.read())
    assert answer.status == 200
    assert conn.sock is first_socket, "HTTP/1.1 keep-alive: the same connection served both"
    assert got.found and got.value == b"one" and got.served_by == "fra-1"
    assert got.expires_at_ms > 0
    timing = answer.getheader("server-timing") or ""
    assert "kv;dur=" in timing and "total;dur=" in timing, timing
    conn.close()

    batch = rpc(door, "BatchGet", kv_pb2.BatchGetRequest(keys=[b"conn/a", b"conn/none"]))
    results = kv_pb2.BatchGetResponse.FromString(batch.content).results
    assert [r.found for r in results] == [True, False]
    scan = kv_pb2.ScanResponse.FromString(
        rpc(door, "Scan", kv_pb2.ScanRequest(prefix=b"conn/")).content
    )
    assert [i.key for i in scan.items] == [b"conn/a"]
    deleted = rpc(door, "Delete", kv_pb2.DeleteRequest(key=b"conn/a"))
    assert deleted.status_code == 200
    assert not kv_pb2.GetResponse.FromString(
        rpc(door, "Get", kv_pb2.GetRequest(key=b"conn/a")).content
    ).found

    status = httpx.post(
        f"{base(door)}/edgekv.v1.Cluster/Status", json={}, headers=auth(READER)
    ).json()
    assert status["nodeId"] == "fra-1" and status["readPath"]
    members = cluster_pb2.MembersResponse.FromString(
        httpx.post(
            f"{base(door)}/edgekv.v1.Cluster/Members", content=b"", headers={**PROTO, **auth()}
        ).content
    )
    assert {m.node_id for m in members.members} == {"fra-1", "iad-1"}


def test_connect_unary_answers_alike_on_the_hot_path_and_through_connectrpc(
    door: LocalCluster,
) -> None:
    """Plain bodies take unary.py's path; gzip-compressed ones go through connectrpc."""
    import gzip

    rpc(door, "Put", kv_pb2.PutRequest(key=b"same/a", value=b"v"))
    url = f"{base(door)}/edgekv.v1.KV/Get"
    for request, token in (
        (kv_pb2.GetRequest(key=b"same/a"), WRITER),  # found
        (kv_pb2.GetRequest(key=b""), WRITER),  # invalid_argument
        (kv_pb2.GetRequest(key=b"same/a"), "bad"),  # unauthenticated
    ):
        body = request.SerializeToString()
        plain = httpx.post(url, content=body, headers={**PROTO, **auth(token)})
        zipped = httpx.post(
            url,
            content=gzip.compress(body),
            headers={**PROTO, **auth(token), "content-encoding": "gzip"},
        )
        assert plain.status_code == zipped.status_code
        assert plain.headers.get("edgekv-served-by") == zipped.headers.get("edgekv-served-by")
        if plain.status_code == 200:
            assert kv_pb2.GetResponse.FromString(plain.content) == kv_pb2.GetResponse.FromString(
                zipped.content
            )
        else:
            assert plain.json() == zipped.json()


def test_pinned_key_is_forwarded_and_served_by_names_the_remote(door: LocalCluster) -> None:
    put = rpc(door, "Put", kv_pb2.PutRequest(key=b"eu/pinned", value=b"v"), node="iad-1")
    assert put.status_code == 200, put.text
    assert put.headers["edgekv-served-by"] == "fra-1"
    assert "forward;dur=" in put.headers["server-timing"]
    got = httpx.get(f"{base(door, 'iad-1')}/v1/kv/eu/pinned", headers=auth())
    assert got.status_code == 200 and got.content == b"v"
    assert got.headers["edgekv-served-by"] == "fra-1"


def test_auth_failures_are_refused_with_their_code(door: LocalCluster) -> None:
    url = f"{base(door)}/edgekv.v1.KV/Get"
    request = kv_pb2.GetRequest(key=b"auth/x").SerializeToString()
    missing = httpx.post(url, content=request, headers=PROTO)
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    assert "Bearer" in missing.json()["message"]
    bad = httpx.post(url, content=request, headers={**PROTO, **auth("nope")})
    assert bad.status_code == 401 and "not valid" in bad.json()["message"]
    denied = rpc(door, "Put", kv_pb2.PutRequest(key=b"auth/x", value=b"v"), token=READER)
    assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
    rest = httpx.put(f"{base(door)}/v1/kv/auth/x", content=b"v")
    assert rest.status_code == 401 and rest.json()["code"] == "unauthenticated"
    grpc_web = httpx.post(
        url, content=_frame(request), headers={"content-type": "application/grpc-web+proto"}
    )
    assert grpc_web.status_code == 200
    trailers = _frames(grpc_web.content)[-1]
    assert trailers[0] == 0x80 and b"grpc-status: 16" in trailers[1]  # UNAUTHENTICATED


def test_grpc_web_frames_carry_the_message_and_the_trailers(door: LocalCluster) -> None:
    rpc(door, "Put", kv_pb2.PutRequest(key=b"web/a", value=b"framed"))
    answer = httpx.post(
        f"{base(door)}/edgekv.v1.KV/Get",
        content=_frame(kv_pb2.GetRequest(key=b"web/a").SerializeToString()),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **auth()},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/grpc-web")
    frames = _frames(answer.content)
    assert [flag for flag, _ in frames] == [0x00, 0x80]  # one message, then the trailers
    got = kv_pb2.GetResponse.FromString(frames[0][1])
    assert got.value == b"framed" and got.served_by == "fra-1"
    assert b"grpc-status:0" in frames[1][1].replace(b" ", b"")


def test_values_up_to_the_limit_pass_and_one_byte_more_is_refused(door: LocalCluster) -> None:
    exact = b"x" * MAX_VALUE
    assert rpc(door, "Put", kv_pb2.PutRequest(key=b"big/ok", value=exact)).status_code == 200
    assert httpx.get(f"{base(door)}/v1/kv/big/ok", headers=auth()).content == exact
    over = rpc(door, "Put", kv_pb2.PutRequest(key=b"big/no", value=exact + b"x"))
    assert over.status_code == 400
    message = over.json()["message"]
    assert f"value is {MAX_VALUE + 1} bytes; the limit is {MAX_VALUE} (max_value_bytes)" in message
    rest = httpx.put(f"{base(door)}/v1/kv/big/ok", content=exact, headers=auth())
    assert rest.status_code == 200
    rest_over = httpx.put(f"{base(door)}/v1/kv/big/no", content=exact + b"x", headers=auth())
    assert rest_over.status_code == 400 and "(max_value_bytes)" in rest_over.json()["message"]


def test_declared_oversized_bodies_are_refused_unread(door: LocalCluster) -> None:
    """A client announcing 100 MB gets its answer without sending a byte of it."""
    host, port = door.nodes["fra-1"].http_endpoint.rsplit(":", 1)
    for path, headers, code in (
        ("/v1/kv/huge/x", {}, "invalid_argument"),
        ("/edgekv.v1.KV/Put", PROTO, "resource_exhausted"),
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("PUT" if path.startswith("/v1") else "POST", path)
        for name, value in {**headers, **auth(), "content-length": str(100 * 1024 * 1024)}.items():
            conn.putheader(name, value)
        conn.endheaders()  # and no body
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status in (400, 429), body
        assert body["code"] == code
        assert "104857600 bytes" in body["message"] and "max_" in body["message"]
        conn.close()
    assert httpx.get(f"{base(door)}/v1/kv/huge/x", headers=auth()).status_code == 404


def test_malformed_requests_get_a_4xx_with_a_message_and_the_node_stays_up(
    door: LocalCluster,
) -> None:
    url = f"{base(door)}/edgekv.v1.KV/Get"
    garbage = httpx.post(url, content=b"\xff\xff\xff", headers={**PROTO, **auth()})
    assert garbage.status_code == 400 and garbage.json()["code"] == "invalid_argument"
    assert garbage.json()["message"]
    bad_json = httpx.post(
        url, content=b"{not json", headers={"content-type": "application/json", **auth()}
    )
    assert bad_json.status_code == 400 and bad_json.json()["message"]
    wrong_type = httpx.post(url, content=b"x", headers={"content-type": "text/plain", **auth()})
    assert wrong_type.status_code == 415
    for query in ("limit=abc", "limit=0", "cursor=%%%"):
        listed = httpx.get(f"{base(door)}/v1/kv?{query}", headers=auth())
        assert listed.status_code == 400, (query, listed.text)
        assert listed.json()["code"] == "invalid_argument" and listed.json()["message"]
    ttl = httpx.put(f"{base(door)}/v1/kv/bad/ttl?ttl=-1", content=b"v", headers=auth())
    assert ttl.status_code == 400 and "ttl" in ttl.json()["message"]
    nothing = httpx.get(f"{base(door)}/nowhere")
    assert nothing.status_code == 404 and nothing.json()["code"] == "not_found"
    assert door.nodes["fra-1"].alive()
    assert httpx.get(f"{base(door)}/v1/kv?prefix=bad/", headers=auth()).status_code == 200


def test_rest_face_reads_writes_lists_and_deletes(door: LocalCluster) -> None:
    url = f"{base(door)}/v1/kv"
    for i in range(5):
        put = httpx.put(f"{url}/rest/{i}", content=f"v{i}".encode(), headers=auth())
        assert put.status_code == 200 and put.json()["served_by"] == "fra-1"
    ttl = httpx.put(f"{url}/rest/ttl?ttl=30", content=b"t", headers=auth())
    got = httpx.get(f"{url}/rest/ttl", headers=auth())
    assert got.content == b"t" and int(got.headers["edgekv-expires-at-ms"]) > 0
    assert got.headers["edgekv-version"] == ttl.json()["version"]
    binary = httpx.put(f"{url}/rest/%FF%00", content=b"b", headers=auth())
    assert binary.status_code == 200
    names: list[str] = []
    cursor = ""
    for _ in range(10):
        page = httpx.get(
            url, params={"prefix": "rest/", "limit": 2, "cursor": cursor}, headers=auth()
        )
        body = page.json()
        names += [k["name"] for k in body["keys"]]
        cursor = body["cursor"]
        if body["list_complete"]:
            break
    assert names[:6] == [f"rest/{i}" for i in range(5)] + ["rest/ttl"]
    assert len(names) == 7  # and the binary key, as name_base64
    assert httpx.delete(f"{url}/rest/0", headers=auth()).status_code == 200
    assert httpx.get(f"{url}/rest/0", headers=auth()).status_code == 404
    assert httpx.post(f"{url}/rest/0", headers=auth()).status_code == 400
    document = httpx.get(f"{base(door)}/v1/openapi.json").json()
    assert set(document["paths"]) == {"/v1/kv", "/v1/kv/{key}"}


def test_watch_streams_over_connect_and_ends_when_the_client_goes(door: LocalCluster) -> None:
    events: queue.Queue[Any] = queue.Queue()
    request = _frame(json.dumps({"prefix": "d2F0Y2gv"}).encode())  # watch/

    def watch() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{base(door)}/edgekv.v1.KV/Watch",
                content=request,
                headers={"content-type": "application/connect+json", **auth(READER)},
                timeout=30,
            ) as answer:
                buffer = b""
                for chunk in answer.iter_raw():
                    buffer += chunk
                    frames = _frames(buffer, partial=True)
                    if frames:
                        events.put((answer.headers, json.loads(frames[0][1])))
                        return  # closes the stream: the client goes away
        except Exception as exc:  # surfaces in the test thread
            events.put(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_until(lambda: metric(door, "fra-1", "edgekv_watch_streams") >= 1, what="the watch")
    httpx.put(f"{base(door)}/v1/kv/watch/a", content=b"seen", headers=auth())
    got = events.get(timeout=10)
    assert not isinstance(got, Exception), got
    headers, event = got
    assert headers["edgekv-served-by"] == "fra-1"
    assert event["key"] == "d2F0Y2gvYQ==" and event["value"] == "c2Vlbg=="
    thread.join(10)
    wait_until(
        lambda: (
            metric(door, "fra-1", "edgekv_watch_streams") == 0
            and metric(door, "fra-1", "edgekv_http_inflight") == 0
        ),
        what="the watch to end after the client left",
    )


def test_cors_answers_the_configured_origin_only(door: LocalCluster) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,authorization,connect-protocol-version",
    }
    allowed = httpx.options(
        f"{base(door)}/edgekv.v1.KV/Get", headers={"origin": ORIGIN, **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        f"{base(door)}/edgekv.v1.KV/Get", headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers
    simple = httpx.get(f"{base(door)}/v1/kv/cors/none", headers={"origin": ORIGIN, **auth()})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "edgekv-served-by" in simple.headers["access-control-expose-headers"]


def test_http_requests_are_counted(door: LocalCluster) -> None:
    httpx.get(f"{base(door)}/v1/kv/metrics/none", headers=auth())
    assert rpc(door, "Put", kv_pb2.PutRequest(key=b"metrics/k", value=b"v")).status_code == 200
    samples = scrape_metrics(door.nodes["fra-1"].info["metrics_port"])["edgekv_http_requests_total"]
    routes = {(labels["route"], labels["status"]) for labels, _ in samples}
    assert ("GET /v1/kv/{key}", "404") in routes
    assert ("/edgekv.v1.KV/Put", "200") in routes


def test_schemathesis_finds_no_server_error_in_the_rest_face(door: LocalCluster) -> None:
    """Schema-driven fuzz of the REST face against its own OpenAPI document: no 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{base(door)}/v1/openapi.json")
    failures: list[str] = []
    calls: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        strategy = op.as_strategy()

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **auth()}
            response = case.call(base_url=base(door), timeout=10)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        run()
    assert not failures, failures
    assert len(calls) >= 4 * 20 and 200 in calls, calls  # it did call every operation
    assert door.nodes["fra-1"].alive()


def _frame(message: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(message)) + message


def _frames(data: bytes, partial: bool = False) -> list[tuple[int, bytes]]:
    frames = []
    while len(data) >= 5:
        flags, length = struct.unpack(">BI", data[:5])
        if len(data) < 5 + length:
            break
        frames.append((flags, data[5 : 5 + length]))
        data = data[5 + length :]
    assert partial or not data, "trailing bytes after the last frame"
    return frames


def test_http_door_speaks_tls_when_the_node_has_tls(tmp_path: Path) -> None:
    from edgekv.local.launcher import running_node
    from edgekv.tls import create_ca, issue_cert

    pki = tmp_path / "pki"
    create_ca(pki)
    issue_cert(pki, "node-1", ["127.0.0.1"])
    tls = {
        "ca_file": str(pki / "ca.pem"),
        "cert_file": str(pki / "{node}.pem"),
        "key_file": str(pki / "{node}-key.pem"),
    }
    path = write_cluster_file(
        tmp_path, extra={"security": {"tls": tls, "auth": {"mode": "disabled"}}}, http=True
    )
    with running_node(path, "node-1") as node:
        url = f"https://{node.http_endpoint}/edgekv.v1.KV/Put"
        body = kv_pb2.PutRequest(key=b"tls/a", value=b"v").SerializeToString()
        trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        answer = httpx.post(url, content=body, headers=PROTO, verify=trust)
        assert answer.status_code == 200 and answer.headers["edgekv-served-by"] == "node-1"
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is no answer
            httpx.post(url.replace("https://", "http://"), content=body, headers=PROTO)


def test_rest_face_carries_session_tokens_levels_and_receipts_in_headers(
    door: LocalCluster,
) -> None:
    url = f"{base(door)}/v1/kv"
    put = httpx.put(f"{url}/sess/1", content=b"v", headers=auth())
    token = put.headers["edgekv-session-token"]
    assert put.json()["session_token"] == token
    remote = f"{base(door, 'iad-1')}/v1/kv"
    got = httpx.get(
        f"{remote}/sess/1",
        headers={**auth(), "edgekv-consistency": "session", "edgekv-session-token": token},
    )
    assert got.status_code == 200 and got.content == b"v"
    assert got.headers["edgekv-session-token"]  # the token, merged with the version read
    listed = httpx.get(
        remote,
        params={"prefix": "sess/"},
        headers={**auth(), "edgekv-consistency": "session", "edgekv-session-token": token},
    )
    assert [k["name"] for k in listed.json()["keys"]] == ["sess/1"]
    plain = httpx.get(f"{remote}/sess/1", headers=auth())
    assert "edgekv-session-token" not in plain.headers  # LOCAL without a token: none
    awaited = httpx.put(
        f"{url}/sess/2", content=b"v", headers={**auth(), "edgekv-await-replicas": "1"}
    )
    body = awaited.json()
    assert [r["node_id"] for r in body["receipts"]] == ["iad-1"] and body["not_applied_by"] == []
    bad = httpx.get(f"{url}/sess/1", headers={**auth(), "edgekv-consistency": "eventual"})
    assert bad.status_code == 400 and "edgekv-consistency" in bad.json()["message"]
    too_many = httpx.put(
        f"{url}/sess/3", content=b"v", headers={**auth(), "edgekv-await-replicas": "5"}
    )
    assert too_many.status_code == 400 and "at most 1" in too_many.json()["message"]
    cors = httpx.options(
        f"{url}/sess/1",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "edgekv-session-token, edgekv-consistency",
        },
    )
    assert cors.status_code == 200
    document = httpx.get(f"{base(door)}/v1/openapi.json").json()
    names = {p["name"] for p in document["paths"]["/v1/kv/{key}"]["get"]["parameters"]}
    assert {"edgekv-consistency", "edgekv-session-token"} <= names


def test_connect_door_carries_the_session_token_in_the_messages(door: LocalCluster) -> None:
    put = kv_pb2.PutResponse.FromString(
        rpc(door, "Put", kv_pb2.PutRequest(key=b"sess/c", value=b"v")).content
    )
    assert put.session_token
    request = kv_pb2.GetRequest(key=b"sess/c", consistency=1, session_token=put.session_token)
    got = kv_pb2.GetResponse.FromString(rpc(door, "Get", request, node="iad-1").content)
    assert got.found and got.value == b"v" and got.session_token

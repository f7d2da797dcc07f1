"""Client and AsyncClient calls against fake stubs: arguments, paging, timeouts, lifecycle.

Every test body runs against both clients through the ``sdk`` fixture (edgekv.client._testing).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from edgekv import errors
from edgekv.client import AsyncClient, Client, ClientClosed, EdgeKVError, Entry, Put, Version
from edgekv.client._testing import VARIANTS, Flavor
from edgekv.v1 import common_pb2, kv_pb2

EP = "127.0.0.1:1"
VERSION = common_pb2.Version(timestamp=10, origin="n1")


class FakeKV:
    """A KV stub over a dict: Get, BatchGet, Put and a paging Scan; records every call."""

    def __init__(self, keys: int = 0, page_cap: int = 1000, empty_pages: int = 0) -> None:
        self.data = {b"k/%04d" % i: b"v%d" % i for i in range(keys)}
        self.page_cap = page_cap  # the node may answer fewer items than asked
        self.empty_pages = empty_pages  # pages with no items but a token, first
        self.calls: list[tuple[str, Any, float | None]] = []

    def _record(self, method: str, request: Any, timeout: float | None) -> None:
        snapshot = type(request)()
        snapshot.CopyFrom(request)
        self.calls.append((method, snapshot, timeout))

    def Get(
        self, req: kv_pb2.GetRequest, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        self._record("Get", req, timeout)
        value = self.data.get(req.key)
        return kv_pb2.GetResponse(found=value is not None, value=value or b"", version=VERSION,
                                  served_by="n1")  # fmt: skip

    def BatchGet(self, req: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self._record("BatchGet", req, timeout)
        return kv_pb2.BatchGetResponse(results=[
            kv_pb2.KeyResult(key=k, found=k in self.data, value=self.data.get(k, b""))
            for k in req.keys
        ], served_by="n1")  # fmt: skip

    def Put(self, req: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self._record("Put", req, timeout)
        self.data[req.key] = req.value
        return kv_pb2.PutResponse(version=VERSION, served_by="n1")

    def Scan(
        self, req: kv_pb2.ScanRequest, timeout: float | None = None, metadata: Any = None
    ) -> Any:
        self._record("Scan", req, timeout)
        if self.empty_pages:
            self.empty_pages -= 1
            return kv_pb2.ScanResponse(next_page_token=req.page_token or b"\x00")
        after = req.page_token.lstrip(b"\x00")
        keys = sorted(k for k in self.data if k.startswith(req.prefix) and k > after)
        n = min(req.limit or 100, self.page_cap)
        page = keys[:n]
        token = page[-1] if len(keys) > n else b""
        items = [kv_pb2.KeyValue(key=k, value=b"" if req.keys_only else self.data[k],
                                 version=VERSION) for k in page]  # fmt: skip
        return kv_pb2.ScanResponse(items=items, next_page_token=token, served_by="n1")


@pytest.fixture(params=VARIANTS)
def sdk(request: pytest.FixtureRequest) -> Iterator[Flavor]:
    """The sync client, then the async one (behind a blocking facade), for each test."""
    with Flavor(request.param) as flavor:
        yield flavor


def new_client(sdk: Flavor, kv: FakeKV, **kw: Any) -> Client:
    client = sdk.client(EP, discover=False, **kw)
    client._kv_stubs[EP] = sdk.stub(kv)
    return client


def test_get_encodes_str_keys_and_returns_entry_or_none(sdk: Flavor) -> None:
    kv = FakeKV(keys=3)
    with new_client(sdk, kv) as client:
        assert client.get("k/0001") == Entry(b"k/0001", b"v1", Version(10, "n1"), 0, "n1")
        assert client.get(b"k/0009") is None
    assert [c[1].key for c in kv.calls] == [b"k/0001", b"k/0009"]


def test_get_many_keeps_request_order_and_skips_the_call_when_empty(sdk: Flavor) -> None:
    kv = FakeKV(keys=3)
    with new_client(sdk, kv) as client:
        got = client.get_many(["k/0002", b"nope", "k/0000", "k/0002"])
        assert [e.value if e else None for e in got] == [b"v2", None, b"v0", b"v2"]
        assert client.get_many([]) == []
    assert len(kv.calls) == 1


def test_scan_follows_page_tokens_to_the_end(sdk: Flavor) -> None:
    kv = FakeKV(keys=25)
    with new_client(sdk, kv) as client:
        keys = [e.key for e in client.scan("k/", page_size=4)]
    assert keys == sorted(kv.data)
    assert len(kv.calls) == 7 and all(c[1].limit == 4 for c in kv.calls)


def test_scan_keeps_paging_through_short_and_empty_pages(sdk: Flavor) -> None:
    kv = FakeKV(keys=10, page_cap=3, empty_pages=2)
    with new_client(sdk, kv) as client:
        assert [e.key for e in client.scan("k/", page_size=100)] == sorted(kv.data)
    assert len(kv.calls) == 2 + 4


def test_scan_limit_stops_early_and_asks_only_for_what_is_left(sdk: Flavor) -> None:
    kv = FakeKV(keys=25)
    with new_client(sdk, kv) as client:
        assert len(list(client.scan("k/", page_size=10, limit=13))) == 13
        assert [c[1].limit for c in kv.calls] == [10, 3]
        kv.calls.clear()
        assert list(client.scan("k/", limit=0)) == []
        assert kv.calls == []


def test_scan_checks_arguments_when_called_not_when_iterated(sdk: Flavor) -> None:
    with new_client(sdk, FakeKV()) as client:
        with pytest.raises(errors.InvalidArgument, match="page_size is 0"):
            client.scan("k/", page_size=0)
        with pytest.raises(errors.InvalidArgument, match="page_size is -1"):
            client.scan("k/", page_size=-1)
        with pytest.raises(errors.InvalidArgument, match="limit is -2"):
            client.scan("k/", limit=-2)
        with pytest.raises(errors.InvalidArgument, match="prefix must be bytes or str"):
            client.scan(3)  # type: ignore[arg-type]


def test_async_scan_returns_an_async_iterator_not_a_coroutine() -> None:
    assert not inspect.iscoroutinefunction(AsyncClient.scan)
    client = AsyncClient(EP, discover=False)
    pages = client.scan("k/", page_size=5)
    assert hasattr(pages, "__aiter__") and not inspect.isawaitable(pages)


def test_every_call_uses_the_default_timeout_or_its_override(sdk: Flavor) -> None:
    kv = FakeKV(keys=2)
    with new_client(sdk, kv, timeout_s=2.5) as client:
        client.get("k/0000")
        client.get("k/0000", timeout_s=0.25)
        client.put("x", "y", timeout_s=7)
        list(client.scan("k/", timeout_s=1.5))
        with pytest.raises(errors.InvalidArgument, match="timeout_s must be a positive"):
            client.get("k/0000", timeout_s=0)
    assert [c[2] for c in kv.calls] == [2.5, 0.25, 7.0, 1.5]
    with pytest.raises(errors.InvalidArgument, match="timeout_s"):
        sdk.client(EP, discover=False, timeout_s=-1)


def test_put_arguments_are_checked_before_sending(sdk: Flavor) -> None:
    kv = FakeKV()
    with new_client(sdk, kv) as client:
        with pytest.raises(errors.InvalidArgument, match="ttl_ms is -5"):
            client.put("k", "v", ttl_ms=-5)
        with pytest.raises(errors.InvalidArgument, match="value must be bytes or str, got int"):
            client.put("k", 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key must be bytes or str"):
            client.get(None)  # type: ignore[arg-type]
    assert kv.calls == []


def test_closed_client_refuses_calls(sdk: Flavor) -> None:
    client = new_client(sdk, FakeKV())
    client.close()
    client.close()  # idempotent
    assert client.closed
    with pytest.raises(ClientClosed, match="closed") as info:
        client.get("k")
    assert isinstance(info.value, EdgeKVError)


def test_client_needs_an_endpoint(sdk: Flavor) -> None:
    for bad in ([], "", [""]):
        with pytest.raises(errors.InvalidArgument, match="endpoint"):
            sdk.client(bad, discover=False)


@pytest.mark.parametrize(
    ("bad", "message"),
    [("ftp://127.0.0.1:7101", "not ftp://"), ("127.0.0.1", "the port is missing"),
     (["127.0.0.1:7101", "h:70000"], "the port '70000' is not a number 1..65535")],
)  # fmt: skip
def test_client_rejects_bad_endpoint_syntax_before_dialling(
    sdk: Flavor, bad: str | list[str], message: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match="HOST:PORT") as info:
        sdk.client(bad, discover=False)
    assert message in str(info.value)


def test_every_kv_call_through_one_client(sdk: Flavor) -> None:
    kv = FakeKV(keys=12)
    with new_client(sdk, kv, timeout_s=3) as client:
        entry = client.get("k/0003")
        assert entry is not None and entry.value == b"v3"
        assert client.get("nope") is None
        many = client.get_many(["k/0001", "nope"])
        assert [e.key if e else None for e in many] == [b"k/0001", None]
        assert client.put("k/9999", b"x", ttl_ms=10).served_by == "n1"
        pages = client.scan("k/", page_size=5)  # an iterator at once, not a call's result
        assert [e.key for e in pages] == sorted(kv.data)
        limited = [e.key for e in client.scan("k/", page_size=5, limit=7, keys_only=True)]
        assert len(limited) == 7
        with pytest.raises(errors.InvalidArgument):
            client.scan("k/", page_size=-1)
    assert {c[2] for c in kv.calls} == {3.0}
    with pytest.raises(ClientClosed):
        client.get("k/0003")


def test_write_sends_one_request_routed_by_its_first_key(sdk: Flavor) -> None:
    seen: list[Any] = []

    class WriteKV(FakeKV):
        def Write(self, req: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            seen.append(req)
            return kv_pb2.WriteResponse(version=VERSION, served_by="n1")

    with new_client(sdk, WriteKV()) as client:
        result = client.write([Put("a", "1"), Put(b"b", b"2", ttl_ms=9)])
    assert result.version == Version(10, "n1") and len(seen) == 1
    assert [op.put.key for op in seen[0].ops] == [b"a", b"b"] and seen[0].ops[1].put.ttl_ms == 9

"""RetryPolicy: backoff arithmetic, and which calls the clients retry (fake stubs, fake sleep).

Every test of the rules runs against both clients through the ``sdk`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from edgekv import errors
from edgekv.client import Client, Delete, Put, RetryPolicy
from edgekv.client._testing import VARIANTS, Flavor
from edgekv.v1 import cluster_pb2, common_pb2, kv_pb2

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
EP = "127.0.0.1:1"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class ScriptedStub:
    """Every method answers from a script: the next outcome (exception or response).

    ``calls`` records (method, request, timeout) of every attempt. The last
    outcome repeats once the script runs out.
    """

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, Any, float | None]] = []

    def _next(self, method: str, request: Any, timeout: float | None) -> Any:
        snapshot = type(request)()
        snapshot.CopyFrom(request)  # the client may reuse the message for the next page
        self.calls.append((method, snapshot, timeout))
        script = self.scripts[method]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def rpc(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            return self._next(method, request, timeout)

        return rpc


def down() -> FakeRpcError:
    return FakeRpcError(UNAVAILABLE, "failed to connect to all addresses")


VERSION = common_pb2.Version(timestamp=10, origin="n1")
OK = {
    "Get": kv_pb2.GetResponse(found=True, value=b"v", version=VERSION, served_by="n1"),
    "BatchGet": kv_pb2.BatchGetResponse(served_by="n1"),
    "Scan": kv_pb2.ScanResponse(served_by="n1"),
    "Put": kv_pb2.PutResponse(version=VERSION, served_by="n1"),
    "Delete": kv_pb2.DeleteResponse(version=VERSION, served_by="n1"),
    "Write": kv_pb2.WriteResponse(version=VERSION, served_by="n1"),
    "Status": cluster_pb2.StatusResponse(node_id="n1"),
    "Members": cluster_pb2.MembersResponse(),
}
CALLS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "get": ("Get", lambda c: c.get("k")),
    "get_many": ("BatchGet", lambda c: c.get_many(["k", "j"])),
    "scan": ("Scan", lambda c: c.scan("p/")),
    "status": ("Status", lambda c: c.status()),
    "members": ("Members", lambda c: c.members()),
    "put": ("Put", lambda c: c.put("k", "v")),
    "delete": ("Delete", lambda c: c.delete("k")),
    "write": ("Write", lambda c: c.write([Put("k", "v"), Delete("j")])),
}
IDEMPOTENT = ("get", "get_many", "scan", "status", "members")
WRITES = ("put", "delete", "write")
NO_JITTER = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=1.0, jitter=False)


# -- the policy itself ---------------------------------------------------------


def test_backoff_doubles_from_initial_and_caps_at_max() -> None:
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=1.0, multiplier=2, jitter=False)
    waits = [policy.backoff_s(n) for n in range(1, 9)]
    assert waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_jitter_stays_between_half_and_all_of_the_base() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, jitter=True)
    assert policy.backoff_s(2, rand=0.0) == pytest.approx(0.1)
    assert policy.backoff_s(2, rand=0.999999) == pytest.approx(0.2, rel=1e-5)
    draws = {policy.backoff_s(1) for _ in range(200)}
    assert len(draws) > 100 and all(0.05 <= d <= 0.1 for d in draws)


def test_defaults_match_the_documented_policy() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.initial_backoff_s, p.max_backoff_s, p.multiplier, p.jitter) == (
        3, 0.05, 1.0, 2, True,
    )  # fmt: skip


def test_should_retry_only_unavailable_idempotent_and_within_attempts() -> None:
    p = RetryPolicy(max_attempts=3)
    assert p.should_retry(UNAVAILABLE, 1, True) and p.should_retry(UNAVAILABLE, 2, True)
    assert not p.should_retry(UNAVAILABLE, 3, True)
    assert not p.should_retry(UNAVAILABLE, 1, False)
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL):  # fmt: skip
        assert not p.should_retry(code, 1, True)
    assert not RetryPolicy(max_attempts=1).should_retry(UNAVAILABLE, 1, True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_attempts": 0}, "max_attempts is 0"), ({"max_attempts": 2.5}, "must be an integer"),
     ({"initial_backoff_s": -1}, "initial_backoff_s is -1"), ({"multiplier": 0.5}, "multiplier"),
     ({"initial_backoff_s": 2.0, "max_backoff_s": 1.0}, "max_backoff_s is 1.0")],
)  # fmt: skip
def test_policy_rejects_nonsense(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)


# -- the rules, through both clients --------------------------------------------


@pytest.fixture(params=VARIANTS)
def sdk(request: pytest.FixtureRequest) -> Iterator[Flavor]:
    """The sync client, then the async one (behind a blocking facade), for each test."""
    with Flavor(request.param) as flavor:
        yield flavor


@pytest.fixture
def sleeps(sdk: Flavor, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff waits of the client under test, recorded instead of slept."""
    waits: list[float] = []
    sdk.patch_sleep(monkeypatch, waits.append)
    return waits


def new_client(sdk: Flavor, stub: ScriptedStub, retry: RetryPolicy = NO_JITTER) -> Client:
    client = sdk.client(EP, discover=False, retry=retry)
    client._kv_stubs[EP] = client._cluster_stubs[EP] = sdk.stub(stub)
    return client


def run(client: Client, name: str) -> Any:
    result = CALLS[name][1](client)
    return list(result) if isinstance(result, Iterator) else result


@pytest.mark.parametrize("name", IDEMPOTENT)
def test_idempotent_call_retried_then_unavailable(
    sdk: Flavor, name: str, sleeps: list[float]
) -> None:
    method = CALLS[name][0]
    stub = ScriptedStub(**{method: [down()]})
    with new_client(sdk, stub) as client, pytest.raises(errors.Unavailable, match=EP):
        run(client, name)
    assert [c[0] for c in stub.calls] == [method] * 3
    assert sleeps == pytest.approx([0.05, 0.1])


@pytest.mark.parametrize("name", IDEMPOTENT)
def test_idempotent_call_succeeds_after_a_transient_failure(
    sdk: Flavor, name: str, sleeps: list[float]
) -> None:
    method = CALLS[name][0]
    stub = ScriptedStub(**{method: [down(), OK[method]]})
    with new_client(sdk, stub) as client:
        run(client, name)
    assert len(stub.calls) == 2 and sleeps == pytest.approx([0.05])


@pytest.mark.parametrize("name", WRITES)
def test_writes_never_retried(sdk: Flavor, name: str, sleeps: list[float]) -> None:
    method = CALLS[name][0]
    stub = ScriptedStub(**{method: [down(), OK[method]]})
    with new_client(sdk, stub) as client, pytest.raises(errors.Unavailable):
        run(client, name)
    assert len(stub.calls) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("code", "cls"),
    [(grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
     (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
     (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
     (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied)],
)  # fmt: skip
def test_other_codes_fail_at_once(
    sdk: Flavor, code: grpc.StatusCode, cls: type[errors.EdgeKVError], sleeps: list[float]
) -> None:
    stub = ScriptedStub(Get=[FakeRpcError(code, "nope"), OK["Get"]])
    with new_client(sdk, stub) as client, pytest.raises(cls, match="nope"):
        client.get("k")
    assert len(stub.calls) == 1 and sleeps == []


def test_max_attempts_one_means_no_retry(sdk: Flavor, sleeps: list[float]) -> None:
    stub = ScriptedStub(Get=[down()])
    with (
        new_client(sdk, stub, RetryPolicy(max_attempts=1)) as client,
        pytest.raises(errors.Unavailable),
    ):
        client.get("k")
    assert len(stub.calls) == 1 and sleeps == []


def test_transient_failures_then_success(sdk: Flavor, sleeps: list[float]) -> None:
    stub = ScriptedStub(Get=[down(), down(), OK["Get"]])
    with new_client(sdk, stub) as client:
        entry = client.get("k")
    assert entry is not None and entry.value == b"v"
    assert len(stub.calls) == 3 and sleeps == pytest.approx([0.05, 0.1])


def test_each_scan_page_is_retried_on_its_own(sdk: Flavor, sleeps: list[float]) -> None:
    item = kv_pb2.KeyValue(key=b"p/1", value=b"v", version=VERSION)
    pages = [
        down(),
        kv_pb2.ScanResponse(items=[item], next_page_token=b"t1"),
        down(),
        down(),
        kv_pb2.ScanResponse(items=[item]),
    ]
    stub = ScriptedStub(Scan=pages)
    with new_client(sdk, stub) as client:
        assert len(list(client.scan("p/"))) == 2
    assert [c[1].page_token for c in stub.calls] == [b"", b"", b"t1", b"t1", b"t1"]
    assert sleeps == pytest.approx([0.05, 0.05, 0.1])


def test_writes_fail_over_to_the_next_seed_but_never_retry_one(
    sdk: Flavor, sleeps: list[float]
) -> None:
    first, second = ScriptedStub(Put=[down()]), ScriptedStub(Put=[OK["Put"]])
    with sdk.client([EP, "127.0.0.1:2"], discover=False, retry=NO_JITTER) as client:
        client._kv_stubs.update({EP: sdk.stub(first), "127.0.0.1:2": sdk.stub(second)})
        assert client.put("k", "v").served_by == "n1"
        # The failed node now comes last, so the next call goes straight to the other.
        assert [n.endpoint for n in client.topology.nearest()] == ["127.0.0.1:2", EP]
    assert len(first.calls) == 1 and len(second.calls) == 1 and sleeps == []


def test_all_seeds_down_names_the_count(sdk: Flavor, sleeps: list[float]) -> None:
    with sdk.client([EP, "127.0.0.1:2"], discover=False, retry=NO_JITTER) as client:
        stubs: dict[str, Any] = {
            EP: sdk.stub(ScriptedStub(Get=[down()])),
            "127.0.0.1:2": sdk.stub(ScriptedStub(Get=[down()])),
        }
        client._kv_stubs.update(stubs)
        with pytest.raises(
            errors.Unavailable, match=r"^all 2 nodes unavailable; last: 127.0.0.1:2"
        ):
            client.get("k")
    assert len(sleeps) == 4  # two retries on each node


@pytest.mark.parametrize("name", WRITES)
def test_write_whose_answer_was_lost_is_not_sent_to_the_next_seed(
    sdk: Flavor, name: str, sleeps: list[float]
) -> None:
    # The connection broke after the write went out: the first node may have applied
    # it, and sending it to the second would store it twice (found by tests/torture).
    method = CALLS[name][0]
    lost = FakeRpcError(UNAVAILABLE, "Socket closed")
    first, second = ScriptedStub(**{method: [lost]}), ScriptedStub(**{method: [OK[method]]})
    with sdk.client([EP, "127.0.0.1:2"], discover=False, retry=NO_JITTER) as client:
        client._kv_stubs.update({EP: sdk.stub(first), "127.0.0.1:2": sdk.stub(second)})
        with pytest.raises(errors.Unavailable, match="Socket closed"):
            run(client, name)
        # The node is still marked failed: the next call starts at the other one.
        assert [n.endpoint for n in client.topology.nearest()] == ["127.0.0.1:2", EP]
    assert len(first.calls) == 1 and second.calls == [] and sleeps == []


def test_read_whose_answer_was_lost_still_moves_on(sdk: Flavor, sleeps: list[float]) -> None:
    lost = FakeRpcError(UNAVAILABLE, "Socket closed")
    first, second = ScriptedStub(Get=[lost]), ScriptedStub(Get=[OK["Get"]])
    with sdk.client([EP, "127.0.0.1:2"], discover=False, retry=NO_JITTER) as client:
        client._kv_stubs.update({EP: sdk.stub(first), "127.0.0.1:2": sdk.stub(second)})
        assert client.get("k") is not None
    assert len(first.calls) == 3 and len(second.calls) == 1

"""The HTTP door's pure parts: its cluster-file keys, the error table, the OpenAPI source."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgekv.config.loader import parse_config
from edgekv.errors import (
    HTTP_STATUS_BY_CODE,
    ConfigError,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    connect_code_name,
    http_status_for,
)
from edgekv.http.app import with_cors
from edgekv.http.openapi import openapi_document
from edgekv.http.rest import ROUTES
from edgekv.limits import Limits

DOC: dict[str, Any] = {
    "cluster": "t",
    "regions": [{"name": "r", "location": [0, 0]}],
    "nodes": [
        {"id": "n1", "region": "r", "listen": "127.0.0.1:7101", "data_dir": "d",
         "http_listen": "127.0.0.1:8101"},
    ],
}  # fmt: skip


def parse_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, Path("/tmp"))
    return str(info.value)


def test_http_listen_and_cors_parse() -> None:
    doc = copy.deepcopy(DOC)
    doc["http"] = {"cors_allow_origins": ["https://app.example", "*"]}
    config = parse_config(doc, Path("/tmp"))
    assert config.node("n1").http_listen == "127.0.0.1:8101"
    assert config.http.cors_allow_origins == ("https://app.example", "*")
    del doc["nodes"][0]["http_listen"], doc["http"]
    config = parse_config(doc, Path("/tmp"))
    assert config.node("n1").http_listen is None and config.http.cors_allow_origins == ()


def test_http_listen_bad_values_rejected_naming_the_entry() -> None:
    doc = copy.deepcopy(DOC)
    doc["nodes"][0]["http_listen"] = "127.0.0.1:7101"
    assert "nodes[0].http_listen" in parse_error(doc)
    doc["nodes"][0]["http_listen"] = "nowhere"
    assert parse_error(doc).startswith("nodes[0].http_listen: expected host:port")
    doc = copy.deepcopy(DOC)
    doc["http"] = {"cors_allow_origins": ["https://app.example/path"]}
    assert parse_error(doc).startswith('http.cors_allow_origins[0]: "https://app.example/path"')
    doc["http"] = {"cors_allow_origins": "*"}
    assert parse_error(doc).startswith("http.cors_allow_origins: expected a list")
    doc["http"] = {"cors": []}
    assert parse_error(doc).startswith('http: unknown key "cors"')


def test_http_h2c_parses_and_defaults_to_off() -> None:
    doc = copy.deepcopy(DOC)
    assert parse_config(doc, Path("/tmp")).http.h2c is False
    doc["http"] = {"cors_allow_origins": []}
    assert parse_config(doc, Path("/tmp")).http.h2c is False
    doc["http"] = {"h2c": True}
    assert parse_config(doc, Path("/tmp")).http.h2c is True


@pytest.mark.parametrize("value", ["yes", 1, None, ["h2c"]])
def test_http_h2c_not_a_boolean_rejected_naming_the_key(value: object) -> None:
    doc = copy.deepcopy(DOC)
    doc["http"] = {"h2c": value}
    assert parse_error(doc).startswith("http.h2c: expected true or false, got ")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidArgument("x"), 400, "invalid_argument"),
        (MessageTooLarge("x"), 400, "invalid_argument"),
        (NotFound("x"), 404, "not_found"),
        (Unauthenticated("x"), 401, "unauthenticated"),
        (PermissionDenied("x"), 403, "permission_denied"),
        (ResourceExhausted("x"), 429, "resource_exhausted"),
        (Unavailable("x"), 503, "unavailable"),
    ],
)
def test_one_table_gives_grpc_connect_and_http(exc: Exception, status: int, code: str) -> None:
    from edgekv.errors import grpc_code_for

    assert http_status_for(exc) == status  # type: ignore[arg-type]
    assert connect_code_name(grpc_code_for(exc)) == code  # type: ignore[arg-type]


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS_BY_CODE) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert connect_code_name(grpc.StatusCode.CANCELLED) == "canceled"


def test_openapi_document_is_written_from_the_route_table() -> None:
    document = openapi_document()
    operations = {
        (method.upper(), path, op["operationId"])
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert operations == {(r.method, r.path, r.operation_id) for r in ROUTES}


def test_cors_is_off_without_origins() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert with_cors(app, ()) is app
    assert with_cors(app, ("https://a.example",)) is not app


def test_value_size_checked_before_reading() -> None:
    with pytest.raises(InvalidArgument, match=r"value is 11 bytes; the limit is 10 \(max_value"):
        Limits(max_value_bytes=10).check_value_size(11)
    Limits(max_value_bytes=10).check_value_size(10)


def test_admission_applies_the_grpc_ports_limits_and_its_own_total() -> None:
    from edgekv.http.calls import Admission, client_of_address
    from edgekv.server.interceptors import InflightLimiter

    limiter = InflightLimiter(max_inflight_per_client=1, max_streams_per_client=1)
    admission = Admission(limiter, max_concurrent=2)
    a, b, c = (client_of_address(f"10.0.0.{i}:5000") for i in (1, 2, 3))
    assert a == "ipv4:10.0.0.1"  # the name the gRPC door counts the same client by
    admission.enter_call(a)
    with pytest.raises(ResourceExhausted, match=r"the limit is 1 \(max_inflight_per_client\)"):
        admission.enter_call(a)
    admission.leave_call(a)
    limiter.enter_call(a)  # a gRPC call of the same client counts against it too
    with pytest.raises(ResourceExhausted, match="max_inflight_per_client"):
        admission.enter_call(a)
    limiter.leave_call(a)
    admission.enter_stream(b)
    with pytest.raises(ResourceExhausted, match=r"max_watches_per_client"):
        admission.enter_stream(b)
    admission.enter_call(c)
    with pytest.raises(ResourceExhausted, match=r"the limit is 2 \(max_concurrent_rpcs\)"):
        admission.enter_call(a)
    admission.leave_stream(b)
    admission.leave_call(c)
    assert admission.inflight == 0 and not limiter.inflight and not limiter.streams
    assert client_of_address("[::1]:80") == "ipv6:[::1]"

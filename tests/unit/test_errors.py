"""Error classes and their gRPC codes: every status survives a round trip.

A status relayed from another node (a forwarded call) is rebuilt with
``relayed_status`` and sent on with ``grpc_code_for``; no code may turn into
another on the way, including codes with no class of their own.
"""

from __future__ import annotations

import grpc
import pytest

from edgekv import errors


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_survives_relayed_status_then_grpc_code_for(
    code: grpc.StatusCode,
) -> None:
    exc = errors.relayed_status(code, "the serving node's message")
    assert isinstance(exc, errors.EdgeKVError)
    assert errors.grpc_code_for(exc) is code
    assert str(exc) == "the serving node's message"


def test_status_without_a_class_keeps_its_code() -> None:
    exc = errors.relayed_status(grpc.StatusCode.ABORTED, "aborted")
    assert type(exc) is errors.OtherStatus and exc.code is grpc.StatusCode.ABORTED


def test_subclass_maps_to_its_nearest_class_code() -> None:
    assert errors.grpc_code_for(errors.CorruptRecord("x")) is grpc.StatusCode.INTERNAL
    assert errors.grpc_code_for(errors.ConfigError("x")) is grpc.StatusCode.INVALID_ARGUMENT

"""edgekv.server.channels: message bounds, addresses and binding, without a network peer."""

from __future__ import annotations

import grpc
import pytest

from edgekv.errors import EdgeKVError
from edgekv.limits import Limits
from edgekv.server.channels import bind, endpoint_of, max_message_bytes, server_options


def test_max_message_fits_the_largest_value_with_framing() -> None:
    limits = Limits(max_value_bytes=8 * 1024 * 1024, max_message_bytes=4 * 1024 * 1024)
    assert max_message_bytes(limits) == 8 * 1024 * 1024 + 64 * 1024
    assert max_message_bytes(Limits(max_value_bytes=1024)) >= Limits().max_message_bytes


def test_endpoint_keeps_the_configured_host_and_the_bound_port() -> None:
    assert endpoint_of("127.0.0.1:0", 50123) == "127.0.0.1:50123"
    assert endpoint_of("[::1]:7000", 7000) == "[::1]:7000"
    assert endpoint_of("127.0.0.1:0", 0) == ""
    assert endpoint_of(None, 9090) == ""


async def test_bind_port_in_use_names_the_address() -> None:
    # The node's server options refuse SO_REUSEPORT, so a second bind fails.
    first = grpc.aio.server(options=server_options(1024))
    second = grpc.aio.server(options=server_options(1024))
    try:
        port = bind(first, "127.0.0.1:0")
        await first.start()
        with pytest.raises(EdgeKVError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind(second, f"127.0.0.1:{port}", None)
    finally:
        await first.stop(0)

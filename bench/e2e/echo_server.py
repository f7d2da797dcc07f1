"""The Python gRPC floor: a generic unary handler that returns its request bytes.

Same stack as a node (grpc.aio on uvloop, async handler), no work at all, so
benchmarks can report node latency as a ratio to what any Python gRPC server
costs on this machine. Run: python -m bench.e2e.echo_server --port N --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import grpc
import uvloop

SERVICE = "edgekv.bench.Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _echo_stream(requests, context):  # type: ignore[no-untyped-def]
    async for request in requests:
        yield request


async def main(port: int, ready_file: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
                    "EchoStream": grpc.stream_stream_rpc_method_handler(_echo_stream),
                },
            ),
        )
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"endpoint": f"127.0.0.1:{bound}", "pid": os.getpid()}, fh)
    os.replace(tmp, ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.ready_file))

"""edgekv's paths, one adapter each, all against one node: the only place that knows them.

* gRPC unary: ``Client("host:port")`` (``transport="unary"`` when the SDK has
  transports, so that this row stays unary when the stream becomes the default);
* streamed: ``Client("host:port", transport="stream")`` — one bidi stream;
  and the same with ``AsyncClient`` for the single caller too ("stream,
  asyncio": awaited on a uvloop loop, as NATS's asyncio-only client is);
* HTTP/Connect: ``Client("http://host:port")`` — the node's HTTP door; and
  ``AsyncClient`` for the single caller too ("HTTP/Connect, asyncio");
* embedded: ``Client("host:port", embedded=DATA_DIR)`` — reads from the node's
  RocksDB in this process (a read-only secondary), writes through the node.

A path whose SDK option this build lacks is reported "skipped: not available
in this build" (found by looking at the Client's signature), so the row turns
on by itself when the feature is merged. Every path is the SDK a user calls:
sync ``Client`` for one caller, ``AsyncClient`` for the concurrent callers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edgekv
from bench.compare import servers
from bench.compare.adapter import Adapter, AsyncOnlyAdapter
from edgekv import AsyncClient, Client, Put

NOT_IN_BUILD = "not available in this build"


def sdk_option(option: str, cls: type | None = None) -> bool:
    """Whether the SDK class ``cls`` (``Client`` by default) takes the keyword ``option``."""
    return option in inspect.signature(cls or Client).parameters


class SharedNode:
    """The edgekv node of the run: started by the first path that needs it, loaded once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: servers.EdgeKVServer | None = None
        self.loaded = False

    def ensure_started(self) -> servers.EdgeKVServer:
        if self.server is None:
            self.server = servers.start_edgekv(self.tmp)
        return self.server

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        if self.loaded:
            return
        with Client(self.ensure_started().node.endpoint, discover=False) as client:
            for i in range(0, len(keys), 1000):
                client.write([Put(k, value) for k in keys[i : i + 1000]])
        self.loaded = True

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class EdgeKVPath(Adapter):
    """One way into the shared node; subclasses say how the SDK is built."""

    family = "edgekv"
    client: Any = None  # connected in start() / aopen()
    aclient: Any = None  # connected in start() / aopen()
    option = ""  # the SDK keyword this path needs ("" when every build has it)
    settings = ""  # what else the report should say about this path

    def __init__(self, node: SharedNode) -> None:
        super().__init__()
        self.node = node

    def unavailable(self) -> str | None:
        if self.option and not sdk_option(self.option):
            return f"{NOT_IN_BUILD} (edgekv.Client has no {self.option}=)"
        return None

    def async_unavailable(self) -> str | None:
        if self.option and not sdk_option(self.option, AsyncClient):
            return f"{NOT_IN_BUILD} (edgekv.AsyncClient has no {self.option}=)"
        return None

    def endpoint(self, server: servers.EdgeKVServer) -> str:
        return server.node.endpoint

    def options(self, server: servers.EdgeKVServer) -> dict[str, Any]:
        """Keyword arguments of this path, beyond the endpoint."""
        return {}

    def start(self, tmp: Path) -> None:
        server = self.node.ensure_started()
        self.kwargs = {"discover": False, **self.options(server)}
        self.target = self.endpoint(server)
        self.client = Client(self.target, **self.kwargs)
        shown = "".join(
            f", {k}=DATA_DIR" if k == "embedded" else f', {k}="{v}"'
            for k, v in self.options(server).items()
        )
        scheme = "http://" if self.target.startswith("http://") else ""
        self.versions = {
            "server": f"edgekv {edgekv.__version__} (read path: {edgekv.READ_PATH})",
            "client": f'edgekv SDK: Client("{scheme}HOST:PORT"{shown}), AsyncClient alike',
            "options": f"one node, sync_writes off (the default){self.settings}",
        }

    @property
    def server_pids(self) -> list[int]:
        return self.node.server.pids if self.node.server else []

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        self.node.load(keys, value)

    def read_value(self, key: bytes) -> bytes | None:
        entry = self.client.get(key)
        return None if entry is None else bytes(entry.value)

    def get(self, key: bytes) -> Any:
        return self.client.get(key)

    def put(self, key: bytes) -> Any:
        return self.client.put(key, self.value)

    def get_many(self, keys: Sequence[bytes]) -> Any:
        return self.client.get_many(keys)

    async def aopen(self) -> None:
        # transport="unary" only pins the default: dropped if AsyncClient lacks the keyword
        # (a path whose own keyword AsyncClient lacks is not run: async_unavailable).
        kwargs = {k: v for k, v in self.kwargs.items() if sdk_option(k, AsyncClient)}
        self.aclient = AsyncClient(self.target, **kwargs)

    async def aclose(self) -> None:
        if self.aclient is not None:
            await self.aclient.close()
            self.aclient = None
        if self.client is not None:
            self.client.close()
            self.client = None

    async def aget(self, key: bytes) -> Any:
        return await self.aclient.get(key)

    async def aput(self, key: bytes) -> Any:
        return await self.aclient.put(key, self.value)

    async def aget_many(self, keys: Sequence[bytes]) -> Any:
        return await self.aclient.get_many(keys)


class GrpcUnary(EdgeKVPath):
    """The baseline every ratio is taken against."""

    name = "edgekv gRPC unary"

    def options(self, server: servers.EdgeKVServer) -> dict[str, Any]:
        return {"transport": "unary"} if sdk_option("transport") else {}


class GrpcStream(EdgeKVPath):
    name, option = "edgekv gRPC stream", "transport"
    settings = "; point calls multiplexed on one bidi stream"

    def options(self, server: servers.EdgeKVServer) -> dict[str, Any]:
        return {"transport": "stream"}


class AwaitedAlone(EdgeKVPath):
    """A path whose single caller awaits ``AsyncClient`` too, on uvloop (as nats-py's is)."""

    def start(self, tmp: Path) -> None:
        super().start(tmp)
        self.run(self.aopen())  # the single caller uses it too

    async def aopen(self) -> None:
        if self.aclient is None:  # opened by start(); warm_up asks again
            await super().aopen()

    def sequential(self, op: str, args: Sequence[Any]) -> list[float]:
        return AsyncOnlyAdapter.sequential(self, op, args)  # type: ignore[arg-type]

    def get(self, key: bytes) -> Any:
        return self.run(self.aget(key))

    def put(self, key: bytes) -> Any:
        return self.run(self.aput(key))

    def get_many(self, keys: Sequence[bytes]) -> Any:
        return self.run(self.aget_many(keys))

    def read_value(self, key: bytes) -> bytes | None:
        entry = self.run(self.aget(key))
        return None if entry is None else bytes(entry.value)


class GrpcStreamAsync(AwaitedAlone, GrpcStream):
    """The streamed path of AsyncClient, for one caller too: its calls are awaited."""

    name = "edgekv gRPC stream, asyncio"
    settings = "; point calls multiplexed on one bidi stream; one caller awaits AsyncClient"

    def start(self, tmp: Path) -> None:
        super().start(tmp)
        self.versions["client"] = (
            'edgekv SDK: AsyncClient("HOST:PORT", transport="stream") on uvloop'
        )


class HttpConnect(EdgeKVPath):
    name = "edgekv HTTP/Connect"

    def endpoint(self, server: servers.EdgeKVServer) -> str:
        return f"http://{server.node.http_endpoint}"


class HttpConnectAsync(AwaitedAlone, HttpConnect):
    """The HTTP door through AsyncClient, for one caller too: its calls are awaited."""

    name = "edgekv HTTP/Connect, asyncio"
    settings = "; one caller awaits AsyncClient"

    def start(self, tmp: Path) -> None:
        super().start(tmp)
        self.versions["client"] = 'edgekv SDK: AsyncClient("http://HOST:PORT") on uvloop'


class Embedded(EdgeKVPath):
    name, option = "edgekv embedded", "embedded"
    settings = "; reads from the node's RocksDB in this process (read-only), writes via the node"

    def options(self, server: servers.EdgeKVServer) -> dict[str, Any]:
        return {"embedded": str(server.data_dir)}


PATHS: tuple[type[EdgeKVPath], ...] = (
    GrpcUnary,
    GrpcStream,
    GrpcStreamAsync,
    HttpConnect,
    HttpConnectAsync,
    Embedded,
)
BASELINE = GrpcUnary.name

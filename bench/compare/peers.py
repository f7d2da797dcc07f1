"""The systems edgekv is compared with: Redis, etcd and NATS JetStream KV, one adapter each.

Each is driven through the client a Python user of it would pick: redis-py
with hiredis (sync, and redis.asyncio for concurrent callers), etcd's gRPC API
through stubs made from etcd_kv.proto (serializable reads: served by the
member alone, as edgekv's LOCAL reads are), and nats-py's JetStream KV
(asyncio-only). Batch gets use what each offers: MGET, one etcd Txn of Range
operations, and for NATS (no batch get) 100 gets in flight at once.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compare import etcd_kv, servers
from bench.compare.adapter import Adapter, AsyncOnlyAdapter, gather_chunks
from edgekv.local.wait import wait_until

CHUNK = 1000


# What scripts/bench_peers.sh (run by `make bench`) did, one "package<TAB>outcome" a line.
PEERS_STAMP = Path(
    os.environ.get("BENCH_PEERS_STAMP", Path(__file__).parents[2] / ".venv" / ".bench-peers")
)


def _install_outcome(package: str) -> str:
    try:
        lines = PEERS_STAMP.read_text().splitlines()
    except OSError:
        return (
            "scripts/bench_peers.sh has not run here "
            "(`make bench` runs it; the smoke run never installs servers)"
        )
    outcome = next(
        (line.split("\t", 1)[1] for line in lines if line.startswith(package + "\t")), ""
    )
    return f"scripts/bench_peers.sh: {outcome or 'no record'}"


def _missing(binary: str, package: str, modules: Sequence[str]) -> str | None:
    if servers.find_binary(binary) is None:
        debian = {
            "redis-server": "redis-server",
            "etcd": "etcd-server",
            "nats-server": "nats-server",
        }[binary]
        return f"{binary} is not installed ({_install_outcome(debian)})"
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"Python client missing ({', '.join(absent)}): pip install -e '.[{package}]'"
    return None


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class _PeerAdapter(Adapter):
    server: servers.Server | None = None

    @property
    def server_pids(self) -> list[int]:
        return self.server.pids if self.server else []

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.server is not None:
                self.server.stop()
                self.server = None


class RedisAdapter(_PeerAdapter):
    """Redis GET / SET / MGET through redis-py with the hiredis parser."""

    name, family = "Redis (redis-py + hiredis)", "Redis"
    client: Any = None  # connected in start() / aopen()
    aclient: Any = None  # connected in start() / aopen()

    def unavailable(self) -> str | None:
        return _missing("redis-server", "bench-clients", ["redis", "hiredis"])

    def start(self, tmp: Path) -> None:
        import redis

        binary = servers.find_binary("redis-server") or "redis-server"
        self.server = servers.start_redis(binary, tmp)
        self.client = redis.Redis(host="127.0.0.1", port=self.server.port)
        self.client.ping()
        self.versions = {
            "server": servers.binary_version([binary, "--version"]),
            "client": f"redis-py {_dist_version('redis')}, hiredis {_dist_version('hiredis')}",
            "options": "no persistence (--save '' --appendonly no)",
        }

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        for i in range(0, len(keys), CHUNK):
            self.client.mset(dict.fromkeys(keys[i : i + CHUNK], value))

    def read_value(self, key: bytes) -> bytes | None:
        value = self.client.get(key)
        return None if value is None else bytes(value)

    def get(self, key: bytes) -> Any:
        return self.client.get(key)

    def put(self, key: bytes) -> Any:
        return self.client.set(key, self.value)

    def get_many(self, keys: Sequence[bytes]) -> Any:
        return self.client.mget(keys)

    async def aopen(self) -> None:
        import redis.asyncio

        assert self.server is not None
        self.aclient = redis.asyncio.Redis(host="127.0.0.1", port=self.server.port)

    async def aclose(self) -> None:
        if self.aclient is not None:
            await self.aclient.aclose()
            self.aclient = None
        if self.client is not None:
            self.client.close()
            self.client = None

    async def aget(self, key: bytes) -> Any:
        return await self.aclient.get(key)

    async def aput(self, key: bytes) -> Any:
        return await self.aclient.set(key, self.value)

    async def aget_many(self, keys: Sequence[bytes]) -> Any:
        return await self.aclient.mget(keys)


class EtcdAdapter(_PeerAdapter):
    """etcd Range (serializable) / Put / Txn of Ranges over its gRPC API."""

    name, family = "etcd (gRPC, serializable reads)", "etcd"
    channel: Any = None  # connected in start() / aopen()
    achannel: Any = None  # connected in start() / aopen()

    def unavailable(self) -> str | None:
        return _missing("etcd", "test", ["grpc_tools"])

    def start(self, tmp: Path) -> None:
        import grpc

        self.pb, pb_grpc = etcd_kv.load(tmp / "etcd_stubs")
        binary = servers.find_binary("etcd") or "etcd"
        self.server = servers.start_etcd(binary, tmp)
        self.target = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.KVStub(self.channel)
        self._stub_class = pb_grpc.KVStub
        # Ready once it has elected itself leader and answers a read.
        wait_until(
            lambda: self.stub.Range(self.pb.RangeRequest(key=b"probe"), timeout=2) is not None,
            timeout_s=servers.START_TIMEOUT_S,
            what="etcd to answer a Range",
        )
        self.versions = {
            "server": servers.binary_version([binary, "--version"]),
            "client": f"grpcio {_dist_version('grpcio')}, stubs from bench/compare/etcd_kv.proto",
            "options": "one member; WAL fsync on every write (etcd has no switch to turn it off)",
        }

    def _range(self, key: bytes) -> Any:
        return self.pb.RangeRequest(key=key, serializable=True)

    def _txn_get(self, keys: Sequence[bytes]) -> Any:
        ops = [self.pb.RequestOp(request_range=self._range(k)) for k in keys]
        return self.pb.TxnRequest(success=ops)

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        pb = self.pb
        for i in range(0, len(keys), 100):  # etcd allows 128 operations per Txn by default
            ops = [
                pb.RequestOp(request_put=pb.PutRequest(key=k, value=value))
                for k in keys[i : i + 100]
            ]
            self.stub.Txn(pb.TxnRequest(success=ops), timeout=60)

    def read_value(self, key: bytes) -> bytes | None:
        kvs = self.get(key).kvs
        return bytes(kvs[0].value) if kvs else None

    def get(self, key: bytes) -> Any:
        return self.stub.Range(self._range(key))

    def put(self, key: bytes) -> Any:
        return self.stub.Put(self.pb.PutRequest(key=key, value=self.value))

    def get_many(self, keys: Sequence[bytes]) -> Any:
        return self.stub.Txn(self._txn_get(keys))

    async def aopen(self) -> None:
        import grpc

        self.achannel = grpc.aio.insecure_channel(self.target)
        self.astub = self._stub_class(self.achannel)

    async def aclose(self) -> None:
        if self.achannel is not None:
            await self.achannel.close()
            self.achannel = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    async def aget(self, key: bytes) -> Any:
        return await self.astub.Range(self._range(key))

    async def aput(self, key: bytes) -> Any:
        return await self.astub.Put(self.pb.PutRequest(key=key, value=self.value))

    async def aget_many(self, keys: Sequence[bytes]) -> Any:
        return await self.astub.Txn(self._txn_get(keys))


class NatsAdapter(AsyncOnlyAdapter, _PeerAdapter):
    """NATS JetStream KV get / put through nats-py (asyncio-only; no batch get)."""

    name, family = "NATS JetStream KV (nats-py)", "NATS"
    nc: Any = None  # connected in start() / aopen()

    def unavailable(self) -> str | None:
        return _missing("nats-server", "bench-clients", ["nats"])

    def start(self, tmp: Path) -> None:
        binary = servers.find_binary("nats-server") or "nats-server"
        self.server = servers.start_nats(binary, tmp)
        self.run(self._connect(f"nats://127.0.0.1:{self.server.port}"))
        self.versions = {
            "server": servers.binary_version([binary, "--version"]),
            "client": f"nats-py {_dist_version('nats-py')}",
            "options": "JetStream file storage, bucket history 1",
        }

    async def _connect(self, url: str) -> None:
        import nats

        self.nc = await nats.connect(servers=[url], connect_timeout=10)
        js = self.nc.jetstream()
        deadline = self.loop.time() + servers.START_TIMEOUT_S
        while True:  # JetStream may need a moment after the port opens
            try:
                self.kv = await js.create_key_value(bucket="bench", history=1)
                return
            except Exception:
                if self.loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def load(self, keys: Sequence[bytes], value: bytes) -> None:
        gather_chunks(self.loop, lambda k: self.kv.put(k.decode(), value), keys)

    async def aclose(self) -> None:
        if self.nc is not None:
            await self.nc.close()
            self.nc = None

    def read_value(self, key: bytes) -> bytes | None:
        value = self.get(key).value
        return None if value is None else bytes(value)

    async def aget(self, key: bytes) -> Any:
        return await self.kv.get(key.decode())

    async def aput(self, key: bytes) -> Any:
        return await self.kv.put(key.decode(), self.value)

    async def aget_many(self, keys: Sequence[bytes]) -> Any:
        return await asyncio.gather(*(self.kv.get(k.decode()) for k in keys))


PEERS: tuple[type[Adapter], ...] = (RedisAdapter, EtcdAdapter, NatsAdapter)

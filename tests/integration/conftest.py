"""Fixtures that start real `edgekv serve` processes on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgekv.local.launcher import NodeProcess, start_node, write_cluster_file
from edgekv.v1 import cluster_pb2_grpc, kv_pb2_grpc


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    """A one-node cluster file (node id "node-1") with free ports, in tmp_path."""
    return write_cluster_file(tmp_path)


@pytest.fixture
def node(cluster_file: Path) -> Iterator[NodeProcess]:
    """A fresh single node, stopped (SIGTERM, then SIGKILL) after the test."""
    proc = start_node(cluster_file, "node-1")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def node_endpoint(node: NodeProcess) -> str:
    return node.endpoint


@pytest.fixture(scope="session")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for read-only or prefix-isolated tests, shared by the session."""
    path = write_cluster_file(tmp_path_factory.mktemp("shared-node"))
    proc = start_node(path, "node-1")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.endpoint) as ch:
        yield ch


@pytest.fixture
def kv_stub(channel: grpc.Channel) -> kv_pb2_grpc.KVStub:
    """A raw gRPC stub: tests the wire contract without the SDK in between."""
    return kv_pb2_grpc.KVStub(channel)


@pytest.fixture
def cluster_stub(channel: grpc.Channel) -> cluster_pb2_grpc.ClusterStub:
    return cluster_pb2_grpc.ClusterStub(channel)

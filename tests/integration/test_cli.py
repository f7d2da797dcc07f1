"""The `edgekv` command line against a real node: output, stdin, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekv.local.launcher import NodeProcess, free_port

pytestmark = pytest.mark.integration


def edgekv(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", *args],
        input=stdin, capture_output=True, timeout=60,
    )  # fmt: skip


def test_put_get_delete_scan_round_trip(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint)
    put = edgekv("put", "cli/a", "hello", *ep)
    assert put.returncode == 0 and b"stored cli/a" in put.stdout and b"node-1" in put.stdout
    binary = bytes(range(256))
    assert edgekv("put", "cli/bin", *ep, stdin=binary).returncode == 0
    got = edgekv("get", "cli/bin", *ep)
    assert got.returncode == 0 and got.stdout == binary
    as_json = json.loads(edgekv("get", "cli/bin", *ep, "--json").stdout)
    assert as_json["found"] and as_json["value_encoding"] == "base64"
    assert as_json["version"]["origin"] == "node-1"
    assert json.loads(edgekv("get", "cli/a", *ep, "--json").stdout)["value"] == "hello"
    scanned = edgekv("scan", "cli/", *ep, "--keys-only")
    assert scanned.stdout.decode().split() == ["cli/a", "cli/bin"]
    lines = edgekv("scan", "cli/", *ep, "--json", "--limit", "1").stdout.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "cli/a"
    assert edgekv("delete", "cli/a", *ep).returncode == 0
    missing = edgekv("get", "cli/a", *ep)
    assert missing.returncode == 3 and b"not found" in missing.stderr


def test_status_table_and_json(node: NodeProcess, cluster_file: Path) -> None:
    table = edgekv("status", "--config", str(cluster_file), "--node", "node-1")
    assert table.returncode == 0, table.stderr
    assert b"node      node-1 (local)" in table.stdout and b"read path cython" in table.stdout
    data = json.loads(edgekv("status", "--endpoint", node.endpoint, "--json").stdout)
    assert data["node_id"] == "node-1" and data["members"][0]["is_self"]


def test_errors_have_exit_codes(node: NodeProcess) -> None:
    dead = edgekv("get", "k", "--endpoint", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert dead.returncode == 4 and dead.stderr.startswith(b"edgekv: ")
    usage = edgekv("get", "k")
    assert usage.returncode == 2 and b"--endpoint" in usage.stderr
    bad = edgekv("put", "", "v", "--endpoint", node.endpoint)
    assert bad.returncode == 1 and b"key is empty" in bad.stderr
    assert edgekv("doctor").stdout.startswith(b"edgekv      ")

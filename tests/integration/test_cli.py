"""The `edgekv` command line against a real node: output, stdin, --json, exit codes.

Runs the installed entry point (.venv/bin/edgekv), as scripts would.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekv import Client, Put
from edgekv.local.launcher import NodeProcess, free_port

pytestmark = pytest.mark.integration

EDGEKV = Path(sys.executable).parent / "edgekv"


def edgekv(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EDGEKV), *args], input=stdin, capture_output=True, timeout=60)


def as_json(proc: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def test_put_get_delete_scan_round_trip(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint)
    put = edgekv("put", "cli/a", "hello", *ep)
    assert put.returncode == 0 and b"stored cli/a" in put.stdout and b"node-1" in put.stdout
    binary = bytes(range(256))
    assert edgekv("put", "cli/bin", *ep, stdin=binary).returncode == 0
    got = edgekv("get", "cli/bin", *ep)
    assert got.returncode == 0 and got.stdout == binary  # `edgekv get k > file` is exact
    data = as_json(edgekv("get", "cli/bin", *ep, "--json"))
    assert data["found"] and data["value_encoding"] == "base64"
    assert base64.b64decode(str(data["value"])) == binary
    assert data["version"] == {"timestamp": data["version"]["timestamp"], "origin": "node-1"}  # type: ignore[index]
    assert as_json(edgekv("get", "cli/a", *ep, "--json"))["value"] == "hello"
    scanned = edgekv("scan", "cli/", *ep, "--keys-only")
    assert scanned.stdout.decode().split() == ["cli/a", "cli/bin"]
    lines = edgekv("scan", "cli/", *ep, "--json", "--limit", "1").stdout.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "cli/a"
    assert edgekv("delete", "cli/a", *ep).returncode == 0
    missing = edgekv("get", "cli/a", *ep)
    assert missing.returncode == 3 and missing.stderr == b"edgekv: key 'cli/a' not found\n"
    assert missing.stdout == b""


def test_json_output_of_every_command(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint, "--json")
    put = as_json(edgekv("put", "j/k", "v1", *ep, "--ttl-ms", "600000"))
    assert put["served_by"] == "node-1" and put["key"] == "j/k"
    got = as_json(edgekv("get", "j/k", *ep))
    assert got["version"] == put["version"] and got["value"] == "v1"
    assert isinstance(got["expires_at_ms"], int) and got["expires_at_ms"] > 0
    status = as_json(edgekv("status", *ep))
    assert status["node_id"] == "node-1" and status["read_path"] in ("cython", "python")
    assert status["hlc_timestamp"] >= put["version"]["timestamp"]  # type: ignore[index,operator]
    deleted = as_json(edgekv("delete", "j/k", *ep))
    assert deleted["version"]["timestamp"] > put["version"]["timestamp"]  # type: ignore[index]
    missing = edgekv("get", "j/k", *ep)
    assert missing.returncode == 3
    assert json.loads(missing.stdout) == {"found": False, "key": "j/k", "key_encoding": "utf-8"}


def test_put_reads_stdin_when_value_is_omitted_or_dash(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint)
    assert edgekv("put", "in/omitted", *ep, stdin=b"line1\nline2\n").returncode == 0
    assert edgekv("put", "in/dash", "-", *ep, stdin=b"\x00\xff").returncode == 0
    assert edgekv("put", "in/empty", *ep, stdin=b"").returncode == 0
    assert edgekv("get", "in/omitted", *ep).stdout == b"line1\nline2\n"
    assert edgekv("get", "in/dash", *ep).stdout == b"\x00\xff"
    empty = edgekv("get", "in/empty", *ep)
    assert empty.returncode == 0 and empty.stdout == b""  # present, just empty
    # Friendly scan output keeps one item per line.
    assert edgekv("scan", "in/omitted", *ep).stdout == b"in/omitted\tline1\\nline2\\n\n"


def test_scan_pages_through_large_ranges(node: NodeProcess) -> None:
    with Client(node.endpoint, discover=False) as client:
        for first in range(0, 1234, 617):
            client.write([Put(b"big/%05d" % i, b"v") for i in range(first, first + 617)])
    ep = ("--endpoint", node.endpoint)
    keys = edgekv("scan", "big/", *ep, "--keys-only").stdout.decode().split()
    assert keys == [f"big/{i:05d}" for i in range(1234)]
    limited = edgekv("scan", "big/", *ep, "--json", "--limit", "700").stdout.decode().splitlines()
    assert [json.loads(line)["key"] for line in limited] == [f"big/{i:05d}" for i in range(700)]
    ranged = edgekv("scan", *ep, "--start", "big/00010", "--end", "big/00013", "--keys-only")
    assert ranged.stdout.decode().split() == ["big/00010", "big/00011", "big/00012"]


def test_scan_into_a_closed_pipe_ends_quietly(node: NodeProcess) -> None:
    with Client(node.endpoint, discover=False) as client:
        client.write([Put(b"pipe/%05d" % i, b"x" * 200) for i in range(1000)])
    script = f"{EDGEKV} scan pipe/ --endpoint {node.endpoint} | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, timeout=60)
    assert proc.stdout.decode().startswith("pipe/00000\t")
    assert proc.stderr == b"" and proc.returncode == 0


def test_status_table_and_config_node(node: NodeProcess, cluster_file: Path) -> None:
    table = edgekv("status", "--config", str(cluster_file), "--node", "node-1")
    assert table.returncode == 0, table.stderr
    assert b"node      node-1 (local)" in table.stdout and b"read path cython" in table.stdout
    assert b"NODE    REGION" in table.stdout
    data = as_json(edgekv("status", "--endpoint", node.endpoint, "--json"))
    assert data["node_id"] == "node-1" and data["members"][0]["is_self"]  # type: ignore[index]
    got = edgekv("put", "cfg/k", "v", "--config", str(cluster_file), "--node", "node-1")
    assert got.returncode == 0, got.stderr


@pytest.mark.parametrize(
    "command",
    [("get", "k"), ("put", "k", "v"), ("delete", "k"), ("scan", "p/"), ("status",)],
)
def test_unreachable_endpoint_exits_4(command: tuple[str, ...]) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    dead = edgekv(*command, "--endpoint", endpoint, "--timeout", "1")
    assert dead.returncode == 4, dead.stderr
    assert dead.stderr.startswith(f"edgekv: {endpoint}: ".encode())
    assert dead.stderr.count(b"\n") == 1 and dead.stdout == b""


def test_errors_have_exit_codes(node: NodeProcess) -> None:
    usage = edgekv("get", "k")
    assert usage.returncode == 2 and b"--endpoint" in usage.stderr
    bad = edgekv("put", "", "v", "--endpoint", node.endpoint)
    assert bad.returncode == 1 and bad.stderr == b"edgekv: key is empty; keys are 1 to 1024 bytes\n"
    too_big = edgekv("put", "big", "--endpoint", node.endpoint, stdin=b"x" * (1024 * 1024 + 1))
    assert too_big.returncode == 1 and b"(max_value_bytes)" in too_big.stderr
    assert edgekv("doctor").stdout.startswith(b"edgekv      ")

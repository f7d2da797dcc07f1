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

from edgekv import Client, InvalidArgument, Put, errors
from edgekv.local.launcher import NodeProcess, free_port, running_node, write_cluster_file
from edgekv.server.auth import hash_token
from edgekv.tls import create_ca, issue_cert

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


# -- mistakes a user can make: the message names the cause and the fix ----------------


def test_peer_port_exits_1_saying_use_the_listen_address(tmp_path: Path) -> None:
    two = write_cluster_file(tmp_path, nodes=(("node-1", "local"), ("node-2", "local")))
    with running_node(two, "node-1") as node:
        peer = str(node.info["peer_endpoint"])
        for command in (("get", "k"), ("status",), ("audit",)):
            wrong = edgekv(*command, "--endpoint", peer)
            assert wrong.returncode == 1, wrong.stderr
            assert (
                wrong.stderr
                == (
                    f"edgekv: {peer}: this endpoint does not serve the edgekv client API; it is "
                    "probably a node's peer port (peer_listen): use the node's listen address; "
                    "the server said: Method not found!\n"
                ).encode()
            )
        with Client(peer, discover=False) as client, pytest.raises(errors.Unimplemented):
            client.get("k")


def test_oversized_value_names_the_size_the_limit_and_the_settings(node: NodeProcess) -> None:
    five_mb = b"x" * 5_000_000
    too_big = edgekv("put", "big", "--endpoint", node.endpoint, stdin=five_mb)
    assert too_big.returncode == 1
    assert too_big.stderr == (
        b"edgekv: the request is 5000010 bytes; the node accepts messages up to 4194304 bytes "
        b"(limits.max_message_bytes) and values up to limits.max_value_bytes (default 1048576): "
        b"store a smaller value, or raise both settings in the cluster file\n"
    )
    # The SDK raises the class a value over max_value_bytes gets: InvalidArgument.
    with Client(node.endpoint, discover=False) as client:
        with pytest.raises(InvalidArgument, match=r"limits\.max_message_bytes"):
            client.put("big", five_mb)
        with pytest.raises(InvalidArgument, match=r"\(max_value_bytes\)"):
            client.put("big", b"x" * (1024 * 1024 + 1))


def test_url_endpoint_of_a_grpc_port_exits_4_naming_the_http_door(node: NodeProcess) -> None:
    url = edgekv("get", "k", "--endpoint", f"http://{node.endpoint}")
    assert url.returncode == 4
    assert b"does not speak HTTP/1.1: it is probably a node's gRPC port" in url.stderr
    assert b"(http_listen)" in url.stderr
    health = edgekv("health", "--endpoint", f"http://{node.endpoint}")
    assert health.returncode == 2 and b"talks to the gRPC port" in health.stderr
    scheme = edgekv("get", "k", "--endpoint", f"grpc://{node.endpoint}")
    assert scheme.returncode == 2 and b"HOST:PORT" in scheme.stderr
    no_port = edgekv("status", "--endpoint", "127.0.0.1")
    assert no_port.returncode == 2 and b"the port is missing" in no_port.stderr


def test_double_dash_value_with_options_before_it(node: NodeProcess) -> None:
    put = edgekv("put", "--endpoint", node.endpoint, "dash/k", "--", "-5")
    assert put.returncode == 0, put.stderr
    assert edgekv("get", "--endpoint", node.endpoint, "--", "dash/k").stdout == b"-5"
    after = edgekv("put", "dash/k", "--", "-5", "--endpoint", node.endpoint)
    assert after.returncode == 2 and b"put the options before `--`" in after.stderr


def test_audit_takes_endpoint(node: NodeProcess) -> None:
    assert edgekv("put", "a/k", "v", "--endpoint", node.endpoint).returncode == 0
    report = as_json(edgekv("audit", "--endpoint", node.endpoint, "--json"))
    assert report["mode"] == "live" and report["violations"] == 0 and report["node_id"] == "node-1"
    text = edgekv("audit", "-e", node.endpoint)
    assert text.returncode == 0 and text.stdout.startswith(b"audit of node-1 (local, live): ")
    dead = edgekv("audit", "--endpoint", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert dead.returncode == 4 and dead.stderr.startswith(b"edgekv: 127.0.0.1:")


def test_tls_and_token_mistakes_name_the_fix(tmp_path: Path, node: NodeProcess) -> None:
    pki = tmp_path / "pki"
    create_ca(pki)
    issue_cert(pki, "node-1", ["127.0.0.1"])
    other = tmp_path / "other-ca"
    create_ca(other)
    security = {
        "tls": {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "{node}.pem"),
                "key_file": str(pki / "{node}-key.pem")},
        "auth": {"mode": "tokens", "tokens": [
            {"name": "ops", "sha256": hash_token("o-secret").hex(), "scope": "admin"}]},
    }  # fmt: skip
    path = write_cluster_file(tmp_path / "secure", extra={"security": security})
    ca = ("--ca-file", str(pki / "ca.pem"))
    with running_node(path, "node-1") as secure:
        ep = ("--endpoint", secure.endpoint, "--timeout", "2")
        plain = edgekv("get", "k", *ep, "--token", "o-secret")
        assert plain.returncode == 4
        assert b"the node closed the connection" in plain.stderr
        assert b"if the node uses TLS (security.tls), give the cluster's CA certificate: " \
            b"--ca-file or $EDGEKV_CA_FILE" in plain.stderr  # fmt: skip
        wrong_ca = edgekv("get", "k", *ep, "--token", "o-secret", "--ca-file",
                          str(other / "ca.pem"))  # fmt: skip
        assert wrong_ca.returncode == 4
        assert b"TLS handshake failed: the node's certificate is not signed by the given CA; " \
            b"give the cluster's CA certificate" in wrong_ca.stderr  # fmt: skip
        no_token = edgekv("get", "k", *ep, *ca)
        assert no_token.returncode == 1
        assert no_token.stderr.startswith(
            b"edgekv: no valid token: pass one with --token or $EDGEKV_TOKEN (token= in the SDK)"
        )
        bad_token = edgekv("get", "k", *ep, *ca, "--token", "nope")
        assert bad_token.returncode == 1
        assert b"the token was refused: check the token" in bad_token.stderr
        assert b"security.auth.tokens" in bad_token.stderr
        ok = edgekv("audit", *ep, *ca, "--token", "o-secret", "--json")
        assert as_json(ok)["mode"] == "live"  # audit speaks TLS and sends the token
    tls_to_plain = edgekv("get", "k", "--endpoint", node.endpoint, "--timeout", "2", *ca)
    assert tls_to_plain.returncode == 4
    assert (
        f"edgekv: {node.endpoint}: TLS handshake failed: the node does not use TLS (plaintext); "
        "drop --ca-file/$EDGEKV_CA_FILE (tls_ca_file in the SDK), or turn on security.tls on "
        "the node\n"
    ).encode() in tls_to_plain.stderr


def test_counts_say_what_they_count(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint)
    with Client(node.endpoint, discover=False) as client:
        client.write([Put(b"n/%d" % i, b"v") for i in range(8)])
        client.put("n/0", "again")  # a second version of a live key
        client.delete("n/7")  # a tombstone
    assert len(edgekv("scan", "n/", *ep, "--keys-only").stdout.split()) == 7  # live keys
    status = as_json(edgekv("status", *ep, "--json"))
    assert status["key_count_estimated"] is True and isinstance(status["key_count"], int)
    text = edgekv("status", *ep).stdout.decode()
    assert f"records   ~{status['key_count']} is RocksDB's estimate of stored records" in text
    assert "`edgekv scan` lists live keys" in text
    audit = as_json(edgekv("audit", *ep, "--json"))
    by_cf = audit["checked_by_column_family"]
    assert isinstance(by_cf, dict) and set(by_cf) == {"data", "log", "digest", "feed"}
    assert sum(by_cf.values()) == audit["checked"]
    assert by_cf["data"] == 8 and by_cf["digest"] == 8  # 7 live keys and 1 tombstone
    assert by_cf["log"] == 10  # every write: 8 puts, 1 overwrite, 1 delete
    assert by_cf["feed"] == 10  # every change that became visible
    line = edgekv("audit", *ep).stdout.decode().splitlines()[0]
    assert line == (
        f"audit of node-1 (local, live): {audit['checked']} entries checked (8 data records, "
        "10 log entries, 8 digest index entries, 10 change feed entries), 0 violations"
    )


def test_consistency_session_token_and_await_options(node: NodeProcess) -> None:
    ep = ("--endpoint", node.endpoint, "--json")
    put = as_json(edgekv("put", "lvl/k", "v", *ep))
    token = str(put["session_token"])
    got = as_json(edgekv("get", "lvl/k", *ep, "--consistency", "session", "--session-token", token))
    assert got["value"] == "v" and got["session_token"] == token
    assert "session_token" not in as_json(edgekv("get", "lvl/k", *ep))  # LOCAL: none
    lines = edgekv("scan", "lvl/", *ep, "--consistency", "session", "--session-token", token)
    assert json.loads(lines.stdout.decode().splitlines()[0])["key"] == "lvl/k"
    bad = edgekv("get", "lvl/k", *ep, "--consistency", "session", "--session-token", "!!")
    assert bad.returncode == 1 and b"base64url" in bad.stderr
    level = edgekv("get", "lvl/k", *ep, "--consistency", "eventual")
    assert level.returncode == 2
    alone = edgekv("put", "lvl/k", "v", *ep, "--await-replicas", "1")
    assert alone.returncode == 1 and b"count is 1; at most 0 other PoPs" in alone.stderr

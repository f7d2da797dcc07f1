"""The `edgekv` CLI without a node: option parsing, exit codes, output, serve delegation.

Client commands run against a fake ``edgekv.client.Client`` (patched where the
commands import it), so these tests need no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edgekv import errors
from edgekv.cli import exitcodes
from edgekv.cli.main import main
from edgekv.client import Entry, Member, NodeStatus, Version, WriteResult

EP = ("--endpoint", "127.0.0.1:7101")


class FakeClient:
    """Stands in for edgekv.client.Client: a dict, or an error raised by every call."""

    data: dict[bytes, bytes] = {}
    error: Exception | None = None
    instances: list[FakeClient] = []

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        self.endpoint, self.kwargs = endpoint, kwargs
        self.calls: list[tuple[str, Any]] = []
        FakeClient.instances.append(self)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if FakeClient.error is not None:
            raise FakeClient.error

    session_token = b""

    def get(self, key: bytes, *, consistency: str | None = None) -> Entry | None:
        self._call("get", key)
        value = self.data.get(key)
        return None if value is None else Entry(key, value, Version(5, "n1"), 0, "n1")

    def put(self, key: bytes, value: bytes, *, ttl_ms: int = 0, **awaits: Any) -> WriteResult:
        self._call("put", key, value, ttl_ms)
        self.data[key] = value
        return WriteResult(Version(6, "n1"), "n1")

    def delete(self, key: bytes, **awaits: Any) -> WriteResult:
        self._call("delete", key)
        self.data.pop(key, None)
        return WriteResult(Version(7, "n1"), "n1")

    def scan(self, prefix: bytes, *, start: bytes, end: bytes, page_size: int, keys_only: bool,
             limit: int | None, consistency: str | None = None) -> Any:  # fmt: skip
        self._call("scan", prefix, start, end, page_size, keys_only, limit)
        keys = sorted(k for k in self.data if k.startswith(prefix))[:limit]
        return iter([Entry(k, b"" if keys_only else self.data[k], Version(5, "n1")) for k in keys])

    def status(self) -> NodeStatus:
        self._call("status")
        return NodeStatus("n1", "local", "test", 3.0, 2, "cython", "0.1.0", 9, False)

    def members(self) -> list[Member]:
        self._call("members")
        return [Member("n1", "local", "127.0.0.1:7101", True, True, 0.0, 0, 0.0, "")]


@pytest.fixture(autouse=True)
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    monkeypatch.setattr("edgekv.client.Client", FakeClient)
    FakeClient.data = {b"greeting": b"hello", b"bin": b"\xff\x00\x01"}
    FakeClient.error = None
    FakeClient.instances = []
    return FakeClient


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


# -- exit codes and usage errors -------------------------------------------------


def test_exit_codes_are_the_documented_numbers() -> None:
    assert (exitcodes.OK, exitcodes.ERROR, exitcodes.USAGE, exitcodes.NOT_FOUND,
            exitcodes.UNAVAILABLE, exitcodes.AUDIT_VIOLATIONS) == (0, 1, 2, 3, 4, 5)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [(("get", "k"), "give --endpoint HOST:PORT, or --config FILE and --node ID"),
     (("get",), "Missing argument 'KEY'"),
     (("get", "k", "--endpoint", "nohost"), "'nohost' is not HOST:PORT"),
     (("get", "k", "--endpoint", "h:99999"), "is not HOST:PORT"),
     (("get", "k", "--node", "n1"), "--node needs --config"),
     (("get", "k", "--config", "c.yaml"), "--config needs --node"),
     (("get", "k", *EP, "--timeout", "0"), "--timeout"),
     (("put", "k", "v", *EP, "--ttl-ms", "-1"), "--ttl-ms"),
     (("scan", *EP, "--limit", "0"), "--limit"),
     (("frobnicate",), "No such command"),
     (("serve", "--node", "n1"), "Missing option '--config'")],
)  # fmt: skip
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == exitcodes.USAGE, result.output
    assert message in result.stderr
    assert FakeClient.instances == []  # nothing was sent


@pytest.mark.parametrize(
    ("error", "code"),
    [(errors.Unavailable("127.0.0.1:7101: failed to connect"), exitcodes.UNAVAILABLE),
     (errors.DeadlineExceeded("127.0.0.1:7101: Deadline Exceeded"), exitcodes.UNAVAILABLE),
     (errors.InvalidArgument("key is empty; keys are 1 to 1024 bytes"), exitcodes.ERROR),
     (errors.PermissionDenied("token may not write"), exitcodes.ERROR),
     (errors.NotFound("no such thing"), exitcodes.NOT_FOUND)],
)  # fmt: skip
@pytest.mark.parametrize("command", [("get", "k"), ("put", "k", "v"), ("delete", "k"),
                                     ("scan", "p"), ("status",)])  # fmt: skip
def test_errors_print_one_line_and_their_exit_code(
    error: Exception, code: int, command: tuple[str, ...]
) -> None:
    FakeClient.error = error
    result = run(*command, *EP)
    assert result.exit_code == code
    assert result.stderr == f"edgekv: {error}\n" and result.stdout == ""


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [("ftp://127.0.0.1:7101", "http(s)://HOST:PORT (the HTTP door), not ftp://"),
     ("127.0.0.1", "the port is missing; give HOST:PORT (e.g. 127.0.0.1:7101)"),
     ("h:0", "the port '0' is not a number 1..65535"),
     ("h:x", "the port 'x' is not a number 1..65535")],
)  # fmt: skip
@pytest.mark.parametrize("command", [("get", "k"), ("put", "k", "v"), ("scan",), ("status",),
                                     ("health",), ("audit",)])  # fmt: skip
def test_bad_endpoint_syntax_exits_2_naming_the_form(
    endpoint: str, message: str, command: tuple[str, ...]
) -> None:
    for given in (("--endpoint", endpoint), ("-e", endpoint)):
        result = run(*command, *given)
        assert result.exit_code == exitcodes.USAGE, result.output
        assert f"'{endpoint}' is not HOST:PORT: " in result.stderr and message in result.stderr
    from_env = CliRunner(env={"EDGEKV_ENDPOINT": endpoint}).invoke(main, list(command))
    assert from_env.exit_code == exitcodes.USAGE and message in from_env.stderr
    assert FakeClient.instances == []


def test_options_after_double_dash_are_values_and_the_message_says_so() -> None:
    result = run("put", "k", "--", "-5", *EP)
    assert result.exit_code == exitcodes.USAGE
    assert "unexpected extra arguments (--endpoint 127.0.0.1:7101)" in result.stderr
    assert "put the options before `--`, e.g. `edgekv put --endpoint HOST:PORT KEY -- -5`" in (
        result.stderr
    )
    assert FakeClient.instances == []
    # The documented form works for values, and for keys, that start with "-".
    assert run("put", *EP, "k", "--", "-5").exit_code == 0 and FakeClient.data[b"k"] == b"-5"
    assert run("put", *EP, "--", "-k", "--endpoint").exit_code == 0
    assert FakeClient.data[b"-k"] == b"--endpoint"
    assert run("get", *EP, "--", "-k").stdout_bytes == b"--endpoint"
    help_text = run("put", "--help").stdout
    assert "edgekv put --endpoint HOST:PORT KEY -- -5" in " ".join(help_text.split())


@pytest.mark.parametrize(
    ("error", "code"),
    [(errors.Unimplemented("h:7201: this endpoint does not serve the edgekv client API; it is "
                           "probably a node's peer port (peer_listen)"), exitcodes.ERROR),
     (errors.MessageTooLarge("the request is 5000010 bytes; the node accepts messages up to "
                             "4194304 bytes (limits.max_message_bytes)"), exitcodes.ERROR),
     (errors.Unauthenticated("no valid token: pass one with --token"), exitcodes.ERROR)],
)  # fmt: skip
def test_transport_errors_print_the_sdk_message_and_exit_code(error: Exception, code: int) -> None:
    FakeClient.error = error
    result = run("put", "k", "v", *EP)
    assert result.exit_code == code and result.stderr == f"edgekv: {error}\n"


def test_audit_offline_needs_config_and_node() -> None:
    result = run("audit", *EP, "--offline")
    assert result.exit_code == exitcodes.USAGE
    assert "--offline needs --config FILE and --node ID" in result.stderr
    assert "--endpoint" in run("audit", "--help").stdout


def test_bad_cluster_file_is_an_error_not_usage(tmp_path: Path) -> None:
    result = run("get", "k", "--config", str(tmp_path / "missing.yaml"), "--node", "n1")
    assert result.exit_code == exitcodes.ERROR
    assert result.stderr.startswith("edgekv: ") and "cannot read the cluster file" in result.stderr


def test_unreadable_ca_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def client_reading_ca(endpoint: str, **kwargs: Any) -> Any:
        Path(kwargs["tls_ca_file"]).read_bytes()

    monkeypatch.setattr("edgekv.client.Client", client_reading_ca)
    result = run("get", "k", *EP, "--ca-file", str(tmp_path / "nope.pem"))
    assert result.exit_code == exitcodes.ERROR
    assert result.stderr == f"edgekv: {tmp_path / 'nope.pem'}: No such file or directory\n"


# -- endpoint selection ----------------------------------------------------------


CLUSTER = """\
cluster: test
regions: [{name: local, location: [0.0, 0.0]}]
nodes:
  - {id: n1, region: local, listen: "127.0.0.1:7101", peer_listen: "127.0.0.1:7201", data_dir: d1}
  - {id: n2, region: local, listen: "127.0.0.1:7102", peer_listen: "127.0.0.1:7202", data_dir: d2}
security: {auth: {mode: disabled}}
"""


def test_config_and_node_pick_that_nodes_listen_address(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    assert run("get", "greeting", "--config", str(path), "--node", "n2").exit_code == 0
    client = FakeClient.instances[-1]
    assert client.endpoint == "127.0.0.1:7102"
    assert client.kwargs["discover"] is False and client.kwargs["timeout_s"] == 5.0
    unknown = run("get", "greeting", "--config", str(path), "--node", "n9")
    assert unknown.exit_code == exitcodes.ERROR and 'unknown node "n9"' in unknown.stderr


def test_endpoint_from_the_environment_and_timeout_passed() -> None:
    result = CliRunner(env={"EDGEKV_ENDPOINT": "10.1.2.3:7101"}).invoke(
        main, ["get", "greeting", "--timeout", "0.5"]
    )
    assert result.exit_code == 0
    assert FakeClient.instances[-1].endpoint == "10.1.2.3:7101"
    assert FakeClient.instances[-1].kwargs["timeout_s"] == 0.5


# -- commands ----------------------------------------------------------------------


def test_get_prints_raw_bytes_and_json() -> None:
    raw = run("get", "bin", *EP)
    assert raw.exit_code == 0 and raw.stdout_bytes == b"\xff\x00\x01"  # no newline added
    data = json.loads(run("get", "greeting", *EP, "--json").stdout)
    assert data == {
        "found": True, "key": "greeting", "key_encoding": "utf-8", "value": "hello",
        "value_encoding": "utf-8", "version": {"timestamp": 5, "origin": "n1"},
        "expires_at_ms": 0, "served_by": "n1",
    }  # fmt: skip
    assert json.loads(run("get", "bin", *EP, "--json").stdout)["value_encoding"] == "base64"


def test_get_missing_key_exits_3() -> None:
    result = run("get", "nope", *EP)
    assert result.exit_code == exitcodes.NOT_FOUND
    assert result.stderr == "edgekv: key 'nope' not found\n" and result.stdout == ""
    as_json = run("get", "nope", *EP, "--json")
    assert as_json.exit_code == exitcodes.NOT_FOUND
    assert json.loads(as_json.stdout) == {"found": False, "key": "nope", "key_encoding": "utf-8"}


def test_put_value_from_argument_stdin_or_dash() -> None:
    assert run("put", "a", "from-arg", *EP).exit_code == 0
    assert FakeClient.data[b"a"] == b"from-arg"
    piped = run("put", "b", *EP, "--ttl-ms", "1500", stdin=b"\x00binary\xff")
    assert piped.exit_code == 0 and FakeClient.data[b"b"] == b"\x00binary\xff"
    assert FakeClient.instances[-1].calls == [("put", (b"b", b"\x00binary\xff", 1500))]
    assert piped.stdout == "stored b (version 6@n1, served by n1)\n"
    assert run("put", "c", "-", *EP, stdin=b"dash").exit_code == 0
    assert FakeClient.data[b"c"] == b"dash"
    assert run("put", "d", *EP, "--", "-5").exit_code == 0 and FakeClient.data[b"d"] == b"-5"
    data = json.loads(run("put", "e", "v", *EP, "--json").stdout)
    assert data == {"key": "e", "key_encoding": "utf-8",
                    "version": {"timestamp": 6, "origin": "n1"}, "served_by": "n1"}  # fmt: skip


def test_delete_friendly_and_json() -> None:
    result = run("delete", "greeting", *EP)
    assert result.exit_code == 0 and result.stdout.startswith("deleted greeting (version 7@n1")
    assert b"greeting" not in FakeClient.data
    assert json.loads(run("delete", "x", *EP, "--json").stdout)["version"]["timestamp"] == 7


def test_scan_lines_keys_only_json_and_limit() -> None:
    FakeClient.data = {b"p/%d" % i: b"v\t%d" % i for i in range(5)} | {b"q": b"x"}
    lines = run("scan", "p/", *EP).stdout.splitlines()
    assert lines[0] == "p/0\tv\\t0" and len(lines) == 5  # the tab inside the value escaped
    assert run("scan", "p/", *EP, "--keys-only").stdout.split() == [f"p/{i}" for i in range(5)]
    limited = run("scan", "p/", *EP, "--limit", "2", "--json").stdout.splitlines()
    assert [json.loads(line)["key"] for line in limited] == ["p/0", "p/1"]
    assert FakeClient.instances[-1].calls[0] == ("scan", (b"p/", b"", b"", 2, False, 2))
    run("scan", *EP, "--start", "a", "--end", "b")
    assert FakeClient.instances[-1].calls[0] == ("scan", (b"", b"a", b"b", 500, False, None))


def test_status_table_and_json() -> None:
    table = run("status", *EP)
    assert table.exit_code == 0
    assert "node      n1 (local) in cluster test" in table.stdout
    assert "n1    local   127.0.0.1:7101  self" in table.stdout
    data = json.loads(run("status", *EP, "--json").stdout)
    assert data["node_id"] == "n1" and data["members"][0]["is_self"] is True


def test_doctor_works_offline() -> None:
    result = run("doctor")
    assert result.exit_code == 0
    assert result.stdout.startswith("edgekv      ") and "read path   " in result.stdout
    for name in ("python", "grpcio", "protobuf", "rocksdict"):
        assert f"\n{name}" in result.stdout
    data = json.loads(run("doctor", "--json").stdout)
    assert data["read_path"] in ("cython", "python") and data["rocksdict"]
    assert FakeClient.instances == []


def test_serve_parses_options_and_exits_with_the_nodes_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgekv.server.process

    seen: list[tuple[Any, ...]] = []

    def fake_serve(*args: Any) -> int:
        seen.append(args)
        return 7

    monkeypatch.setattr(edgekv.server.process, "serve", fake_serve)
    result = run("serve", "--config", "c.yaml", "--node", "n1", "--ready-file", "r.json",
                 "--log-level", "debug")  # fmt: skip
    assert result.exit_code == 7
    assert seen[0][:4] == ("c.yaml", "n1", "r.json", "debug")
    run("serve", "--config", "c.yaml", "--node", "n1")
    assert seen[1][:4] == ("c.yaml", "n1", None, "info")
    assert run("serve", "--config", "c", "--node", "n", "--log-level", "loud").exit_code == 2

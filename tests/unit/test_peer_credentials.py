"""The peer plane's identity check (edgekv.server.peer_auth) and its cluster-file keys."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from edgekv.config.loader import parse_config
from edgekv.config.model import ClusterConfig
from edgekv.errors import ConfigError, PermissionDenied, Unauthenticated
from edgekv.replication.refusals import CALL_REASONS, RECORD_REASONS, PeerRefusals
from edgekv.server.peer_auth import (
    CREDENTIAL_WINDOW_S,
    PEER_AUTH_METADATA,
    PEER_ID_METADATA,
    PeerAuthenticator,
    PeerCredentials,
    credential,
    peer_secret_for,
    read_peer_secret,
)

SECRET = b"s" * 40
DOC: dict[str, Any] = {
    "cluster": "demo",
    "regions": [{"name": "eu-west", "location": [50.1, 8.7]}],
    "nodes": [
        {"id": n, "region": "eu-west", "listen": f"127.0.0.1:{7101 + i}",
         "peer_listen": f"127.0.0.1:{7201 + i}", "data_dir": f"data/{n}"}
        for i, n in enumerate(("fra-1", "fra-2"))
    ],
}  # fmt: skip
TOKENS = {"mode": "tokens", "tokens": [{"name": "ops", "sha256": "ab" * 32, "scope": "admin"}]}


class _Context:
    """What PeerAuthenticator reads of a grpc.aio.ServicerContext."""

    def __init__(self, metadata: Any = (), names: list[bytes] | None = None) -> None:
        self._metadata = tuple(metadata)
        self._names = names

    def invocation_metadata(self) -> Any:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": self._names} if self._names else {}


def config(tmp_path: Path, **security: Any) -> ClusterConfig:
    doc = copy.deepcopy(DOC)
    doc["security"] = security
    return parse_config(doc, tmp_path)


def secret_authenticator() -> PeerAuthenticator:
    return PeerAuthenticator(cluster="demo", mutual_tls=False, secret=SECRET)


def test_credential_binds_secret_cluster_node_and_time() -> None:
    base = credential(SECRET, "demo", "fra-1", 1000)
    assert base == credential(SECRET, "demo", "fra-1", 1000)
    assert base.startswith("1000:")
    others = {
        credential(b"t" * 40, "demo", "fra-1", 1000),
        credential(SECRET, "other", "fra-1", 1000),
        credential(SECRET, "demo", "fra-2", 1000),
        credential(SECRET, "demo", "fra-1", 1001),
    }
    assert base not in others and len(others) == 4


def test_verify_accepts_the_credential_peers_send() -> None:
    sent = PeerCredentials(SECRET, "demo", "fra-2").metadata()
    secret_authenticator().verify("fra-2", _Context(sent))


def test_verify_without_credential_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated, match=r"security\.peer_secret_file"):
        secret_authenticator().verify("fra-2", _Context())


def test_verify_with_another_secret_is_unauthenticated() -> None:
    sent = PeerCredentials(b"x" * 40, "demo", "fra-2").metadata()
    with pytest.raises(Unauthenticated, match="does not hold this cluster's peer secret"):
        secret_authenticator().verify("fra-2", _Context(sent))


def test_verify_of_an_old_credential_names_the_window() -> None:
    stale = int(time.time() * 1000) - (CREDENTIAL_WINDOW_S + 5) * 1000
    md = [
        (PEER_ID_METADATA, "fra-2"),
        (PEER_AUTH_METADATA, credential(SECRET, "demo", "fra-2", stale)),
    ]
    with pytest.raises(Unauthenticated, match=r"the limit is 300000 ms \(peer credential window\)"):
        secret_authenticator().verify("fra-2", _Context(md))


def test_verify_of_a_credential_for_another_node_is_permission_denied() -> None:
    sent = PeerCredentials(SECRET, "demo", "fra-2").metadata()
    with pytest.raises(
        PermissionDenied, match="says it is 'fra-3' but its credential is for 'fra-2'"
    ):
        secret_authenticator().verify("fra-3", _Context(sent))


def test_verify_of_a_relabelled_credential_is_unauthenticated() -> None:
    (_, proof) = PeerCredentials(SECRET, "demo", "fra-2").metadata()
    with pytest.raises(Unauthenticated):
        secret_authenticator().verify("fra-3", _Context([(PEER_ID_METADATA, "fra-3"), proof]))


def test_verify_with_mutual_tls_binds_the_certificate_name() -> None:
    auth = PeerAuthenticator(cluster="demo", mutual_tls=True, secret=None)
    auth.verify("fra-2", _Context(names=[b"fra-2"]))
    with pytest.raises(PermissionDenied, match="certificate is for intruder"):
        auth.verify("fra-2", _Context(names=[b"intruder"]))
    with pytest.raises(Unauthenticated, match="without a client certificate"):
        auth.verify("fra-2", _Context())


def test_credentials_never_show_the_secret() -> None:
    assert SECRET.decode() not in repr(PeerCredentials(SECRET, "demo", "fra-1"))


def test_read_peer_secret_strips_and_checks_length(tmp_path: Path) -> None:
    path = tmp_path / "peer.secret"
    path.write_bytes(SECRET + b"\n")
    assert read_peer_secret(path) == SECRET
    path.write_bytes(b"short-secret\n")
    with pytest.raises(ConfigError) as excinfo:
        read_peer_secret(path)
    message = str(excinfo.value)
    assert message.startswith("security.peer_secret_file: ") and "12 bytes" in message
    assert "at least 32" in message and "short-secret" not in message
    with pytest.raises(ConfigError, match=r"security\.peer_secret_file: cannot read"):
        read_peer_secret(tmp_path / "missing")


def test_tokens_with_an_unauthenticated_peer_plane_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"security\.insecure_peer_plane: true"):
        peer_secret_for(config(tmp_path, auth=TOKENS), has_peers=True)
    # Without peers there is no peer plane to protect.
    assert peer_secret_for(config(tmp_path, auth=TOKENS), has_peers=False) is None
    # Auth disabled (local development) starts as before.
    assert peer_secret_for(config(tmp_path, auth={"mode": "disabled"}), has_peers=True) is None


def test_insecure_peer_plane_opt_in_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        got = peer_secret_for(
            config(tmp_path, auth=TOKENS, insecure_peer_plane=True), has_peers=True
        )
    assert got is None
    assert "THE PEER PLANE IS UNAUTHENTICATED" in caplog.text


def test_peer_secret_file_resolves_against_the_cluster_file(tmp_path: Path) -> None:
    (tmp_path / "peer.secret").write_bytes(SECRET)
    cfg = config(tmp_path, auth=TOKENS, peer_secret_file="peer.secret")
    assert cfg.security.peer_secret_file == tmp_path / "peer.secret"
    assert peer_secret_for(cfg, has_peers=True) == SECRET
    assert SECRET.decode() not in repr(cfg)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"insecure_peer_plane": "yes"},
         'security.insecure_peer_plane: expected true or false, got "yes"'),
        ({"peer_secret_file": ""}, "security.peer_secret_file: the path is empty"),
        ({"peer_secret_file": "s", "insecure_peer_plane": True},
         "security.insecure_peer_plane: true, but the peer plane is authenticated"),
    ],
)  # fmt: skip
def test_peer_plane_keys_validated(tmp_path: Path, security: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config(tmp_path, **security)
    assert str(excinfo.value).startswith(message)


def test_max_peer_concurrent_rpcs_must_fit_every_peer(tmp_path: Path) -> None:
    doc = copy.deepcopy(DOC)
    doc["limits"] = {"max_peer_concurrent_rpcs": 3}
    with pytest.raises(ConfigError) as excinfo:
        parse_config(doc, tmp_path)
    assert str(excinfo.value) == (
        "limits.max_peer_concurrent_rpcs is 3; with 1 peer a node needs at least 4 (4 per "
        "peer: a replication stream, a heartbeat, an anti-entropy call and a spare)"
    )
    doc["limits"] = {"max_peer_concurrent_rpcs": 4}
    assert parse_config(doc, tmp_path).limits.max_peer_concurrent_rpcs == 4


def test_refusals_start_at_zero_for_every_reason() -> None:
    refusals = PeerRefusals()
    assert refusals.calls == dict.fromkeys(CALL_REASONS, 0)
    assert refusals.records == dict.fromkeys(RECORD_REASONS, 0)
    refusals.call("keys")
    refusals.dropped("not_asked", 3)
    assert refusals.calls["keys"] == 1 and refusals.records["not_asked"] == 3


def test_cli_peer_secret_new_writes_a_private_file_once(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgekv.cli.main import main

    out = tmp_path / "peer.secret"
    first = CliRunner().invoke(main, ["peer-secret", "new", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(read_peer_secret(out)) == 64
    again = CliRunner().invoke(main, ["peer-secret", "new", "--out", str(out)])
    assert again.exit_code == 1 and "refusing to replace" in again.output

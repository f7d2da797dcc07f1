"""The cost of TLS and token auth on `get`: the same node, plaintext vs TLS + auth.

Run: .venv/bin/python -m bench.e2e.security [--samples 5000]

Starts one node without TLS and auth disabled, then the same data with TLS on the
client port and a bearer token checked on every call, and measures SDK get
p50/p99 against each (servers on CPU 1, client on CPU 0). Goal: <= 15% over plaintext.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

from bench.e2e.load import pin, row, timed_calls
from edgekv import Client, Put
from edgekv.local.launcher import start_node, write_cluster_file
from edgekv.server.auth import hash_token
from edgekv.tls import create_ca, issue_cert

TOKEN = "bench-token"


def measure(tmp: Path, name: str, secure: bool, samples: int) -> dict[str, float]:
    extra: dict[str, object] = {}
    ca = tmp / "pki" / "ca.pem"
    if secure:
        extra["security"] = {
            "tls": {"ca_file": str(ca), "cert_file": str(tmp / "pki" / "{node}.pem"),
                    "key_file": str(tmp / "pki" / "{node}-key.pem")},
            "auth": {"mode": "tokens", "tokens": [
                {"name": "bench", "sha256": hash_token(TOKEN).hex(), "scope": "write"}]},
        }  # fmt: skip
    path = write_cluster_file(tmp / name, extra=extra)
    node = start_node(path, "node-1", log_level="warning")
    try:
        pin(node.pid, 1)
        kwargs = {"token": TOKEN, "tls_ca_file": str(ca)} if secure else {}
        with Client(node.endpoint, discover=False, **kwargs) as client:  # type: ignore[arg-type]
            keys = [b"k%06d" % i for i in range(10_000)]
            for i in range(0, len(keys), 1000):
                client.write([Put(k, b"v" * 100) for k in keys[i : i + 1000]])
            rnd = random.Random(3)
            picks = [rnd.choice(keys) for _ in range(samples)]
            for i in range(500):
                client.get(picks[i])
            return row(name, timed_calls(lambda i: client.get(picks[i]), samples))
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    pin(0, 0)
    print(f"machine: {os.cpu_count()} CPUs; server on CPU 1, client on CPU 0")
    with tempfile.TemporaryDirectory(prefix="edgekv-sec-") as name:
        tmp = Path(name)
        create_ca(tmp / "pki")
        issue_cert(tmp / "pki", "node-1", ["127.0.0.1"])
        plain = measure(tmp, "get, plaintext, auth disabled", False, args.samples)
        secure = measure(tmp, "get, TLS + bearer token", True, args.samples)
        plain2 = measure(tmp, "get, plaintext again", False, args.samples)
    base_p50 = min(plain["p50"], plain2["p50"])
    base_p99 = min(plain["p99"], plain2["p99"])
    print(f"\nTLS + auth overhead: p50 {secure['p50'] / base_p50 - 1:+.1%}, "
          f"p99 {secure['p99'] / base_p99 - 1:+.1%} (goal <= +15%)")  # fmt: skip


if __name__ == "__main__":
    main()

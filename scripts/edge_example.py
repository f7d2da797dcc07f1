"""`make example`: the edge-function example in workerd against `make run`'s cluster.

Needs the cluster running (`make run` in another terminal). Runs the Worker
(examples/edge-function/, bundled by scripts/npm_setup.sh) in workerd with
EDGEKV_URL set to one PoP's HTTP endpoint (default iad-1, in us-east, so the
EU-pinned key is forwarded to Frankfurt), calls it once and prints the answer
and its Server-Timing, reads the key it wrote back from another region, then
keeps serving on http://127.0.0.1:8787 until Ctrl-C.

Run: python scripts/edge_example.py [--config deploy/local/cluster.yaml] [--node iad-1]
     [--port 8787]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import urllib.request
from pathlib import Path

from edgekv import Client
from edgekv.config.loader import load_config
from edgekv.local.launcher import sweep_ready_files
from edgekv.local.wait import wait_until
from edgekv.local.workerd import start_workerd, workerd_binary

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "local" / "cluster.yaml"
EXAMPLE = REPO / "examples" / "edge-function"


def ready_info(config: Path, node_id: str) -> dict[str, object]:
    """What the running node wrote in its ready file (`edgekv cluster up` puts it in run/)."""
    run_dir = config.parent / "run"
    if node_id not in sweep_ready_files(run_dir):
        sys.exit(
            f"edge example: {node_id} of {config} is not running; "
            f"start the cluster first with `make run` (in another terminal)"
        )
    info: dict[str, object] = json.loads((run_dir / f"{node_id}.ready.json").read_text())
    if not info.get("http_endpoint"):
        sys.exit(f"edge example: {node_id} serves no HTTP (set http_listen in {config})")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="the running cluster's file")
    parser.add_argument("--node", default="iad-1", help="the PoP the Worker calls")
    parser.add_argument("--port", type=int, default=8787, help="where workerd serves the Worker")
    args = parser.parse_args()
    config = load_config(args.config)
    info = ready_info(args.config, args.node)
    others = [n.id for n in config.nodes if n.id != args.node]
    token = os.environ.get("EDGEKV_TOKEN", "")
    edgekv_url = f"http://{info['http_endpoint']}"
    with Client(str(info["endpoint"]), discover=False, token=token or None) as c:
        if c.get("config/greeting") is None:
            c.put("config/greeting", "hello from edgekv")
        if c.get("eu/user/42") is None:  # make run's tour writes it; forwarded to eu-west
            c.put("eu/user/42", "Ada, Berlin")
    worker = start_workerd(
        workerd_binary(REPO),
        EXAMPLE / "config.capnp",
        env={"EDGEKV_URL": edgekv_url, "EDGEKV_TOKEN": token},
        port=args.port,
        log_path=args.config.parent / "run" / "workerd.log",
    )
    try:
        query = "pinned=eu/user/42&global=config/greeting&ttl_ms=60000"
        print(f"workerd serves the edge function at {worker.url} (EDGEKV_URL={edgekv_url})")
        print(f"$ curl -i '{worker.url}/?{query}'")
        with urllib.request.urlopen(f"{worker.url}/?{query}", timeout=30) as resp:
            print(f"HTTP {resp.status}\nServer-Timing: {resp.headers['Server-Timing']}")
            body = json.loads(resp.read())
        print(json.dumps(body, indent=2))
        other = others[0]
        endpoint = str(ready_info(args.config, other)["endpoint"])
        with Client(endpoint, discover=False, token=token or None) as c:
            key = body["wrote"]["key"]
            entry = wait_until(lambda: c.get(key), timeout_s=15, what=f"{key} at {other}")
            print(f"read back at {other}: {key} = {entry.value.decode()} (origin "
                  f"{entry.version.origin}, expires at {entry.expires_at_ms} ms)")  # fmt: skip
        print(f"workerd keeps serving {worker.url}/ (logs: {worker.log_path}); Ctrl-C stops it.")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        worker.stop()


if __name__ == "__main__":
    main()

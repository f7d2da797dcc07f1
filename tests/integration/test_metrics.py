"""Prometheus metrics of a real node: the text scrape parses and has the named series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import edgekv
from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until

pytestmark = pytest.mark.integration


def test_scrape_has_request_replication_storage_and_clock_series(tmp_path: Path) -> None:
    path = write_cluster_file(
        tmp_path,
        regions=(("r1", 0.0, 0.0), ("r2", 1.0, 1.0)),
        nodes=(("a-1", "r1"), ("b-1", "r2")),
        extra={"replication": {"heartbeat_interval_s": 0.2}},
        metrics=True,
    )
    with LocalCluster(path) as cluster:
        cluster.start()
        port = cluster.nodes["a-1"].info["metrics_port"]
        assert port
        with Client(cluster.endpoint("a-1"), discover=False) as c:
            c.put("m/1", "v")
            c.get("m/1")
            c.get("m/none")
            with pytest.raises(edgekv.InvalidArgument):
                c.put("", "bad")

        # A call is counted as its answer goes out, so the last ones may land a moment
        # after the client has its answer: scrape until the Put's duration is there.
        def scraped() -> dict[str, Any]:
            m = scrape_metrics(port)
            buckets = m.get("edgekv_request_duration_seconds_bucket", [])
            codes = [labels.get("code") for labels, _ in m.get("edgekv_requests_total", [])]
            counted = "INVALID_ARGUMENT" in codes  # the last call: the refused put
            return m if counted and any(lb.get("method") == "Put" for lb, _ in buckets) else {}

        m = wait_until(scraped, timeout_s=10, interval_s=0.1, what="the last calls counted")
        ok_gets = [v for labels, v in m["edgekv_requests_total"]
                   if labels == {"service": "KV", "method": "Get", "code": "OK"}]  # fmt: skip
        assert ok_gets == [2.0]
        assert any(
            labels.get("code") == "INVALID_ARGUMENT" for labels, _ in m["edgekv_requests_total"]
        )
        assert any(
            labels.get("method") == "Put"
            for labels, _ in m["edgekv_request_duration_seconds_bucket"]
        )
        for name in (
            "edgekv_replication_lag_entries", "edgekv_replication_lag_seconds",
            "edgekv_replication_inflight_bytes", "edgekv_peer_reachable", "edgekv_peer_rtt_seconds",
            "edgekv_antientropy_repaired_records_total", "edgekv_rocksdb_size_bytes",
            "edgekv_keys_estimate", "edgekv_clock_max_skew_seen_seconds",
            "edgekv_clock_max_skew_allowed_seconds", "edgekv_clock_skew_rejections_total",
            "edgekv_gc_collected_records_total", "edgekv_gc_horizon_timestamp_seconds",
            "edgekv_antientropy_synced_from_timestamp_seconds",
        ):  # fmt: skip
            assert name in m, f"{name} missing from the scrape"
        assert m["edgekv_replication_lag_entries"][0][0] == {"peer": "b-1"}
        assert m["edgekv_clock_max_skew_allowed_seconds"][0][1] == 0.5
        # edgekv status reads them for humans.
        out = subprocess.run(
            [sys.executable, "-m", "edgekv.cli.main", "status", "--endpoint",
             cluster.endpoint("a-1")], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "metrics   http://127.0.0.1:" in out.stdout and "INVALID_ARGUMENT 1" in out.stdout
        assert "gc        0 dead records collected; nothing collectable yet" in out.stdout

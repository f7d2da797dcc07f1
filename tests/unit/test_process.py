"""The `edgekv serve` process entry: what it prints when it cannot start."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekv.server.process import serve

BAD_REGION = """\
cluster: demo
regions:
  - name: eu-west
    location: [50.1, 8.7]
nodes:
  - id: fra-1
    region: eu-wst
    listen: 127.0.0.1:7101
    data_dir: data/fra-1
security:
  auth:
    mode: disabled
"""


def test_serve_bad_cluster_file_names_the_path_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_REGION)
    assert serve(str(path), "fra-1") == 1
    err = capsys.readouterr().err
    assert err == f'edgekv: {path}: nodes[0].region: unknown region "eu-wst" (known: eu-west)\n'


def test_serve_unknown_node_names_the_file_and_the_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(BAD_REGION.replace("eu-wst", "eu-west"))
    assert serve(str(path), "nope") == 1
    err = capsys.readouterr().err
    assert err == f'edgekv: {path}: unknown node "nope"; the cluster file defines: fra-1\n'

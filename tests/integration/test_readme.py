"""The README's examples run as printed (#16): every ``python`` and ``sh`` block and the
sample cluster file, against real nodes.

The examples name the fixed ports of ``deploy/local/cluster.yaml`` (7101-7103); the test
starts the same cluster on free ports and rewrites only the addresses (and the path of
the cluster file) before running each block, so the README cannot rot unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgekv.config.loader import load_config
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import free_ports

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)
LOCAL_CLUSTER = ROOT / "deploy" / "local" / "cluster.yaml"

pytestmark = pytest.mark.integration


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


def relocate(source: Path, directory: Path) -> tuple[Path, dict[str, str]]:
    """``source`` rewritten into ``directory`` with free ports; returns old -> new addresses."""
    doc = yaml.safe_load(source.read_text())
    ports = iter(free_ports(3 * len(doc["nodes"])))
    moved: dict[str, str] = {}
    for node in doc["nodes"]:
        for field in ("listen", "peer_listen", "http_listen"):
            if field in node:
                new = f"127.0.0.1:{next(ports)}"
                moved[node[field]] = new
                node[field] = new
        node["data_dir"] = str(directory / "data" / node["id"])
    path = directory / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, moved


def substitute(text: str, moved: dict[str, str], replacements: dict[str, str]) -> str:
    for old, new in {**moved, **replacements}.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, str]]]:
    """deploy/local/cluster.yaml (the cluster `make run` starts), on free ports."""
    directory = tmp_path_factory.mktemp("readme-cluster")
    path, moved = relocate(LOCAL_CLUSTER, directory)
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield path, moved


def run(command: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_readme_has_the_blocks_this_test_runs() -> None:
    assert len(blocks("python")) >= 2 and len(blocks("sh")) >= 2
    assert any(b.startswith("cluster:") for b in blocks("yaml"))


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block_runs(
    index: int, local_cluster: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, moved = local_cluster
    script = tmp_path / f"readme_{index}.py"
    # The embedded-reads example names make run's data directory: point it at this cluster's.
    data = {"deploy/local/data/": f"{path.parent / 'data'}/"}
    script.write_text(substitute(blocks("python")[index], moved, data))
    proc = run([sys.executable, str(script)], tmp_path, f"README python block {index}")
    if "resume_token=" in script.read_text():  # the resumable Watch example (#13)
        assert "resumed at: b'cart/4'" in proc.stdout, proc.stdout
    elif "watch(" in script.read_text():  # the Watch example prints what it saw
        assert "changed: b'cart/2' b'v2'" in proc.stdout, proc.stdout
        assert "changed: b'cart/1' b'' deleted" in proc.stdout, proc.stdout


def test_readme_tour_runs(local_cluster: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, moved = local_cluster
    tour = next(b for b in blocks("sh") if "edgekv put greeting" in b)
    lines = [line for line in tour.splitlines() if line.strip() and "export PATH" not in line]
    outputs = []
    for line in lines:
        command = substitute(line, moved, {"deploy/local/cluster.yaml": str(path)})
        outputs.append(run(["bash", "-c", command], tmp_path, line).stdout)
    assert any("hello" in out for out in outputs), outputs
    assert any('"served_by": "fra-1"' in out for out in outputs), outputs


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_http_door_examples_run(
    local_cluster: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, moved = local_cluster
    block = next(b for b in blocks("sh") if "/v1/kv/curl/greeting" in b)
    outputs = [
        run(["bash", "-c", substitute(line, moved, {})], tmp_path, line).stdout
        for line in block.splitlines()
        if line.strip()
    ]
    assert "hello from curl" in outputs[1] and "edgekv-served-by: fra-1" in outputs[1].lower()
    assert '"name": "curl/greeting"' in outputs[2]
    assert "edgekv-served-by: fra-1" in outputs[3].lower() and "forward;dur=" in outputs[3]
    assert '"value": "aGVsbG8gZnJvbSBjdXJs"' in outputs[4]


def test_readme_security_commands_run(tmp_path: Path) -> None:
    sample = next(b for b in blocks("yaml") if b.startswith("cluster:"))
    (tmp_path / "cluster.yaml").write_text(sample)
    commands = next(b for b in blocks("sh") if "edgekv certs init" in b)
    for line in commands.splitlines():
        if line.strip():
            run(["bash", "-c", line], tmp_path, line)
    assert (tmp_path / "pki" / "fra-1.pem").exists()


def test_readme_sample_cluster_file_starts_a_cluster(tmp_path: Path) -> None:
    sample = next(b for b in blocks("yaml") if b.startswith("cluster:"))
    (tmp_path / "sample.yaml").write_text(sample)
    load_config(tmp_path / "sample.yaml")  # valid exactly as printed
    path, _ = relocate(tmp_path / "sample.yaml", tmp_path)
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        endpoint = cluster.endpoint("iad-1")
        run(["edgekv", "put", "eu/x", "1", "--endpoint", endpoint], tmp_path, "put")
        got = run(["edgekv", "get", "eu/x", "--endpoint", endpoint, "--json"], tmp_path, "get")
        assert '"served_by": "fra-1"' in got.stdout

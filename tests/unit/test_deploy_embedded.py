"""The Kubernetes overlay for embedded reads: a read-only sidecar beside a PoP (issue #14)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgekv.client.embedded import ENV_HINT

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAY = K8S.parent / "k8s-embedded"
K8S_VERSION = "1.37.0"  # as tests/unit/test_deploy.py
DATA_DIR = "/var/lib/edgekv"


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _patched() -> tuple[dict[str, Any], dict[str, Any]]:
    """The eu-west StatefulSet with the overlay's patch merged (containers by name)."""
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (patch_ref,) = kustomization["patches"]
    (patch,) = _load(OVERLAY / patch_ref["path"])
    target = patch_ref["target"]
    bases = [d for d in _load(K8S / "region-eu-west.yaml") if d["kind"] == target["kind"]]
    (base,) = [d for d in bases if d["metadata"]["name"] == target["name"]]
    merged = copy.deepcopy(base)
    containers = merged["spec"]["template"]["spec"]["containers"]
    names = {c["name"] for c in containers}
    for added in patch["spec"]["template"]["spec"]["containers"]:
        assert added["name"] not in names
        containers.append(added)
    return merged, kustomization


def test_overlay_builds_on_the_base_and_validates() -> None:
    merged, kustomization = _patched()
    assert kustomization["resources"] == ["../k8s"]
    kubernetes_validate.validate(merged, K8S_VERSION, strict=True)


def test_sidecar_mounts_the_nodes_volume_and_is_hardened() -> None:
    merged, _ = _patched()
    pod = merged["spec"]["template"]["spec"]
    node, app = pod["containers"]
    node_data = next(m for m in node["volumeMounts"] if m["mountPath"] == DATA_DIR)
    app_data = next(m for m in app["volumeMounts"] if m["name"] == node_data["name"])
    # Not readOnly: rocksdict rewrites rocksdict-config.json when it opens the secondary
    # (tests/unit/test_embedded_reader.py checks that nothing else is written).
    assert app_data["mountPath"] == DATA_DIR and not app_data.get("readOnly", False)
    env = {e["name"]: e for e in app["env"]}
    assert env[ENV_HINT]["value"] == app_data["mountPath"]
    tmp = next(m for m in app["volumeMounts"] if m["mountPath"] == "/tmp")
    assert tmp["name"] in {v["name"] for v in pod["volumes"]}  # scratch: root fs is read-only
    assert app["securityContext"]["readOnlyRootFilesystem"] is True
    assert app["securityContext"]["allowPrivilegeEscalation"] is False
    assert app["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_overlay_with_the_sidecar() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    names = {
        name: [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
        for name, sts in sets.items()
    }
    assert sorted(names["edgekv-eu-west"]) == ["app", "edgekv"]
    assert names["edgekv-us-east"] == ["edgekv"]

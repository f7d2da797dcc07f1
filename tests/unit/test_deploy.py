"""Deployment files: Kubernetes manifests against the schemas, systemd and Docker checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgekv.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCS = documents()


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_manifest_valid_against_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret-tls.example.yaml"}
    assert listed == files


def test_configmap_cluster_file_is_valid_and_matches_statefulsets() -> None:
    cm = next(d for _, d in DOCS if d["kind"] == "ConfigMap")
    config = parse_config(yaml.safe_load(cm["data"]["cluster.yaml"]), Path("/"))
    assert config.security.tls is not None and config.security.auth is not None
    assert config.security.auth.mode == "tokens"
    sets = {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == "StatefulSet"}
    for node in config.nodes:
        assert f"{node.id.rsplit('-', 1)[0]}" in sets  # pod name = node id
        assert node.listen.startswith(f"{node.id}.edgekv-{node.region}.edgekv.svc")


@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS if d["kind"] == "StatefulSet"], ids=lambda d: d["metadata"]["name"]
)
def test_statefulset_is_pinned_hardened_and_probed(doc: dict[str, Any]) -> None:
    region = doc["metadata"]["labels"]["edgekv.io/region"]
    pod = doc["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expr = term["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert (expr["key"], expr["values"]) == ("topology.kubernetes.io/region", [region])
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][:2] == ["edgekv", "health"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/edgekv/cluster.yaml", "/etc/edgekv/tls", "/var/lib/edgekv"} <= mounts
    assert doc["spec"]["serviceName"] == f"edgekv-{region}"
    kinds = {d["kind"] for n, d in DOCS if n.startswith(f"region-{region}.yaml")}
    assert {"Service", "StatefulSet", "PodDisruptionBudget"} <= kinds


def test_systemd_unit_is_hardened() -> None:
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (ROOT / "deploy" / "systemd" / "edgekv@.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM", "User": "edgekv", "ReadWritePaths": "/var/lib/edgekv",
    }.items():  # fmt: skip
        assert lines.get(key) == value, key
    assert "--node %i" in lines["ExecStart"]


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")

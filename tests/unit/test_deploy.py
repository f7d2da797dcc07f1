"""Deployment files: Kubernetes manifests against the schemas, systemd and Docker checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgekv.config.loader import parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The newest schema kubernetes-validate 1.37 bundles (it works offline).
K8S_VERSION = "1.37.0"
NAMESPACE = "edgekv"
REGIONS = ("eu-west", "us-east", "ap-northeast")
PORTS = {"client": 7101, "peer": 7201, "metrics": 9100}
CONFIG_PATH = "/etc/edgekv/cluster.yaml"
TLS_DIR = "/etc/edgekv/tls"
DATA_DIR = "/var/lib/edgekv"
# $(VAR) references, which Kubernetes expands in some fields and not in others.
VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Doc = dict[str, Any]


def documents() -> list[tuple[str, Doc]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCS = documents()
STATEFULSETS = [d for _, d in DOCS if d["kind"] == "StatefulSet"]


def of_kind(kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


def cluster_file_text() -> str:
    return str(of_kind("ConfigMap")["edgekv-cluster"]["data"]["cluster.yaml"])


def container(sts: Doc) -> Doc:
    (only,) = sts["spec"]["template"]["spec"]["containers"]
    return dict(only)


# -- Kubernetes ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_manifest_valid_against_kubernetes_schema(name: str, doc: Doc) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_namespaced_object_is_in_the_edgekv_namespace() -> None:
    assert list(of_kind("Namespace")) == [NAMESPACE]
    for name, doc in DOCS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, name


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret-tls.example.yaml"}
    assert sorted(listed) == sorted(files)
    assert "secret-tls.example.yaml" not in listed  # a template, never applied as is


def test_secret_template_is_the_tls_secret_the_pods_mount() -> None:
    secret = of_kind("Secret")["edgekv-tls"]
    assert "ca.pem" in secret["stringData"]
    text = (K8S / "secret-tls.example.yaml").read_text()
    assert "edgekv certs init" in text and "kubectl" in text and "create secret generic" in text


def test_configmap_cluster_file_parses() -> None:
    config = parse_config(yaml.safe_load(cluster_file_text()), Path("/"))
    assert config.security.tls is not None and config.security.auth is not None
    assert config.security.auth.mode == "tokens"
    assert {t.scope for t in config.security.auth.tokens} == {"write", "admin"}
    assert (
        str(config.security.tls.cert_for("edgekv-eu-west-0")) == f"{TLS_DIR}/edgekv-eu-west-0.pem"
    )
    assert [(r.prefix, r.regions) for r in config.placement] == [(b"eu/", ("eu-west",))]


def test_cluster_file_nodes_are_the_pods_at_their_dns_names() -> None:
    doc = yaml.safe_load(cluster_file_text())  # raw, so this holds whatever parse_config does
    assert {r["name"] for r in doc["regions"]} == set(REGIONS)
    sets = of_kind("StatefulSet")
    pods = {
        f"{name}-{i}": sts for name, sts in sets.items() for i in range(sts["spec"]["replicas"])
    }
    assert {n["id"] for n in doc["nodes"]} == set(pods)
    for node in doc["nodes"]:
        sts = pods[node["id"]]
        region = sts["metadata"]["labels"]["edgekv.io/region"]
        host = f"{node['id']}.{sts['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
        assert node["region"] == region
        assert node["listen"] == f"{host}:{PORTS['client']}"
        assert node["peer_listen"] == f"{host}:{PORTS['peer']}"
        assert node["metrics_listen"] == f"0.0.0.0:{PORTS['metrics']}"
        assert node["data_dir"] == DATA_DIR


@pytest.mark.parametrize("region", REGIONS)
def test_region_file_has_headless_and_client_services_and_a_pdb(region: str) -> None:
    docs = {
        (d["kind"], d["metadata"]["name"]): d for n, d in DOCS if n.startswith(f"region-{region}")
    }
    sts = docs[("StatefulSet", f"edgekv-{region}")]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    headless = docs[("Service", sts["spec"]["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["ports"]} == PORTS
    assert headless["selector"].items() <= pod_labels.items()

    client = docs[("Service", f"edgekv-{region}-client")]["spec"]
    assert client.get("clusterIP") != "None"
    assert [p["port"] for p in client["ports"]] == [PORTS["client"]]
    assert client["selector"].items() <= pod_labels.items()

    pdb = docs[("PodDisruptionBudget", f"edgekv-{region}")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    # One replica: maxUnavailable 0 (or minAvailable 1) would block every node drain.
    assert pdb.get("maxUnavailable", 0) >= 1 and "minAvailable" not in pdb


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda d: d["metadata"]["name"])
def test_statefulset_is_pinned_hardened_and_probed(sts: Doc) -> None:
    region = sts["metadata"]["labels"]["edgekv.io/region"]
    assert sts["metadata"]["name"] == f"edgekv-{region}" and sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    c = container(sts)

    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    for term in required["nodeSelectorTerms"]:  # terms are ORed: each one must pin the region
        assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": [region]} in (
            term["matchExpressions"]
        )

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 10001) != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(c["resources"]["requests"]) >= {"cpu", "memory"}
    assert set(c["resources"]["limits"]) >= {"cpu", "memory"}
    assert pod["terminationGracePeriodSeconds"] == 30

    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORTS["metrics"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == PORTS

    assert c["image"] == "edgekv:0.1.0"
    assert c["command"][:6] == ["edgekv", "serve", "--config", CONFIG_PATH, "--node", "$(POD_NAME)"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda d: d["metadata"]["name"])
def test_statefulset_mounts_config_tls_and_data(sts: Doc) -> None:
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(sts)["volumeMounts"]}

    config = mounts[CONFIG_PATH]
    assert config["subPath"] == "cluster.yaml" and config.get("readOnly") is True
    assert volumes[config["name"]]["configMap"]["name"] in of_kind("ConfigMap")

    tls = mounts[TLS_DIR]
    assert tls.get("readOnly") is True
    assert volumes[tls["name"]]["secret"]["secretName"] == "edgekv-tls"

    data = mounts[DATA_DIR]
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert data["name"] in claims and data["name"] not in volumes


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda d: d["metadata"]["name"])
def test_probes_run_edgekv_health_for_this_pod(sts: Doc) -> None:
    c = container(sts)
    static_env = {e["name"] for e in c["env"] if "value" in e}
    for kind in ("readinessProbe", "livenessProbe"):
        command = c[kind]["exec"]["command"]
        text = " ".join(command)
        assert "edgekv health" in text and f"--config {CONFIG_PATH}" in text, kind
        # The kubelet expands $(VAR) in exec probes only for env vars with a literal value;
        # a downward-API one such as POD_NAME would become "" (kubernetes#40846).
        assert set(VAR_REF.findall(text)) <= static_env, kind
        assert '--node "$POD_NAME"' in text and command[:2] == ["sh", "-c"], kind


# -- systemd -------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in (DEPLOY / "systemd" / "edgekv@.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_runs_the_instance_node() -> None:
    s = unit_settings()
    assert s["ExecStart"][0].startswith(
        "/opt/edgekv/.venv/bin/edgekv serve --config /etc/edgekv/cluster.yaml --node %i"
    )
    for key, value in {
        "User": "edgekv", "StateDirectory": "edgekv", "KillSignal": "SIGTERM",
        "TimeoutStopSec": "30", "Restart": "on-failure", "LimitNOFILE": "65536",
        "WantedBy": "multi-user.target",
    }.items():  # fmt: skip
        assert s.get(key) == [value], key


def test_systemd_unit_is_hardened() -> None:
    s = unit_settings()
    for key in (
        "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute",
    ):  # fmt: skip
        assert s.get(key) == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["ReadWritePaths"] == [DATA_DIR]
    assert "@system-service" in s["SystemCallFilter"]


# -- Docker --------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[stages[-1] :]
    assert any(line.startswith("COPY --from=") for line in final)
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "EXPOSE 7101 7201 9100" in final
    assert 'ENTRYPOINT ["edgekv"]' in final
    assert f"VOLUME {DATA_DIR}" in final


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "build", "deploy/local/data"} <= entries

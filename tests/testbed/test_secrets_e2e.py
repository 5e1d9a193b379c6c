"""No secret leaks (issue 16): a small full run (one pod and one gang, submitted, bound, ended) with the
bridge as a real process; every log line, every event in the namespace and the metrics page are
searched for the Slurm JWT and the JWT key (raw, hex, base64, base64url), and for any JWT at all.

The bridge runs with a scheduler name and a namespace of its own, so other tests' bridges on the shared
testbed never touch these pods.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.testbed.bridge_harness import BridgeProcess, Cluster, bridge_config, pod_manifest, unique, wait_for
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.slurm_default_only]

NAMESPACE = "hardening-secrets"
SCHEDULER = "hardening-secrets-scheduler"
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
METRICS_PORTS = {"jwt-key": 17572, "static-token": 17573}
# Any JWT: three base64url parts, the first two JSON objects ("{" is "eyJ" in base64).
ANY_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def secret_forms(secret: bytes) -> dict[str, bytes]:
    """The ways a secret could show up in text."""
    b64 = base64.b64encode(secret)
    return {
        "raw": secret,
        "hex": secret.hex().encode(),
        "base64": b64,
        "base64 unpadded": b64.rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
    }


def leaks(text: bytes, secrets: dict[str, bytes]) -> list[str]:
    found = [name for name, value in secrets.items() if value and value in text]
    found += [f"a JWT ({m.group()[:12].decode()}...)" for m in ANY_JWT.finditer(text)]
    return found


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    return Cluster(kube, slurm_cluster)


@pytest.fixture(params=["jwt-key", "static-token"])
def bridge(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    slurm_cluster: SlurmCluster,
    kube: KubeCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BridgeProcess]:
    how: str = request.param
    cluster_id = f"hardening-secrets-{how}"
    config = bridge_config(slurm_cluster, kube, cluster_id=cluster_id, metrics_port=METRICS_PORTS[how])
    config["scheduler_name"] = SCHEDULER
    config["namespaces"] = [NAMESPACE]
    if how == "static-token":
        del config["slurm"]["jwt_key_file"]
        config["slurm"]["token"] = slurm_cluster.token
    process = BridgeProcess(config, tmp_path_factory.mktemp(f"secrets-{how}"))
    process.start()
    yield process
    _clear(cluster)
    process.stop()


def _clear(cluster: Cluster) -> None:
    kubectl = cluster.kube.kubectl
    kubectl("-n", NAMESPACE, "delete", "pods", "--all", "--wait=false", check=False)
    kubectl("-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)
    try:
        wait_for("pods gone", lambda: not kubectl("-n", NAMESPACE, "get", "pods", "-o", "name"), 30)
    except AssertionError:
        for name in kubectl("-n", NAMESPACE, "get", "pods", "-o", "name", check=False).split():
            patch = '{"metadata":{"finalizers":null}}'
            kubectl("-n", NAMESPACE, "patch", name, "--type=merge", "-p", patch, check=False)


def _pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    manifest = pod_manifest(name, namespace=NAMESPACE, labels=labels, cpu="1", memory="100Mi")
    manifest["spec"]["schedulerName"] = SCHEDULER
    manifest["metadata"]["annotations"] = {"testbed.slurm-bridge.io/run-duration": "3s"}
    return manifest


def _node_of(cluster: Cluster, name: str) -> str:
    pod = cluster.pod(name, NAMESPACE)
    return str((pod or {}).get("spec", {}).get("nodeName") or "")


def _ended(cluster: Cluster, name: str) -> bool:
    pod = cluster.pod(name, NAMESPACE)
    return pod is None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def test_no_log_line_event_or_metric_shows_a_secret(
    cluster: Cluster, bridge: BridgeProcess, slurm_cluster: SlurmCluster
) -> None:
    started = time.monotonic()
    single, group = unique("secret-pod"), unique("secret-gang")
    members = [f"{group}-{i}" for i in range(2)]
    manifests = [
        _pod(single),
        {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {"name": group, "namespace": NAMESPACE},
            "spec": {"minMember": 2},
        },
        *(_pod(m, {POD_GROUP_LABEL: group}) for m in members),
    ]
    cluster.kube.kubectl(
        "create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    )
    names = [single, *members]
    wait_for("all bound", lambda: all(_node_of(cluster, n) for n in names), 60)
    # run-duration 3s: the pods end on their own, and their jobs with them
    wait_for("all ended", lambda: all(_ended(cluster, n) for n in names), 60)
    bridge.assert_alive()
    metrics = httpx.get(f"http://{bridge.config['metrics_listen_address']}/metrics", timeout=10).content
    events = cluster.kube.kubectl("-n", NAMESPACE, "get", "events", "-o", "json").encode()
    assert b"SlurmJobSubmitted" in events and b"slurm_bridge" in metrics  # what is searched is real
    _clear(cluster)
    bridge.stop()  # its shutdown lines too
    logs = bridge.log_path.read_bytes()
    assert b"Scheduled" in logs or b"Bind" in logs

    secrets = {f"key {k}": v for k, v in secret_forms(Path(slurm_cluster.jwt_key_file).read_bytes()).items()}
    secrets["static token"] = slurm_cluster.token.encode()
    secrets["token file"] = slurm_cluster.token_file.read_bytes().strip()
    assert leaks(b"Authorization: " + secrets["static token"], secrets) != []  # the search finds one
    for where, text in [("bridge log", logs), ("events", events), ("metrics page", metrics)]:
        assert leaks(text, secrets) == [], f"secret in the {where}"
    took = time.monotonic() - started
    print(f"{len(logs.splitlines())} log lines, the events and the metrics page searched; run {took:.1f} s")

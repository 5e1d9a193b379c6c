"""The bridge FROM THE CONTAINER IMAGE against the testbed: built from the Dockerfile by the testbed's
dockerd (layers cached), run with host networking, read-only root, as its non-root user, its config,
kubeconfig and JWT key mounted read-only. A single pod and a gang go through it on every Slurm version.

It cannot fight the bridges other tests run: its own scheduler name (the pod watch filters on it), its own
namespace (image-e2e), cluster id (placeholder jobs are marked with it) and leader-election Lease."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tests.testbed.bridge_harness import Cluster, bridge_config, phase, pod_manifest, unique, wait_for
from tests.testbed.docker_harness import IMAGE, build_image, docker, docker_env, readable_copy
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

if TYPE_CHECKING:
    from tests.testbed_env import Testbed

pytestmark = pytest.mark.testbed

NAMESPACE = "image-e2e"
SCHEDULER = "image-e2e-scheduler"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
_PORTS = {"22.05": 18190, "24.11": 18191, "26.05": 18192}  # 181xx: the image and compose tests
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"


@pytest.fixture(scope="session")
def image(testbed: Testbed) -> dict[str, str]:
    env = docker_env(testbed.env)
    seconds = build_image(env)
    print(f"[image-e2e] docker build {IMAGE}: {seconds:.1f} s")
    return env


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))  # idempotent
    wait_for(
        "default ServiceAccount", lambda: kube.kubectl("-n", NAMESPACE, "get", "sa", "default", check=False)
    )
    kube.kubectl("apply", "-f", str(CRD))  # idempotent; before the bridge starts (it looks once)
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    return Cluster(kube, slurm_cluster)


class BridgeContainer:
    def __init__(self, env: dict[str, str], name: str, config_dir: Path, port: int) -> None:
        self.env, self.name, self.config_dir, self.port = env, name, config_dir, port

    def start(self) -> None:
        docker(self.env, "rm", "-f", self.name, check=False)
        docker(
            self.env,
            "run",
            "-d",
            "--name",
            self.name,
            "--network",
            "host",
            "--read-only",
            # the Kubernetes client writes a kubeconfig's embedded certificates to temporary files
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            f"{self.config_dir}:/etc/slurm-bridge:ro",
            IMAGE,
            "run",
            "--config",
            "/etc/slurm-bridge/bridge.yaml",
            "--log-level",
            "DEBUG",
        )

    def running(self) -> bool:
        return (
            docker(self.env, "inspect", "-f", "{{.State.Running}}", self.name, check=False).strip() == "true"
        )

    def logs(self) -> str:
        return docker(self.env, "logs", "--tail", "60", self.name, check=False, stderr=True)

    def stop(self) -> None:
        docker(self.env, "stop", "-t", "15", self.name, check=False)
        # kept for a failed run: the container goes, its log stays beside its config
        (self.config_dir.parent / f"{self.name}.log").write_text(
            docker(self.env, "logs", self.name, check=False, stderr=True)
        )
        docker(self.env, "rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def bridge(
    image: dict[str, str],
    cluster: Cluster,
    slurm_cluster: SlurmCluster,
    kube: KubeCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BridgeContainer]:
    v = slurm_cluster.version.replace(".", "")
    config_dir = tmp_path_factory.mktemp(f"image-e2e-{v}")
    config_dir.chmod(0o755)
    readable_copy(kube.kubeconfig, config_dir / "kubeconfig")
    readable_copy(slurm_cluster.jwt_key_file, config_dir / "jwt.key")
    config: dict[str, Any] = bridge_config(
        slurm_cluster, kube, cluster_id=f"image-e2e-{v}", metrics_port=_PORTS[slurm_cluster.version]
    )
    config["scheduler_name"] = SCHEDULER
    config["namespaces"] = [NAMESPACE]
    config["slurm"]["jwt_key_file"] = "/etc/slurm-bridge/jwt.key"
    config["kubernetes"]["kubeconfig"] = "/etc/slurm-bridge/kubeconfig"
    config["leader_election"]["lease_name"] = f"image-e2e-{v}"
    (config_dir / "bridge.yaml").write_text(yaml.safe_dump(config))
    os.chmod(config_dir / "bridge.yaml", 0o444)
    container = BridgeContainer(
        image, f"slurm-bridge-image-e2e-{v}", config_dir, _PORTS[slurm_cluster.version]
    )
    container.start()
    yield container
    _clear(cluster)
    container.stop()


def _pods(cluster: Cluster, selector: str = "e2e=image") -> list[dict[str, Any]]:
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json", check=False)
    items: list[dict[str, Any]] = json.loads(out or '{"items": []}')["items"]
    return items


def _clear(cluster: Cluster) -> None:
    kubectl = cluster.kube.kubectl
    kubectl("-n", NAMESPACE, "delete", "pods", "-l", "e2e=image", "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("pods gone", lambda: not _pods(cluster), 40)
    for pod in _pods(cluster):  # whatever a failed test left behind
        name = pod["metadata"]["name"]
        kubectl(
            "-n",
            NAMESPACE,
            "patch",
            "pod",
            name,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
    kubectl("-n", NAMESPACE, "delete", "pods", "-l", "e2e=image", "--grace-period=0", "--force", check=False)
    kubectl("-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)


def _pod(name: str, job_name: str, group: str | None = None) -> dict[str, Any]:
    labels = {"e2e": "image"}
    annotations = {"slinky.slurm.net/job-name": job_name}
    if group:
        labels[POD_GROUP_LABEL] = group
    manifest = pod_manifest(name, annotations=annotations, namespace=NAMESPACE, labels=labels)
    manifest["spec"]["schedulerName"] = SCHEDULER
    return manifest


def _node(cluster: Cluster, name: str) -> str:
    pod = cluster.pod(name, NAMESPACE)
    return str((pod or {}).get("spec", {}).get("nodeName") or "")


def _active(cluster: Cluster, job_name: str) -> list[dict[str, str]]:
    return [j for j in cluster.jobs_named(job_name) if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]


def test_image_runs_help_as_non_root(image: dict[str, str]) -> None:
    out = docker(image, "run", "--rm", "--network", "host", IMAGE, "--help")
    assert "usage: slurm-bridge" in out and " run " in out
    user = docker(
        image, "image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}}", IMAGE
    ).strip()
    assert user == '10001:10001 ["slurm-bridge"]', user
    # no compilers and no pip in the final image
    found = docker(
        image,
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "command -v gcc cc pip pip3 || true",
    ).strip()
    assert found == "", found


def test_pod_and_gang_through_the_bridge_in_the_image(cluster: Cluster, bridge: BridgeContainer) -> None:
    # a single pod
    name, job_name = unique("image-pod"), unique("imagepod")
    cluster.create(_pod(name, job_name))
    node = wait_for("pod bound", lambda: _node(cluster, name), 60)
    jobs = cluster.jobs_named(job_name)
    assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING" and jobs[0]["nodes"] == node, jobs
    assert jobs[0]["comment"].startswith("slurm-bridge/v1 "), jobs
    wait_for("pod Running", lambda: phase(cluster.pod(name, NAMESPACE)) == "Running", 30)
    metrics = httpx.get(f"http://127.0.0.1:{bridge.port}/metrics", timeout=10).text
    assert "slurm_bridge_pod_created_to_submitted_seconds_count" in metrics

    # a gang of two: one Slurm job of two nodes, both members bound at once to distinct nodes
    group, gang_job = unique("image-pg"), unique("imagegang")
    cluster.create(
        {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {
                "name": group,
                "namespace": NAMESPACE,
                "annotations": {"slinky.slurm.net/job-name": gang_job},
            },
            "spec": {"minMember": 2},
        }
    )
    members = [f"{group}-{i}" for i in range(2)]
    for member in members:
        cluster.create(_pod(member, gang_job, group))
    nodes = wait_for("both members bound", lambda: all(n := [_node(cluster, m) for m in members]) and n, 60)
    assert len(set(nodes)) == 2, nodes
    gang = _active(cluster, gang_job)
    assert len(gang) == 1 and gang[0]["state"] == "RUNNING", gang
    assert cluster.slurm.cli("squeue", "-h", "-j", gang[0]["id"], "-o", "%D").strip() == "2"

    # deleting ends the jobs
    cluster.delete_pod(name, NAMESPACE)
    for member in members:
        cluster.delete_pod(member, NAMESPACE)
    wait_for("jobs ended", lambda: not _active(cluster, job_name) and not _active(cluster, gang_job), 60)
    assert bridge.running(), bridge.logs()

"""Gangs end to end: a coscheduling PodGroup and its pods become ONE multi-node Slurm job, bound all at
once to distinct nodes; a gang too big for the free nodes waits whole; an incomplete gang submits
nothing. The bridge runs as a real process, pods come from the real kube-controller-manager."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testbed.bridge_harness import (
    NAMESPACE,
    SCHEDULER,
    TOLERATION,
    BridgeProcess,
    Cluster,
    bridge_config,
    pod_manifest,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed

_PORTS = {"22.05": 17584, "24.11": 17585, "26.05": 17586}  # 1749x: Prometheus and its adapter
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    cluster = Cluster(kube, slurm_cluster)
    # Before the bridge starts: it looks for the PodGroup API once, at start.
    kube.kubectl("apply", "-f", str(CRD))  # idempotent
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    return cluster


@pytest.fixture(scope="module")
def bridge(
    cluster: Cluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    cluster_id = f"gang-{slurm_cluster.version.replace('.', '')}"
    config = bridge_config(
        slurm_cluster, kube, cluster_id=cluster_id, metrics_port=_PORTS[slurm_cluster.version]
    )
    process = BridgeProcess(config, tmp_path_factory.mktemp(f"gang-bridge-{slurm_cluster.version}"))
    process.start()
    yield process
    _delete_gangs(cluster)
    process.stop()
    _force_clear(cluster)


def _delete_gangs(cluster: Cluster) -> None:
    kubectl = cluster.kube.kubectl
    kubectl("-n", NAMESPACE, "delete", "replicasets", "-l", "e2e=gang", "--wait=false", check=False)
    kubectl("-n", NAMESPACE, "delete", "pods", "-l", POD_GROUP_LABEL, "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("gang pods gone", lambda: not _gang_pods(cluster), 40)
    kubectl("-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)


def _force_clear(cluster: Cluster) -> None:
    """Whatever a failed test left: drop finalizers so the next Slurm version starts clean."""
    for name in _gang_pods(cluster):
        cluster.kube.kubectl(
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
    cluster.kube.kubectl(
        "-n", NAMESPACE, "delete", "pods", "-l", POD_GROUP_LABEL, "--grace-period=0", "--force", check=False
    )


def _gang_pods(cluster: Cluster, group: str | None = None) -> list[str]:
    selector = f"{POD_GROUP_LABEL}={group}" if group else POD_GROUP_LABEL
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json", check=False)
    return [p["metadata"]["name"] for p in json.loads(out or '{"items": []}')["items"]]


def _pods(cluster: Cluster, group: str) -> list[dict[str, Any]]:
    out = cluster.kube.kubectl(
        "-n", NAMESPACE, "get", "pods", "-l", f"{POD_GROUP_LABEL}={group}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _bound_nodes(cluster: Cluster, group: str) -> list[str]:
    return [str(p["spec"].get("nodeName") or "") for p in _pods(cluster, group)]


def _pod_group(name: str, min_member: int, job_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"slinky.slurm.net/job-name": job_name},
        },
        "spec": {"minMember": min_member},
    }


def _replica_set(name: str, group: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name, POD_GROUP_LABEL: group}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"e2e": "gang"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "schedulerName": SCHEDULER,
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"limits": {"cpu": "1", "memory": "100Mi"}},
                        }
                    ],
                },
            },
        },
    }


def _active_jobs(cluster: Cluster, job_name: str) -> list[dict[str, str]]:
    return [j for j in cluster.jobs_named(job_name) if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]


def _group_status(cluster: Cluster, name: str) -> dict[str, Any]:
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", "podgroups.scheduling.x-k8s.io", name, "-o", "json")
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def _block_nodes(cluster: Cluster, count: int) -> str:
    """An operator's job holding `count` whole nodes of the partition."""
    out = cluster.slurm.cli(
        "sbatch",
        "--parsable",
        "-p",
        cluster.slurm.partition,
        "-N",
        str(count),
        "--exclusive",
        "-J",
        "e2e-gang-blocker",
        "-D",
        "/tmp",
        "--wrap",
        "sleep 300",
    )
    job_id = out.strip().split(";")[0]
    wait_for("blocker running", lambda: cluster.job_state(job_id)[0] == "RUNNING", 30)
    return job_id


def _delete_gang(cluster: Cluster, replica_set: str, group: str) -> None:
    cluster.kube.kubectl("-n", NAMESPACE, "delete", "replicaset", replica_set, "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("gang pods gone", lambda: not _gang_pods(cluster, group), 40)
    cluster.kube.kubectl(
        "-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false", check=False
    )


def test_replicaset_gang_runs_as_one_slurm_job(cluster: Cluster, bridge: BridgeProcess) -> None:
    """The seed's PodGroup demo: nginx-pg (minMember 2) and a 2-replica ReplicaSet."""
    cluster.create(_pod_group("nginx-pg", 2, "pgReplicaset"))
    cluster.create(_replica_set("nginx-pg-rs", "nginx-pg", 2))
    try:
        nodes = wait_for("both members bound", lambda: all(n := _bound_nodes(cluster, "nginx-pg")) and n, 60)
        assert len(nodes) == 2 and len(set(nodes)) == 2, nodes
        jobs = _active_jobs(cluster, "pgReplicaset")
        assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
        allocated = cluster.slurm.cli("squeue", "-h", "-j", jobs[0]["id"], "-o", "%D")
        assert allocated.strip() == "2"
        assert jobs[0]["comment"].startswith("slurm-bridge/v1 ")
        wait_for(
            "PodGroup Running with 2 running",
            lambda: (
                (s := _group_status(cluster, "nginx-pg")).get("phase") == "Running" and s.get("running") == 2
            ),
            60,
        )
        table = cluster.kube.kubectl(
            "-n", NAMESPACE, "get", "podgroups.scheduling.x-k8s.io", "nginx-pg", "--no-headers"
        )
        assert table.split()[1:4] == ["Running", "2", "2"], table  # NAME PHASE MINMEMBER RUNNING
        bridge.assert_alive()
    finally:
        _delete_gang(cluster, "nginx-pg-rs", "nginx-pg")
    wait_for("job ended", lambda: not _active_jobs(cluster, "pgReplicaset"), 40)


def test_gang_waits_whole_until_enough_nodes_are_free(cluster: Cluster, bridge: BridgeProcess) -> None:
    group, job_name = unique("wide-pg"), unique("wide")
    blocker = _block_nodes(cluster, 2)  # 2 of the 4 nodes left free: too few for 3 members
    try:
        cluster.create(_pod_group(group, 3, job_name))
        cluster.create(_replica_set(f"{group}-rs", group, 3))
        job = wait_for("one pending job", lambda: _active_jobs(cluster, job_name), 60)
        assert len(job) == 1 and job[0]["state"] == "PENDING", job
        assert not any(_bound_nodes(cluster, group)), "a gang never starts in part"
        assert _group_status(cluster, group).get("phase") == "Scheduling"
        cluster.slurm.cli("scancel", blocker)
        blocker = ""
        nodes = wait_for("all three bound", lambda: all(n := _bound_nodes(cluster, group)) and n, 60)
        assert len(nodes) == 3 and len(set(nodes)) == 3, nodes
        assert len(_active_jobs(cluster, job_name)) == 1
    finally:
        if blocker:
            cluster.slurm.cli("scancel", blocker, check=False)
        _delete_gang(cluster, f"{group}-rs", group)


def test_gang_short_of_min_member_submits_nothing(cluster: Cluster, bridge: BridgeProcess) -> None:
    group, job_name = unique("short-pg"), unique("short")
    cluster.create(_pod_group(group, 3, job_name))
    name = unique("lonely")
    cluster.create(pod_manifest(name, labels={POD_GROUP_LABEL: group}))
    try:
        wait_for(
            "the pod says it waits for members",
            lambda: any(
                c.get("reason") == "GangWaitingForMembers"
                for c in ((cluster.pod(name) or {}).get("status") or {}).get("conditions") or []
            ),
            30,
        )
        assert cluster.jobs_named(job_name) == []
        assert not _bound_nodes(cluster, group)[0]
    finally:
        cluster.delete_pod(name)
        cluster.kube.kubectl(
            "-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false", check=False
        )

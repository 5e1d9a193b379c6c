"""Gangs from real workload controllers, end to end: a LeaderWorkerSet group (the real LWS controller),
JobSets (the real JobSet controller) with and without a coscheduling PodGroup, the built-in Workload API
(scheduling.k8s.io/v1beta1 Workload + PodGroup), and a gang's failure paths: a member failing while the
gang runs, a group that never reaches minMember within scheduleTimeoutSeconds, a gang larger than the
partition. The bridge runs as a real process (tests/testbed/bridge_harness.py); the JobSet and LWS
controllers are started by testbed/workload-controllers.sh (part of testbed/up.sh)."""

from __future__ import annotations

import contextlib
import json
import subprocess
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
    condition,
    pod_manifest,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed

_PORTS = {"22.05": 17594, "24.11": 17595, "26.05": 17596}
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
E2E_LABEL = {"e2e": "gang-workloads"}
COSCHEDULING = "podgroups.scheduling.x-k8s.io"
WORKLOAD_GROUPS = "podgroups.scheduling.k8s.io"
JOB_NAME = "slinky.slurm.net/job-name"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    cluster = Cluster(kube, slurm_cluster)
    kube.kubectl("apply", "-f", str(CRD))  # idempotent; before the bridge starts (it looks once)
    kube.kubectl("wait", "--for=condition=Established", f"crd/{COSCHEDULING}", "--timeout=60s")
    return cluster


@pytest.fixture(scope="module")
def workload_controllers(cluster: Cluster) -> None:
    """The real JobSet and LWS controllers: up.sh starts them; `up` is idempotent and cheap when they run."""
    done = subprocess.run(
        ["bash", str(REPO / "testbed" / "workload-controllers.sh"), "up"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"JobSet/LWS controllers are not up:\n{done.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def bridge(
    cluster: Cluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    cluster_id = f"gangwl-{slurm_cluster.version.replace('.', '')}"
    config = bridge_config(
        slurm_cluster, kube, cluster_id=cluster_id, metrics_port=_PORTS[slurm_cluster.version]
    )
    process = BridgeProcess(config, tmp_path_factory.mktemp(f"gangwl-bridge-{slurm_cluster.version}"))
    process.start()
    yield process
    _delete_all(cluster)
    process.stop()
    _force_clear(cluster)


# --- Objects ---------------------------------------------------------------------------------------------


def _pod_spec(annotations: dict[str, str] | None = None, restart: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": SCHEDULER,
        "tolerations": [TOLERATION],
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"limits": {"cpu": "1", "memory": "100Mi"}},
            }
        ],
    }
    if restart:
        spec["restartPolicy"] = restart
    return spec


def _lws(name: str, size: int, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": E2E_LABEL, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": size,
                "workerTemplate": {"metadata": {"labels": E2E_LABEL}, "spec": _pod_spec()},
            },
        },
    }


def _jobset(
    name: str,
    pods: int,
    *,
    annotations: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": E2E_LABEL,
            "annotations": annotations or {},
        },
        "spec": {
            "replicatedJobs": [
                {
                    "name": "w",
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": pods,
                            "completions": pods,
                            "backoffLimit": 0,
                            "template": {
                                "metadata": {
                                    "labels": {**E2E_LABEL, **(pod_labels or {})},
                                    "annotations": pod_annotations or {},
                                },
                                "spec": _pod_spec(restart="Never"),
                            },
                        }
                    },
                }
            ]
        },
    }


def _coscheduling_group(
    name: str, min_member: int, annotations: dict[str, str] | None = None, timeout: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"minMember": min_member}
    if timeout is not None:
        spec["scheduleTimeoutSeconds"] = timeout
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": E2E_LABEL,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def _member(name: str, group: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest = pod_manifest(name, annotations=annotations, labels={**E2E_LABEL, POD_GROUP_LABEL: group})
    return manifest


# --- Observations ----------------------------------------------------------------------------------------


def _pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json", check=False)
    items: list[dict[str, Any]] = json.loads(out or '{"items": []}')["items"]
    return items


def _bound(cluster: Cluster, selector: str, count: int) -> list[str] | None:
    """The nodes of the selected pods once exactly `count` exist and every one is bound."""
    nodes = [str(p["spec"].get("nodeName") or "") for p in _pods(cluster, selector)]
    return nodes if len(nodes) == count and all(nodes) else None


def _active_jobs(cluster: Cluster, job_name: str) -> list[dict[str, str]]:
    return [j for j in cluster.jobs_named(job_name) if j["state"] in ACTIVE]


def _node_count(cluster: Cluster, job_id: str) -> int:
    return int(cluster.slurm.cli("squeue", "-h", "-j", job_id, "-o", "%D").strip() or 0)


def _get(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", resource, name, "-o", "json")
    obj: dict[str, Any] = json.loads(out)
    return obj


def _has_reason(pod: dict[str, Any] | None, reason: str) -> bool:
    found = condition(pod, "PodScheduled")
    return found is not None and found.get("reason") == reason


def _event(cluster: Cluster, name: str, reason: str, kind: str) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in cluster.events(name)
            if e.get("reason") == reason and (e.get("involvedObject") or {}).get("kind") == kind
        ),
        None,
    )


# --- Cleanup ---------------------------------------------------------------------------------------------


def _delete(cluster: Cluster, *what: str) -> None:
    for item in what:
        cluster.kube.kubectl(
            "-n", NAMESPACE, "delete", item, "--wait=false", "--ignore-not-found", check=False
        )


def _delete_all(cluster: Cluster) -> None:
    selector = "e2e=gang-workloads"
    kinds = "jobsets.jobset.x-k8s.io,leaderworkersets.leaderworkerset.x-k8s.io"
    cluster.kube.kubectl("-n", NAMESPACE, "delete", kinds, "-l", selector, "--wait=false", check=False)
    cluster.kube.kubectl("-n", NAMESPACE, "delete", "pods", "-l", selector, "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("test pods gone", lambda: not _pods(cluster, selector), 40)
    groups = f"{COSCHEDULING},{WORKLOAD_GROUPS},workloads.scheduling.k8s.io"
    cluster.kube.kubectl("-n", NAMESPACE, "delete", groups, "-l", selector, "--wait=false", check=False)


def _force_clear(cluster: Cluster) -> None:
    """Whatever a failed test left: drop finalizers so the next Slurm version starts clean."""
    for pod in _pods(cluster, "e2e=gang-workloads"):
        name = pod["metadata"]["name"]
        patch = '{"metadata":{"finalizers":null}}'
        cluster.kube.kubectl("-n", NAMESPACE, "patch", "pod", name, "--type=merge", "-p", patch, check=False)
    cluster.kube.kubectl(
        "-n",
        NAMESPACE,
        "delete",
        "pods",
        "-l",
        "e2e=gang-workloads",
        "--grace-period=0",
        "--force",
        check=False,
    )


# --- Tests -----------------------------------------------------------------------------------------------


def test_leaderworkerset_group_is_one_multi_node_job(
    cluster: Cluster, bridge: BridgeProcess, workload_controllers: None
) -> None:
    """The real LWS controller creates a group of 3 (leader + 2 workers): ONE 3-node Slurm job, every
    member bound to a distinct node; the job name comes from the LeaderWorkerSet object."""
    name, job_name = unique("lws"), unique("lwsjob")
    cluster.create(_lws(name, 3, {JOB_NAME: job_name}))
    try:
        nodes = wait_for("3 members bound", lambda: _bound(cluster, f"{LWS_NAME_LABEL}={name}", 3), 60)
        assert len(set(nodes)) == 3, nodes
        jobs = _active_jobs(cluster, job_name)
        assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
        assert _node_count(cluster, jobs[0]["id"]) == 3
        assert f" gang={NAMESPACE}/group.leaderworkerset.x-k8s.io/{name}-0 " in jobs[0]["comment"], jobs
        slurm_nodes = {
            p["metadata"]["annotations"]["slinky.slurm.net/slurm-node"]
            for p in _pods(cluster, f"{LWS_NAME_LABEL}={name}")
        }
        assert len(slurm_nodes) == 3, slurm_nodes
        bridge.assert_alive()
    finally:
        _delete(cluster, f"leaderworkersets.leaderworkerset.x-k8s.io/{name}")
    wait_for("LWS job ended", lambda: not _active_jobs(cluster, job_name), 40)


def test_jobset_in_a_podgroup_is_one_job_named_from_the_jobset(
    cluster: Cluster, bridge: BridgeProcess, workload_controllers: None
) -> None:
    """JobSet pods labelled into a coscheduling PodGroup: one 2-node job. The PodGroup sets no job name,
    so the top-level JobSet's annotation names the job (group > owner workload > pod), not the pods'."""
    name, group, job_name = unique("js-pg"), unique("js-pg"), unique("jsgang")
    cluster.create(_coscheduling_group(group, 2))
    cluster.create(
        _jobset(
            name,
            2,
            annotations={JOB_NAME: job_name},
            pod_labels={POD_GROUP_LABEL: group},
            pod_annotations={JOB_NAME: "from-the-pod-template"},
        )
    )
    try:
        nodes = wait_for("2 members bound", lambda: _bound(cluster, f"{POD_GROUP_LABEL}={group}", 2), 60)
        assert len(set(nodes)) == 2, nodes
        jobs = _active_jobs(cluster, job_name)
        assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
        assert _node_count(cluster, jobs[0]["id"]) == 2
        assert _active_jobs(cluster, "from-the-pod-template") == []
        assert all(
            p["metadata"]["labels"].get(JOBSET_NAME_LABEL) == name
            for p in _pods(cluster, f"{POD_GROUP_LABEL}={group}")
        )
    finally:
        _delete(cluster, f"jobsets.jobset.x-k8s.io/{name}")
        with contextlib.suppress(AssertionError):
            wait_for("JobSet pods gone", lambda: not _pods(cluster, f"{JOBSET_NAME_LABEL}={name}"), 40)
        _delete(cluster, f"{COSCHEDULING}/{group}")
    wait_for("gang job ended", lambda: not _active_jobs(cluster, job_name), 40)


def test_plain_jobset_pods_are_one_job_each(
    cluster: Cluster, bridge: BridgeProcess, workload_controllers: None
) -> None:
    """A JobSet without a PodGroup: JobSet labels never form a gang, so each pod is its own 1-node job.
    A single pod's job options come from its own annotations (the JobSet's pod template)."""
    name, job_name = unique("js"), unique("jsplain")
    cluster.create(_jobset(name, 2, pod_annotations={JOB_NAME: job_name}))
    try:
        nodes = wait_for("2 pods bound", lambda: _bound(cluster, f"{JOBSET_NAME_LABEL}={name}", 2), 60)
        assert len(nodes) == 2, nodes  # single jobs: Slurm may pack both on one node
        jobs = _active_jobs(cluster, job_name)
        assert len(jobs) == 2 and {j["state"] for j in jobs} == {"RUNNING"}, jobs
        assert all(_node_count(cluster, j["id"]) == 1 for j in jobs)
        pods = {p["metadata"]["name"] for p in _pods(cluster, f"{JOBSET_NAME_LABEL}={name}")}
        assert all(f"pod={NAMESPACE}/" in j["comment"] for j in jobs), jobs  # single-pod markers
        assert {j["comment"].split(f"pod={NAMESPACE}/", 1)[1].split()[0] for j in jobs} == pods
    finally:
        _delete(cluster, f"jobsets.jobset.x-k8s.io/{name}")
    wait_for("jobs ended", lambda: not _active_jobs(cluster, job_name), 40)


def test_plain_jobset_pod_job_named_from_the_jobset_object(
    cluster: Cluster, bridge: BridgeProcess, workload_controllers: None
) -> None:
    """Issue 5: "annotations read from the top-level workload object" - for a plain JobSet pod too."""
    name, job_name = unique("js1"), unique("jsobj")
    cluster.create(_jobset(name, 1, annotations={JOB_NAME: job_name}))
    try:
        wait_for("the pod bound", lambda: _bound(cluster, f"{JOBSET_NAME_LABEL}={name}", 1), 60)
        assert len(_active_jobs(cluster, job_name)) == 1
    finally:
        _delete(cluster, f"jobsets.jobset.x-k8s.io/{name}")


def test_workload_api_gang_is_one_job_and_sets_scheduled_condition(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    """scheduling.k8s.io/v1beta1: a Workload with a gang template (minCount 2), its runtime PodGroup, and
    2 pods with spec.schedulingGroup: one 2-node job named from the Workload, PodGroupInitiallyScheduled."""
    workload, group, job_name = unique("wl"), unique("wl-pg"), unique("wljob")
    gang = {"gang": {"minCount": 2}}
    cluster.create(
        {
            "apiVersion": "scheduling.k8s.io/v1beta1",
            "kind": "Workload",
            "metadata": {
                "name": workload,
                "namespace": NAMESPACE,
                "labels": E2E_LABEL,
                "annotations": {JOB_NAME: job_name},
            },
            "spec": {"podGroupTemplates": [{"name": "workers", "schedulingPolicy": gang}]},
        }
    )
    cluster.create(
        {
            "apiVersion": "scheduling.k8s.io/v1beta1",
            "kind": "PodGroup",
            "metadata": {"name": group, "namespace": NAMESPACE, "labels": E2E_LABEL},
            "spec": {
                "workloadRef": {"workloadName": workload, "templateName": "workers"},
                "schedulingPolicy": gang,
            },
        }
    )
    names = [f"{group}-{i}" for i in range(2)]
    for pod_name in names:
        manifest = pod_manifest(pod_name, labels=E2E_LABEL)
        manifest["spec"]["schedulingGroup"] = {"podGroupName": group}
        cluster.create(manifest)
    try:
        nodes = wait_for(
            "both bound",
            lambda: (
                all(
                    n := [
                        str(((cluster.pod(p) or {}).get("spec") or {}).get("nodeName") or "") for p in names
                    ]
                )
                and n
            ),
            60,
        )
        assert len(set(nodes)) == 2, nodes
        jobs = _active_jobs(cluster, job_name)
        assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
        assert _node_count(cluster, jobs[0]["id"]) == 2

        def scheduled() -> dict[str, Any] | None:
            conditions = (_get(cluster, WORKLOAD_GROUPS, group).get("status") or {}).get("conditions") or []
            return next(
                (
                    c
                    for c in conditions
                    if c.get("type") == "PodGroupInitiallyScheduled" and c["status"] == "True"
                ),
                None,
            )

        assert wait_for("PodGroupInitiallyScheduled=True", scheduled, 30)
        labels = _get(cluster, WORKLOAD_GROUPS, group)["metadata"].get("labels") or {}
        assert labels.get("scheduler.slinky.slurm.net/slurm-jobid") == jobs[0]["id"]
    finally:
        for pod_name in names:
            cluster.delete_pod(pod_name)
        with contextlib.suppress(AssertionError):
            wait_for("pods gone", lambda: not any(cluster.pod(p) for p in names), 40)
        _delete(cluster, f"{WORKLOAD_GROUPS}/{group}", f"workloads.scheduling.k8s.io/{workload}")
    wait_for("job ended", lambda: not _active_jobs(cluster, job_name), 40)


def test_member_failure_ends_the_whole_gang(cluster: Cluster, bridge: BridgeProcess) -> None:
    """One member exits 3 after 3 s while the gang runs: the job ends, the other member is deleted, and
    the group gets a GangMemberFailed event."""
    group, job_name = unique("fail-pg"), unique("failjob")
    cluster.create(_coscheduling_group(group, 2, {JOB_NAME: job_name}))
    steady, failing = f"{group}-steady", f"{group}-failing"
    cluster.create(_member(steady, group))
    ends = {"testbed.slurm-bridge.io/run-duration": "3s", "testbed.slurm-bridge.io/exit-code": "3"}
    cluster.create(_member(failing, group, ends))
    try:
        job = wait_for(
            "gang running",
            lambda: [j for j in _active_jobs(cluster, job_name) if j["state"] == "RUNNING"],
            60,
        )
        wait_for(
            "the failing member failed",
            lambda: ((cluster.pod(failing) or {}).get("status") or {}).get("phase") == "Failed",
            30,
        )
        wait_for("the steady member deleted", lambda: cluster.pod(steady) is None, 30)
        wait_for("the Slurm job ended", lambda: not _active_jobs(cluster, job_name), 30)
        state, _ = cluster.job_state(job[0]["id"])
        assert state in ("FAILED", "CANCELLED"), state
        event = wait_for(
            "GangMemberFailed on the group",
            lambda: _event(cluster, group, "GangMemberFailed", "PodGroup"),
            20,
        )
        assert failing in event["message"], event
        wait_for(
            "PodGroup Failed",
            lambda: (_get(cluster, COSCHEDULING, group).get("status") or {}).get("phase") == "Failed",
            20,
        )
    finally:
        cluster.delete_pod(steady)
        cluster.delete_pod(failing)
        _delete(cluster, f"{COSCHEDULING}/{group}")


def test_group_short_of_min_member_times_out_and_submits_nothing(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    """scheduleTimeoutSeconds 3, minMember 3, one member: a GangScheduleTimeout condition on the member,
    a warning event on the PodGroup, and no Slurm job."""
    group, job_name = unique("late-pg"), unique("latejob")
    cluster.create(_coscheduling_group(group, 3, {JOB_NAME: job_name}, timeout=3))
    lonely = f"{group}-0"
    cluster.create(_member(lonely, group))
    try:
        wait_for(
            "GangWaitingForMembers", lambda: _has_reason(cluster.pod(lonely), "GangWaitingForMembers"), 20
        )
        wait_for("GangScheduleTimeout", lambda: _has_reason(cluster.pod(lonely), "GangScheduleTimeout"), 20)
        event = wait_for(
            "a timeout event on the group",
            lambda: _event(cluster, group, "GangScheduleTimeout", "PodGroup"),
            20,
        )
        assert event["type"] == "Warning" and "scheduleTimeoutSeconds" in event["message"], event
        assert cluster.jobs_named(job_name) == []
        assert not ((cluster.pod(lonely) or {}).get("spec") or {}).get("nodeName")
    finally:
        cluster.delete_pod(lonely)
        _delete(cluster, f"{COSCHEDULING}/{group}")


def test_gang_larger_than_the_partition_is_refused(cluster: Cluster, bridge: BridgeProcess) -> None:
    """5 members, the partition has 4 nodes: refused with GangLargerThanPartition (condition on every
    member, warning event on the group); nothing submitted, no finalizer, nothing left behind."""
    group, job_name = unique("huge-pg"), unique("hugejob")
    cluster.create(_coscheduling_group(group, 5, {JOB_NAME: job_name}))
    names = [f"{group}-{i}" for i in range(5)]
    for name in names:
        cluster.create(_member(name, group))
    try:
        wait_for(
            "every member refused",
            lambda: all(_has_reason(cluster.pod(n), "GangLargerThanPartition") for n in names),
            30,
        )
        message = condition(cluster.pod(names[0]), "PodScheduled")["message"]  # type: ignore[index]
        assert "needs 5 nodes" in message and "has 4" in message, message
        event = _event(cluster, group, "GangLargerThanPartition", "PodGroup")
        assert event is not None and event["type"] == "Warning", cluster.events(group)
        assert cluster.jobs_named(job_name) == []
        for name in names:
            pod = cluster.pod(name) or {}
            assert not pod["spec"].get("nodeName") and not pod["metadata"].get("finalizers"), pod["metadata"]
    finally:
        for name in names:
            cluster.delete_pod(name)
        _delete(cluster, f"{COSCHEDULING}/{group}")
    wait_for("nothing stranded", lambda: not _pods(cluster, f"{POD_GROUP_LABEL}={group}"), 30)
    assert cluster.jobs_named(job_name) == []

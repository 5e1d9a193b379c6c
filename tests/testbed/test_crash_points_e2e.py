"""Crash-only, deterministically: the bridge is killed (os._exit(137), as kill -9 leaves it) at each named
step of a pod's and a gang's life (controller/crash_points.py), restarted without the kill point, and
must then converge with nothing duplicated, orphaned, lost or half done:

- at most one active Slurm job per pod and per gang, and exactly one ever submitted;
- no active job of ours whose pod (or gang) is gone: no orphan;
- every pod whose job runs exists and is bound to the node Slurm gave it: nothing lost or unbound;
- every gang whose job runs has all its members bound, each to its own node: no half-bound gang.

One bridge process per kill point, on the default Slurm version only. The testbed is shared with other
sessions: this file has its own scheduler name, namespace, cluster id, lease and metrics port, and only
ever touches its own pods and jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.gang_marker import decode_gang_marker
from bridge.marker import decode_marker
from bridge.wellknown import FINALIZER, LABEL_SLURM_JOB_ID
from controller.crash_points import CRASH_VARIABLE, KILLED_EXIT_CODE
from slurm_client import JobSpec, JwtKeyAuth, SlurmClient
from tests.testbed.bridge_harness import TOLERATION, BridgeProcess, Cluster, bridge_config, unique, wait_for
from tests.testbed.test_nodeset_e2e import nodeset_manifest
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.slurm_default_only]

NAMESPACE = "crash-e2e"
SCHEDULER = "crash-scheduler"
CLUSTER_ID = "crash-e2e"
ORPHAN_CLUSTER_ID = "crash-e2e-orphans"  # its own: no other bridge of this file sweeps its orphans early
METRICS_PORT = 17577
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED")
# Other sessions' tests fill the shared partition (fair-share, preemption demos): ours go first.
PRIORITY, URGENT = "slinky.slurm.net/priority", "1000000"
BIND_SECONDS = 90  # a job may wait behind other sessions' jobs
ORPHAN_MIN_AGE_SECONDS = 62  # controller/plan.py plan_orphan_cleanup spares younger jobs


# --- the cluster as this file sees it -------------------------------------------------------------------


class CrashCluster(Cluster):
    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.kube.kubectl("-n", NAMESPACE, *args, check=check)

    def pods(self, selector: str | None = None) -> dict[str, dict[str, Any]]:
        args = ["get", "pods", "-o", "json"] + (["-l", selector] if selector else [])
        items = json.loads(self.kubectl(*args) or '{"items": []}')["items"]
        return {p["metadata"]["name"]: p for p in items}

    def jobs(self, cluster_id: str = CLUSTER_ID) -> list[dict[str, str]]:
        """Every job of ours squeue still shows (any state): id, state, nodes (expanded), comment."""
        out = self.slurm.cli("squeue", "-h", "-t", "all", "-o", "%i|%T|%N|%j|%k")
        rows = [line.split("|", 4) for line in out.splitlines() if line.strip()]
        return [
            {"id": r[0], "state": r[1], "nodes": r[2], "name": r[3], "comment": r[4]}
            for r in rows
            if f"cluster={cluster_id} " in r[4] + " "
        ]

    def hostnames(self, nodelist: str) -> list[str]:
        if not nodelist or nodelist == "(null)":
            return []
        return self.slurm.cli("scontrol", "show", "hostnames", nodelist).split()

    def problems(self) -> list[str]:
        """What a crash may never leave behind, once the restarted bridge had its chance (empty: none)."""
        pods = self.pods()
        by_uid = {p["metadata"]["uid"]: p for p in pods.values()}
        found: list[str] = []
        active: dict[str, list[str]] = {}
        for job in self.jobs():
            if job["state"] not in ACTIVE:
                continue
            pod_marker = decode_marker(job["comment"], CLUSTER_ID)
            gang_marker = decode_gang_marker(job["comment"], CLUSTER_ID)
            owner = pod_marker.pod_uid if pod_marker else gang_marker.group_uid if gang_marker else "?"
            active.setdefault(owner, []).append(job["id"])
            if pod_marker is not None:
                members = [by_uid[pod_marker.pod_uid]] if pod_marker.pod_uid in by_uid else []
            elif gang_marker is not None:
                members = [p for p in pods.values() if _group(p) == gang_marker.name]
            else:
                continue
            live = [p for p in members if not p["metadata"].get("deletionTimestamp")]
            if not live:
                if not members:
                    found.append(f"orphan: job {job['id']} ({job['state']}) has no pod")
                continue
            if job["state"] != "RUNNING":
                continue
            nodes = self.hostnames(job["nodes"])
            bound = sorted(str(p["spec"].get("nodeName") or "") for p in live)
            if pod_marker is not None and bound != nodes:
                found.append(f"job {job['id']} runs on {nodes}, its pod is bound to {bound}")
            if gang_marker is not None and (sorted(bound) != sorted(nodes) or len(live) != len(nodes)):
                found.append(f"half-bound gang: job {job['id']} runs on {nodes}, members bound to {bound}")
        found += [
            f"duplicate: {owner} has active jobs {ids}" for owner, ids in active.items() if len(ids) > 1
        ]
        return found


def _group(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(POD_GROUP_LABEL)


def _bound(pod: dict[str, Any] | None) -> str:
    return str(pod["spec"].get("nodeName") or "") if pod else ""


def _finalized(pod: dict[str, Any] | None) -> bool:
    return pod is not None and FINALIZER in (pod["metadata"].get("finalizers") or [])


def pod_manifest(name: str, *, group: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {POD_GROUP_LABEL: group} if group else {},
            "annotations": {PRIORITY: URGENT},
        },
        "spec": {
            "schedulerName": SCHEDULER,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                }
            ],
        },
    }


def pod_group_manifest(name: str, job_name: str, members: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"slinky.slurm.net/job-name": job_name, PRIORITY: URGENT},
        },
        "spec": {"minMember": members},
    }


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Iterator[CrashCluster]:
    cluster = CrashCluster(kube, slurm_cluster)
    if not kube.kubectl("get", "namespace", NAMESPACE, "-o", "name", check=False).strip():
        kube.kubectl("create", "namespace", NAMESPACE)
    kube.kubectl("apply", "-f", str(CRD))  # idempotent; before any bridge starts (it looks once)
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    _clear(cluster)
    yield cluster
    _clear(cluster)


@pytest.fixture(scope="module", autouse=True)
def orphans(cluster: CrashCluster) -> tuple[float, list[int]]:
    """Two jobs of a bridge whose pods never existed, submitted once, early: the orphan sweep spares jobs
    younger than a minute, so they age while the other kill points run."""
    ids = [asyncio.run(_submit_orphan(cluster.slurm)) for _ in range(2)]
    return time.monotonic(), ids


def _config(slurm: SlurmCluster, kube: KubeCluster, cluster_id: str = CLUSTER_ID) -> dict[str, Any]:
    config = bridge_config(slurm, kube, cluster_id=cluster_id, metrics_port=METRICS_PORT)
    config["scheduler_name"] = SCHEDULER
    config["namespaces"] = [NAMESPACE]
    config["poll_interval_seconds"] = 0.25
    config["leader_election"].update(
        lease_name=f"crash-{cluster_id}",
        # A restart waits for the killed leader's Lease to run out (whole seconds on the wire).
        lease_duration_seconds=2,
        renew_deadline_seconds=1.5,
        retry_period_seconds=0.2,
    )
    return config


def _clear(cluster: CrashCluster, cluster_ids: tuple[str, ...] = (CLUSTER_ID, ORPHAN_CLUSTER_ID)) -> None:
    """Nothing of this file's left: its pods (finalizers dropped), PodGroups and active jobs (of
    `cluster_ids`: a test in the middle of the module must spare the orphans aging for the sweep test)."""
    for name, pod in cluster.pods().items():
        if pod["metadata"].get("finalizers"):
            cluster.kubectl(
                "patch", "pod", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
            )
    cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force", check=False)
    cluster.kubectl("delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)
    ids = [j["id"] for cid in cluster_ids for j in cluster.jobs(cid) if j["state"] in ACTIVE]
    if ids:
        cluster.slurm.cli("scancel", *ids, check=False)


async def _submit_orphan(slurm: SlurmCluster) -> int:
    pod = f"{NAMESPACE}/ghost"
    marker = f"slurm-bridge/v1 cluster={ORPHAN_CLUSTER_ID} pod={pod} spec=0123456789ab uid={uuid.uuid4()}"
    spec = JobSpec(
        name="crash-orphan",
        partition=slurm.partition,
        hold=True,
        comment=marker,
        script="#!/bin/sh\nsleep 60\n",
    )
    async with SlurmClient(slurm.url, auth=JwtKeyAuth(slurm.user, slurm.jwt_key_file)) as client:
        return (await client.submit_job(spec)).job_id


# --- one kill, one restart ------------------------------------------------------------------------------


def killed_at(
    point: str, config: dict[str, Any], workdir: Path, drive: Callable[[], None], *, name: str = "bridge"
) -> BridgeProcess:
    """Start the bridge armed at `point`, drive the workload there, see it die with 137, restart it
    unarmed; returns the restarted bridge (the caller stops it)."""
    bridge = BridgeProcess(config, workdir, name=name)
    start_armed(bridge, point, drive)
    bridge.start()  # the variable is not passed on: unarmed
    return bridge


def start_armed(bridge: BridgeProcess, point: str, drive: Callable[[], None] = lambda: None) -> None:
    """Start `bridge` armed at `point`, drive the workload there and see the process die with 137."""
    bridge.start({CRASH_VARIABLE: point})
    try:
        drive()
        process = bridge.process
        assert process is not None
        code = wait_for(
            f"the bridge killed at {point}",
            lambda: process.poll() is not None and [process.returncode],
            2 * BIND_SECONDS,
        )
    except BaseException:
        bridge.stop()
        raise
    assert code == [KILLED_EXIT_CODE], f"exit {code}, not a kill at {point}:\n{bridge.log()[-3000:]}"
    assert f"killed at {point}" in bridge.log()
    bridge.process = None


def converged(
    cluster: CrashCluster, what: str, probe: Callable[[], Any], timeout: float = BIND_SECONDS
) -> Any:
    try:
        return wait_for(what, probe, timeout)
    finally:
        problems = cluster.problems()
        assert not problems, problems


# --- which points run --------------------------------------------------------------------------------
# Every point below (44 tests) takes ~5 min on the shared testbed. By default one kill per distinct state
# left behind runs (22 tests, ~2.5 min); CRASH_POINTS=all runs them all (a "before-X" mostly leaves what
# "after-W" left).
EVERY_POINT = os.environ.get("CRASH_POINTS") == "all"
DEFAULT_POINTS = frozenset(
    {
        "pod.after-prepare",
        "pod.after-submit",
        "pod.after-prepare:2",
        "pod.after-bind",
        "pod.before-end-job",
        "pod.after-end-job",
        "pod.after-disruption-condition",
        "gang.after-prepare:2",
        "gang.after-submit",
        "gang.after-bind:2",
        "gang.after-bind:4",
        "gang.after-end-job",
        "gang.after-delete:2",
        "nodeset.after-drain",
        "nodeset.after-pod-delete",
        "nodeset.after-retire",
        "nodeset.after-create",
        "nodeset.after-drain:2",
        "nodeset.after-resume",
    }
)


def chosen(points: list[str]) -> list[str]:
    return points if EVERY_POINT else [p for p in points if p in DEFAULT_POINTS]


# --- pods -------------------------------------------------------------------------------------------------

# Each point is reached once on the way: created → finalizer → submit → label → bind → (deleted) → end job
# → finalizer removed.
POD_LIFE_POINTS = [
    "pod.before-prepare",
    "pod.after-prepare",
    "pod.before-submit",
    "pod.after-submit",
    "pod.after-prepare:2",  # the job id label written, nothing bound
    "pod.before-bind",
    "pod.after-bind",
    "pod.before-end-job",
    "pod.after-end-job",
    "pod.before-release",
    "pod.after-release",
]


@pytest.mark.parametrize("point", chosen(POD_LIFE_POINTS))
def test_a_pod_killed_at(
    point: str, cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    name = unique("life")
    ends = point.split(":")[0] in (
        "pod.before-end-job",
        "pod.after-end-job",
        "pod.before-release",
        "pod.after-release",
    )

    def drive() -> None:
        cluster.create(pod_manifest(name))
        if ends:  # the kill is on the way out: let it be bound first, then delete it
            wait_for(f"{name} bound", lambda: _bound(cluster.pod(name, NAMESPACE)), BIND_SECONDS)
            cluster.delete_pod(name, NAMESPACE)

    bridge = killed_at(point, _config(slurm_cluster, kube), tmp_path, drive)
    try:
        if ends:
            converged(cluster, f"{name} gone", lambda: cluster.pod(name, NAMESPACE) is None)
        else:
            converged(cluster, f"{name} bound", lambda: _bound(cluster.pod(name, NAMESPACE)))
            pod = cluster.pod(name, NAMESPACE)
            assert pod is not None and _finalized(pod), pod
            (job,) = [j for j in cluster.jobs() if f"/{name} " in j["comment"] + " "]
            assert pod["metadata"]["labels"].get(LABEL_SLURM_JOB_ID) == job["id"], pod["metadata"]
            cluster.delete_pod(name, NAMESPACE)
            converged(cluster, f"{name} gone", lambda: cluster.pod(name, NAMESPACE) is None)
        jobs = [j for j in cluster.jobs() if f"/{name} " in j["comment"] + " "]
        assert len(jobs) == 1, f"one job ever for {name}: {jobs}"
        assert jobs[0]["state"] not in ACTIVE, jobs
    finally:
        bridge.stop()


POD_DELETE_POINTS = ["pod.before-delete", "pod.after-disruption-condition", "pod.after-delete"]


@pytest.mark.parametrize("point", chosen(POD_DELETE_POINTS))
def test_a_pod_whose_job_is_cancelled_killed_at(
    point: str, cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    name = unique("scancel")

    def drive() -> None:
        cluster.create(pod_manifest(name))
        wait_for(f"{name} bound", lambda: _bound(cluster.pod(name, NAMESPACE)), BIND_SECONDS)
        (job,) = [j for j in cluster.jobs() if f"/{name} " in j["comment"] + " "]
        cluster.slurm.cli("scancel", job["id"])

    bridge = killed_at(point, _config(slurm_cluster, kube), tmp_path, drive)
    try:
        converged(cluster, f"{name} gone", lambda: cluster.pod(name, NAMESPACE) is None)
        jobs = [j for j in cluster.jobs() if f"/{name} " in j["comment"] + " "]
        assert [j["state"] for j in jobs] == ["CANCELLED"], jobs
    finally:
        bridge.stop()


# A pod deleted while its job waits: the job is cancelled at once, then the finalizer goes.
POD_PENDING_DELETE_POINTS = ["pod.before-end-job", "pod.after-end-job", "pod.after-release"]


@pytest.mark.parametrize("point", chosen(POD_PENDING_DELETE_POINTS))
def test_a_pending_pod_deleted_killed_at(
    point: str, cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    name = unique("pending")
    held = pod_manifest(name)
    held["metadata"]["annotations"][PRIORITY] = "0"  # Slurm holds a job of priority 0: it never starts

    def drive() -> None:
        cluster.create(held)
        wait_for(
            f"{name}'s job held",
            lambda: (
                [j["state"] for j in cluster.jobs() if f"/{name} " in j["comment"] + " "] == ["PENDING"]
                and _finalized(cluster.pod(name, NAMESPACE))
            ),
            BIND_SECONDS,
        )
        cluster.delete_pod(name, NAMESPACE)

    bridge = killed_at(point, _config(slurm_cluster, kube), tmp_path, drive)
    try:
        converged(cluster, f"{name} gone", lambda: cluster.pod(name, NAMESPACE) is None)
        jobs = [j for j in cluster.jobs() if f"/{name} " in j["comment"] + " "]
        assert [j["state"] for j in jobs] == ["CANCELLED"], jobs
    finally:
        bridge.stop()


# --- gangs of 4 ---------------------------------------------------------------------------------------

GANG = 4
GANG_LIFE_POINTS = [
    "gang.before-prepare",
    "gang.after-prepare:2",  # two of four members carry the finalizer
    "gang.before-submit",
    "gang.after-submit",
    "gang.before-bind",
    "gang.after-bind:1",
    "gang.after-bind:2",  # mid-gang: two of four bound
    "gang.after-bind:4",  # all bound, the group's status not written
    "gang.before-end-job",
    "gang.after-end-job",
    "gang.before-release:2",
    "gang.after-release:2",
]


@pytest.mark.parametrize("point", chosen(GANG_LIFE_POINTS))
def test_a_gang_killed_at(
    point: str, cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    group, job_name = unique("gang"), unique("crash-gang")
    selector = f"{POD_GROUP_LABEL}={group}"
    ends = point.split(":")[0] in (
        "gang.before-end-job",
        "gang.after-end-job",
        "gang.before-release",
        "gang.after-release",
    )

    def all_bound() -> bool:
        pods = cluster.pods(selector)
        return len(pods) == GANG and all(_bound(p) for p in pods.values())

    def drive() -> None:
        cluster.create(pod_group_manifest(group, job_name, GANG))
        for i in range(GANG):
            cluster.create(pod_manifest(f"{group}-{i}", group=group))
        if ends:
            wait_for(f"{group} bound", all_bound, BIND_SECONDS)
            cluster.kubectl("delete", "pods", "-l", selector, "--wait=false")

    bridge = killed_at(point, _config(slurm_cluster, kube), tmp_path, drive)
    try:
        if not ends:
            converged(cluster, f"{group} bound", all_bound)
            nodes = sorted(_bound(p) for p in cluster.pods(selector).values())
            assert len(set(nodes)) == GANG, f"each member on its own node: {nodes}"
            (job,) = cluster.jobs_named(job_name, "RUNNING")
            assert sorted(cluster.hostnames(job["nodes"])) == nodes
            cluster.kubectl("delete", "pods", "-l", selector, "--wait=false")
        converged(cluster, f"{group} gone", lambda: not cluster.pods(selector))
        jobs = cluster.jobs_named(job_name)
        assert len(jobs) == 1, f"one job ever for {group}: {jobs}"
        assert jobs[0]["state"] not in ACTIVE, jobs
    finally:
        bridge.stop()
        cluster.kubectl("delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false", check=False)


GANG_DELETE_POINTS = ["gang.before-delete", "gang.after-disruption-condition", "gang.after-delete:2"]


@pytest.mark.parametrize("point", chosen(GANG_DELETE_POINTS))
def test_a_gang_whose_job_is_cancelled_killed_at(
    point: str, cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    group, job_name = unique("gang"), unique("crash-gang")
    selector = f"{POD_GROUP_LABEL}={group}"

    def drive() -> None:
        cluster.create(pod_group_manifest(group, job_name, GANG))
        for i in range(GANG):
            cluster.create(pod_manifest(f"{group}-{i}", group=group))
        wait_for(
            f"{group} bound",
            lambda: len(pods := cluster.pods(selector)) == GANG and all(_bound(p) for p in pods.values()),
            BIND_SECONDS,
        )
        (job,) = cluster.jobs_named(job_name, "RUNNING")
        cluster.slurm.cli("scancel", job["id"])

    bridge = killed_at(point, _config(slurm_cluster, kube), tmp_path, drive)
    try:
        converged(cluster, f"{group}'s members gone", lambda: not cluster.pods(selector))
        assert [j["state"] for j in cluster.jobs_named(job_name)] == ["CANCELLED"]
    finally:
        bridge.stop()
        cluster.kubectl("delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false", check=False)


# --- random kills during a burst -------------------------------------------------------------------------

BURST_PODS = int(os.environ.get("CRASH_BURST_PODS", "200"))
BURST_GANGS = int(os.environ.get("CRASH_BURST_GANGS", "20"))
BURST_KILLS = 3
RUN = "testbed.slurm-bridge.io/run-duration"


def _sacct_jobs_by_name(cluster: CrashCluster, names: list[str], since: str) -> dict[str, list[str]]:
    """Every job Slurm's accounting recorded under each name since `since` (ended ones too)."""
    found: dict[str, list[str]] = {name: [] for name in names}
    for start in range(0, len(names), 50):  # a command line of reasonable length
        chunk = ",".join(names[start : start + 50])
        out = cluster.slurm.cli(
            "sacct", "-X", "-n", "-P", "-S", since, "--name", chunk, "-o", "JobID,JobName"
        )
        for line in out.splitlines():
            job_id, _, name = line.partition("|")
            if name in found:
                found[name].append(job_id)
    return found


def test_random_kills_during_a_burst_of_pods_and_gangs(
    cluster: CrashCluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    """200 single pods and 20 gangs of 4, each running 2 s, created at once; the bridge is killed -9 at
    random moments while it submits, binds and ends them (seed printed: CRASH_BURST_SEED replays it).
    Every pod must run to completion with exactly one Slurm job ever, per pod and per gang."""
    seed = int(os.environ.get("CRASH_BURST_SEED") or time.time())
    rng = random.Random(seed)
    since = time.strftime("%Y-%m-%dT%H:%M:%S")  # Slurm runs on this host: the same clock
    singles = [unique("burst") for _ in range(BURST_PODS)]
    gangs = [(unique("bgang"), unique("crash-bgang")) for _ in range(BURST_GANGS)]
    items: list[dict[str, Any]] = []
    for group, job_name in gangs:
        items.append(pod_group_manifest(group, job_name, GANG))
        items += [pod_manifest(f"{group}-{i}", group=group) for i in range(GANG)]
    items += [pod_manifest(name) for name in singles]
    for item in items:
        if item["kind"] == "Pod":
            item["metadata"]["annotations"][RUN] = "2s"
    bridge = BridgeProcess(_config(slurm_cluster, kube), tmp_path, name="burst")
    bridge.start()
    try:
        started = time.monotonic()
        cluster.kube.kubectl(
            "create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )
        kills = sorted(rng.uniform(1.0, 30.0) for _ in range(BURST_KILLS))
        for at in kills:
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            bridge.kill9()
            bridge.start()
        names = [*singles, *(f"{g}-{i}" for g, _ in gangs for i in range(GANG))]

        def all_succeeded() -> bool:
            phases = {n: p.get("status", {}).get("phase") for n, p in cluster.pods().items()}
            return all(phases.get(n) == "Succeeded" for n in names)

        converged(cluster, f"{len(names)} pods run to completion", all_succeeded, 420)
        converged(
            cluster,
            "no active job of ours",
            lambda: not [j for j in cluster.jobs() if j["state"] in ACTIVE],
            120,
        )
        took = time.monotonic() - started
        ever = _sacct_jobs_by_name(cluster, [*singles, *(job for _, job in gangs)], since)
        twice = {name: ids for name, ids in ever.items() if len(ids) != 1}
        print(
            f"\nburst of {len(singles)} pods + {len(gangs)} gangs of {GANG}, killed at "
            f"{', '.join(f'{k:.1f}' for k in kills)} s (seed {seed}): all done in {took:.0f} s; "
            f"{sum(map(len, ever.values()))} jobs for {len(ever)} pods/gangs"
        )
        assert not twice, f"not exactly one job per pod/gang (seed {seed}): {twice}"
    finally:
        bridge.stop()
        _clear(cluster, (CLUSTER_ID,))


# --- the orphan sweep -----------------------------------------------------------------------------------


def test_the_orphan_sweep_killed_before_then_after_a_cancel(
    cluster: CrashCluster,
    orphans: tuple[float, list[int]],
    slurm_cluster: SlurmCluster,
    kube: KubeCluster,
    tmp_path: Path,
) -> None:
    """Two orphans: killed before the sweep's first cancel (both stay: the sweep runs before any worker),
    then after it (that one cancelled; the other may be too, by the pod reconciler, which ends a gone
    pod's jobs), then the restart cancels what is left. A bridge of its own cluster id, so no other
    test's bridge swept them."""
    submitted_at, ids = orphans
    time.sleep(max(0.0, submitted_at + ORPHAN_MIN_AGE_SECONDS - time.monotonic()))
    config = _config(slurm_cluster, kube, ORPHAN_CLUSTER_ID)

    def states() -> list[str]:
        return [cluster.job_state(str(i))[0] for i in ids]

    bridge = BridgeProcess(config, tmp_path, name="orphans")
    start_armed(bridge, "pod.before-orphan-cancel")
    assert states() == ["PENDING", "PENDING"]
    start_armed(bridge, "pod.after-orphan-cancel")
    # the sweep cancelled one; the other may have gone too: the pod reconciler ends a gone pod's jobs
    assert "CANCELLED" in states()
    bridge.start()
    try:
        wait_for("both orphans cancelled", lambda: states() == ["CANCELLED", "CANCELLED"], 30)
    finally:
        bridge.stop()


# --- a NodeSet's scale-in and scale-out ------------------------------------------------------------------
#
# The testbed declares only ns-[0-7] (FUTURE, partition nodeset) and runs a real slurmd for every bound
# slurmd pod of any namespace (testbed/nodeset_kubelet.py): a NodeSet here must be named `ns`. Ours lives
# in this file's namespace; it waits for the partition to be free of other sessions' NodeSets first.

NODESET = "ns"
NODESET_SELECTOR = f"app.kubernetes.io/instance={NODESET}"


class NodeSetCrashCluster(CrashCluster):
    def scale(self, replicas: int) -> None:
        self.kubectl("scale", f"nodeset/{NODESET}", f"--replicas={replicas}")

    def slurmd_pods(self) -> dict[str, dict[str, Any]]:
        return self.pods(NODESET_SELECTOR)

    def running(self) -> set[str]:
        return {
            name
            for name, p in self.slurmd_pods().items()
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }

    def sinfo(self) -> dict[str, str]:
        out = self.slurm.cli("sinfo", "-h", "-N", "-p", "nodeset", "-o", "%N|%T")
        return dict(line.split("|", 1) for line in out.splitlines() if line.strip())

    def scaled(self) -> dict[str, Any]:
        raw = self.kubectl("get", "nodeset", NODESET, "-o", "json")
        conditions = json.loads(raw).get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Scaled"), {})

    def others_use_the_partition(self) -> list[str]:
        """NodeSets of other namespaces that want replicas, and their slurmd pods on this Slurm version:
        another session's NodeSet test (or the autoscale demo) is using ns-N."""
        sets = json.loads(self.kube.kubectl("get", "nodesets", "-A", "-o", "json"))["items"]
        wanting = [
            f"nodeset {n['metadata']['namespace']}/{n['metadata']['name']}"
            for n in sets
            if n["metadata"]["namespace"] != NAMESPACE and (n.get("spec") or {}).get("replicas")
        ]
        out = self.kube.kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/name=slurmd", "-o", "json")
        return wanting + [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in json.loads(out)["items"]
            if p["metadata"]["namespace"] != NAMESPACE
            and (p["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION, DEFAULT_VERSION)
            == self.slurm.version
        ]


VERSION_ANNOTATION = "testbed.slurm-bridge.io/slurm-version"
DEFAULT_VERSION = "26.05"


def _nodeset_config(slurm: SlurmCluster, kube: KubeCluster) -> dict[str, Any]:
    config = _config(slurm, kube)
    config["nodeset"] = {"enabled": True, "namespace": NAMESPACE, "slurm_user": "root", "resync_seconds": 2}
    return config


@contextlib.contextmanager
def alone_on_the_partition(cluster: NodeSetCrashCluster) -> Iterator[None]:
    """A failure while another session's NodeSet test shares ns-N (it cancels every job of the partition
    and resets its nodes) says nothing about the bridge: skipped, with the reason."""
    try:
        yield
    except AssertionError:
        if others := cluster.others_use_the_partition():
            pytest.skip(
                f"shared testbed: another session's NodeSet ({', '.join(others)}) used ns-N meanwhile"
            )
        raise


@dataclass
class ScaleIn:
    """Two slurmd pods, a job on `busy`, `idle` free: a scale-in to 1 must take `idle`, never `busy`."""

    cluster: NodeSetCrashCluster
    config: dict[str, Any]
    workdir: Path
    busy: str = ""
    idle: str = ""
    busy_uid: str = ""
    job: str = ""

    def ready(self) -> None:
        """Back to two pods and a job on one node: after the previous point, or after another session's
        NodeSet test cancelled the partition's jobs and reset its nodes."""
        try:
            wait_for(
                "ns-N free of other sessions' NodeSets",
                lambda: not self.cluster.others_use_the_partition(),
                90,
            )
        except AssertionError as taken:
            pytest.skip(f"shared testbed: {taken}")
        if self.settled_at_two() and self.job_running():
            return
        bridge = BridgeProcess(self.config, self.workdir, name="ready")
        bridge.start()
        try:
            self.cluster.scale(2)
            wait_for(
                "ns-0 and ns-1 up",
                lambda: (
                    self.cluster.running() == {"ns-0", "ns-1"}
                    and set(self.cluster.sinfo()) == {"ns-0", "ns-1"}
                ),
                BIND_SECONDS,
            )
            if not self.job_running():
                self.submit_job()
            wait_for("two pods, one idle node", self.settled_at_two, BIND_SECONDS)
        finally:
            bridge.stop()

    def submit_job(self) -> None:
        c = self.cluster
        self.job = c.slurm.cli(
            "sbatch",
            "--parsable",
            "-p",
            "nodeset",
            "-N1",
            "-D",
            "/tmp",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 900",
        ).strip()
        self.busy = wait_for("the job running", lambda: self.job_running() and self.job_node(), 30)
        self.idle = ({"ns-0", "ns-1"} - {self.busy}).pop()
        self.busy_uid = c.slurmd_pods()[self.busy]["metadata"]["uid"]

    def job_node(self) -> str:
        if not self.job:
            return ""
        out = self.cluster.slurm.cli("squeue", "-h", "-j", self.job, "-o", "%T|%N", check=False).strip()
        return out.split("|")[1] if out.startswith("RUNNING|") else ""

    def job_running(self) -> bool:
        return bool(self.job_node())

    def check_busy_untouched(self) -> None:
        if (
            not self.job_running()
            and self.cluster.slurm.cli("squeue", "-h", "-j", self.job, check=False).strip() == ""
        ):
            # The bridge never cancels a job that is not its own: only another session's NodeSet test
            # (it cancels the whole partition) ends this one.
            pytest.skip(f"shared testbed: job {self.job} on {self.busy} was cancelled by someone else")
        pod = self.cluster.slurmd_pods().get(self.busy)
        assert pod is not None and pod["metadata"]["uid"] == self.busy_uid, f"{self.busy} was replaced"
        assert not pod["metadata"].get("deletionTimestamp"), f"{self.busy} deleted with job {self.job} on it"
        assert self.job_node() == self.busy, f"job {self.job} no longer running on {self.busy}"

    def settled_at_one(self) -> bool:
        c = self.cluster
        return (
            c.running() == {self.busy} and set(c.slurmd_pods()) == {self.busy} and self.idle not in c.sinfo()
        )

    def settled_at_two(self) -> bool:
        c = self.cluster
        return c.running() == {self.busy, self.idle} and c.sinfo().get(self.idle) == "idle"


@pytest.fixture(scope="module")
def scale_in(
    slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleIn]:
    cluster = NodeSetCrashCluster(kube, slurm_cluster)
    manifest = nodeset_manifest(slurm_cluster.version, replicas=0)
    manifest["metadata"]["namespace"] = NAMESPACE
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    config = _nodeset_config(slurm_cluster, kube)
    state = ScaleIn(cluster, config, tmp_path_factory.mktemp("nodeset"))
    bridge = BridgeProcess(config, state.workdir, name="teardown")
    try:
        yield state
        if state.job:
            cluster.slurm.cli("scancel", state.job, check=False)
        bridge.start()
        cluster.scale(0)
        with contextlib.suppress(AssertionError):  # best effort: the finally below forces it
            wait_for("slurmd pods gone", lambda: not cluster.slurmd_pods(), 60)
            wait_for("nodes back to FUTURE", lambda: not cluster.sinfo(), 30)
    finally:
        bridge.stop()
        cluster.kubectl("delete", "nodeset", NODESET, "--ignore-not-found", "--wait=true", check=False)
        cluster.kubectl("delete", "pods", "-l", NODESET_SELECTOR, "--wait=true", check=False)


# Scale-in 2 → 1 (drain the idle node, delete its pod, return it to FUTURE), then scale-out 1 → 2.
NODESET_POINTS = [
    "nodeset.before-drain",
    "nodeset.after-drain",
    "nodeset.before-pod-delete",
    "nodeset.after-pod-delete",
    "nodeset.before-retire",
    "nodeset.after-retire",
    "nodeset.before-create",
    "nodeset.after-create",
]


@pytest.mark.parametrize("point", chosen(NODESET_POINTS))
def test_a_nodeset_scale_killed_at(
    point: str, scale_in: ScaleIn, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    cluster = scale_in.cluster
    scaling_out = point in ("nodeset.before-create", "nodeset.after-create")
    scale_in.ready()

    def drive() -> None:
        cluster.scale(1)
        if scaling_out:  # armed for the way back: let the scale-in finish first
            wait_for("scaled in to the busy node", scale_in.settled_at_one, BIND_SECONDS)
            scale_in.check_busy_untouched()
            cluster.scale(2)

    with alone_on_the_partition(cluster):
        bridge = killed_at(point, scale_in.config, tmp_path, drive)
        try:
            scale_in.check_busy_untouched()
            if not scaling_out:
                wait_for("scaled in to the busy node", scale_in.settled_at_one, BIND_SECONDS)
                scale_in.check_busy_untouched()
                wait_for("Scaled", lambda: cluster.scaled().get("status") == "True", 30)
                cluster.scale(2)
            wait_for("scaled out to two", scale_in.settled_at_two, BIND_SECONDS)
            scale_in.check_busy_untouched()
            wait_for("Scaled", lambda: cluster.scaled().get("status") == "True", 30)
        finally:
            bridge.stop()


# Scale-in 2 → 0: the idle node goes, the busy one is drained and waits on its job (its pod must stay);
# then 0 → 1: the busy node is resumed, not replaced.
NODESET_BUSY_POINTS = ["nodeset.after-drain:2", "nodeset.before-resume", "nodeset.after-resume"]


@pytest.mark.parametrize("point", chosen(NODESET_BUSY_POINTS))
def test_a_nodeset_draining_a_busy_node_killed_at(
    point: str, scale_in: ScaleIn, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path: Path
) -> None:
    cluster = scale_in.cluster
    resuming = point != "nodeset.after-drain:2"
    scale_in.ready()

    def draining_busy() -> bool:
        return f"job {scale_in.job} running" in cluster.scaled().get("message", "")

    def drive() -> None:
        cluster.scale(0)
        if resuming:  # armed for the way back: let the busy node drain first
            wait_for("the busy node draining", draining_busy, BIND_SECONDS)
            cluster.scale(1)

    with alone_on_the_partition(cluster):
        bridge = killed_at(point, scale_in.config, tmp_path, drive)
        try:
            scale_in.check_busy_untouched()
            if not resuming:
                wait_for("the busy node draining", draining_busy, BIND_SECONDS)
                wait_for("the idle node gone", lambda: scale_in.idle not in cluster.sinfo(), BIND_SECONDS)
                time.sleep(3)  # a few NodeSet passes (resync 2 s): the busy pod must stay
                scale_in.check_busy_untouched()
                assert "drain" in cluster.sinfo()[scale_in.busy]
                cluster.scale(1)
            wait_for(
                "the busy node resumed",
                lambda: cluster.sinfo().get(scale_in.busy) in ("allocated", "mixed"),
                BIND_SECONDS,
            )
            scale_in.check_busy_untouched()
            wait_for("Scaled", lambda: cluster.scaled().get("status") == "True", 30)
        finally:
            bridge.stop()

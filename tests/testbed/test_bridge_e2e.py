"""A pod's whole life through Slurm, end to end: the bridge as a real process, pods through the real
API server, placeholder jobs through the real slurmrestd, on every Slurm version of the testbed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import BridgeConfig
from bridge.objects import PodInfo
from bridge.translate import placeholder_job_for
from slurm_client import JobSpec, JwtKeyAuth, SlurmClient
from tests.testbed.bridge_harness import (
    NAMESPACE,
    BridgeProcess,
    Cluster,
    bridge_config,
    condition,
    force_clear,
    phase,
    pod_manifest,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed

_PORTS = {"22.05": 17481, "24.11": 17482, "26.05": 17483}


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    return Cluster(kube, slurm_cluster)


@pytest.fixture(scope="module")
def bridge(
    cluster: Cluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    cluster_id = f"e2e-{slurm_cluster.version.replace('.', '')}"
    config = bridge_config(
        slurm_cluster, kube, cluster_id=cluster_id, metrics_port=_PORTS[slurm_cluster.version]
    )
    process = BridgeProcess(config, tmp_path_factory.mktemp(f"bridge-{slurm_cluster.version}"))
    process.start()
    yield process
    _delete_all_pods(cluster)
    process.stop()
    _force_clear(cluster)


def _delete_all_pods(cluster: Cluster) -> None:
    cluster.kube.kubectl("-n", NAMESPACE, "delete", "pods", "--all", "--wait=false")
    with contextlib.suppress(AssertionError):
        wait_for(
            "pods gone", lambda: not cluster.kube.kubectl("-n", NAMESPACE, "get", "pods", "-o", "name"), 40
        )


def _force_clear(cluster: Cluster) -> None:
    """Whatever a failed test left: drop finalizers so the next Slurm version starts clean."""
    force_clear(cluster.kube, NAMESPACE)


def _bound_node(cluster: Cluster, name: str) -> str:
    pod = cluster.pod(name)
    return str(pod["spec"].get("nodeName") or "") if pod else ""


def _active_jobs(cluster: Cluster, pod_name: str) -> list[dict[str, str]]:
    return [j for j in cluster.jobs_for_pod(pod_name) if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]


def _pod_gone(cluster: Cluster, name: str) -> bool:
    return cluster.pod(name) is None


# --- the core path ------------------------------------------------------------------------------------


def test_pause_pod_runs_through_slurm_and_is_cleaned_up(cluster: Cluster, bridge: BridgeProcess) -> None:
    """The seed's first demo: job named by the annotation, pod bound where Slurm placed it."""
    name = unique("pause")
    job_name = unique("pausepod")
    # written as the seed's demo pod: no toleration for the bridged nodes' taint (the bridge adds it)
    cluster.create(pod_manifest(name, annotations={"slinky.slurm.net/job-name": job_name}, tolerate=False))
    node = wait_for("pod bound", lambda: _bound_node(cluster, name), 30)
    jobs = cluster.jobs_named(job_name)
    assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
    assert jobs[0]["nodes"] == node  # bound exactly where Slurm allocated
    wait_for("pod Running", lambda: phase(cluster.pod(name)) == "Running", 30)
    pod = cluster.pod(name)
    assert pod is not None
    assert pod["metadata"]["labels"]["scheduler.slinky.slurm.net/slurm-jobid"] == jobs[0]["id"]
    assert pod["metadata"]["annotations"]["slinky.slurm.net/slurm-node"] == node
    assert "scheduler.slurm.net/finalizer" in pod["metadata"]["finalizers"]
    assert jobs[0]["comment"].startswith("slurm-bridge/v1 ")
    assert {"key": "slinky.slurm.net/managed-node", "operator": "Exists"} in pod["spec"]["tolerations"]
    metrics = httpx.get(f"http://{bridge.config['metrics_listen_address']}/metrics", timeout=10).text
    for histogram in (
        "slurm_bridge_pod_created_to_submitted_seconds",
        "slurm_bridge_job_started_to_pod_bound_seconds",
    ):
        count = next(line for line in metrics.splitlines() if line.startswith(f"{histogram}_count"))
        assert float(count.split()[-1]) >= 1, count

    cluster.delete_pod(name)
    wait_for("pod gone", lambda: _pod_gone(cluster, name), 40)
    wait_for("job ended", lambda: cluster.jobs_named(job_name)[0]["state"] not in ("RUNNING", "PENDING"), 30)
    bridge.assert_alive()


@pytest.mark.parametrize(
    ("exit_code", "job_state", "job_exit"),
    [(None, "COMPLETED", "0:0"), ("3", "FAILED", "3:0")],  # the pod's exit code, not 1
    ids=["succeeded", "failed"],
)
def test_pod_outcome_reaches_slurm_accounting(
    cluster: Cluster, bridge: BridgeProcess, exit_code: str | None, job_state: str, job_exit: str
) -> None:
    name = unique("outcome")
    annotations = {"testbed.slurm-bridge.io/run-duration": "2s"}
    if exit_code is not None:
        annotations["testbed.slurm-bridge.io/exit-code"] = exit_code
    cluster.create(pod_manifest(name, annotations=annotations))
    wait_for("pod finished", lambda: phase(cluster.pod(name)) in ("Succeeded", "Failed"), 40)
    job_id = cluster.jobs_for_pod(name)[0]["id"]
    wait_for(f"job {job_state}", lambda: cluster.job_state(job_id)[0] == job_state, 30)
    assert cluster.job_state(job_id) == (job_state, job_exit)
    # the finalizer is released once the job has ended: the pod can be deleted at once
    pod = cluster.pod(name)
    assert pod is not None and "scheduler.slurm.net/finalizer" not in (
        pod["metadata"].get("finalizers") or []
    )
    cluster.delete_pod(name)


def test_pending_reason_shown_then_bound_when_nodes_free(cluster: Cluster, bridge: BridgeProcess) -> None:
    blocker = _block_all_nodes(cluster)
    try:
        name = unique("waiter")
        cluster.create(pod_manifest(name))

        def reason() -> str:
            found = condition(cluster.pod(name), "PodScheduled")
            return str(found.get("message")) if found and "Resources" in str(found.get("message")) else ""

        message = wait_for("pending reason Resources on the pod", reason, 40)
        assert message.startswith("Slurm job ") and message.endswith(": Resources")
        assert "SlurmJobPending" in cluster.event_reasons(name)
        assert _bound_node(cluster, name) == ""
    finally:
        cluster.slurm.cli("scancel", blocker)
    wait_for("pod bound after nodes freed", lambda: _bound_node(cluster, name), 40)
    cluster.delete_pod(name)


def test_scancel_of_placeholder_deletes_pod(cluster: Cluster, bridge: BridgeProcess) -> None:
    name = unique("scancelled")
    cluster.create(pod_manifest(name))
    wait_for("pod bound", lambda: _bound_node(cluster, name), 30)
    job_id = cluster.jobs_for_pod(name)[0]["id"]
    cluster.slurm.cli("scancel", job_id)
    wait_for("pod deleted", lambda: _pod_gone(cluster, name), 40)
    # the event outlives the pod
    wait_for("event SlurmJobCancelled", lambda: "SlurmJobCancelled" in cluster.event_reasons(name), 10)


def test_deleting_pending_pod_cancels_its_job(cluster: Cluster, bridge: BridgeProcess) -> None:
    blocker = _block_all_nodes(cluster)
    try:
        name = unique("unwanted")
        cluster.create(pod_manifest(name))
        job = wait_for("pending job", lambda: _active_jobs(cluster, name), 30)[0]
        assert job["state"] == "PENDING"
        cluster.delete_pod(name)
        wait_for("pending pod gone", lambda: _pod_gone(cluster, name), 30)
        wait_for("its job cancelled", lambda: cluster.job_state(job["id"])[0] == "CANCELLED", 30)
    finally:
        cluster.slurm.cli("scancel", blocker)


def _block_all_nodes(cluster: Cluster) -> str:
    """An operator's job holding every node of the partition, so the bridge's jobs must wait."""
    out = cluster.slurm.cli(
        "sbatch",
        "--parsable",
        "-p",
        cluster.slurm.partition,
        "-N",
        "4",
        "--exclusive",
        "-J",
        "e2e-blocker",
        "-D",
        "/tmp",
        "--wrap",
        "sleep 300",
    )
    job_id = out.strip().split(";")[0]
    wait_for("blocker running", lambda: cluster.job_state(job_id)[0] == "RUNNING", 30)
    return job_id


def test_namespace_outside_allow_list_is_refused(cluster: Cluster, bridge: BridgeProcess) -> None:
    namespace = unique("not-allowed")
    cluster.kube.kubectl("create", "namespace", namespace)
    try:
        wait_for(
            "service account",
            lambda: cluster.kube.kubectl("-n", namespace, "get", "sa", "default", check=False),
        )
        name = unique("refused")
        job_name = unique("refusedjob")
        cluster.create(
            pod_manifest(name, namespace=namespace, annotations={"slinky.slurm.net/job-name": job_name})
        )

        def refused() -> bool:
            found = condition(cluster.pod(name, namespace), "PodScheduled")
            return bool(
                found and found.get("reason") == "NamespaceNotAllowed" and found.get("status") == "False"
            )

        wait_for("NamespaceNotAllowed condition", refused, 30)
        assert "NamespaceNotAllowed" in cluster.event_reasons(name, namespace)
        assert cluster.jobs_named(job_name) == []
    finally:
        cluster.kube.kubectl("delete", "namespace", namespace, "--wait=false")


def test_bad_annotation_is_reported_and_fixing_it_takes_effect(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    name = unique("badopt")
    cluster.create(pod_manifest(name, annotations={"slinky.slurm.net/timelimit": "soon"}))

    def invalid() -> str:
        found = condition(cluster.pod(name), "PodScheduled")
        return str(found.get("message")) if found and found.get("reason") == "InvalidSlurmJobOptions" else ""

    message = wait_for("InvalidSlurmJobOptions condition", invalid, 30)
    assert "timelimit" in message
    assert cluster.jobs_for_pod(name) == []
    cluster.kube.kubectl(
        "-n", NAMESPACE, "annotate", "pod", name, "--overwrite", "slinky.slurm.net/timelimit=5"
    )
    wait_for("pod bound after the fix", lambda: _bound_node(cluster, name), 30)
    out = cluster.slurm.cli("squeue", "-h", "-j", cluster.jobs_for_pod(name)[0]["id"], "-o", "%l")
    assert out.strip() == "5:00"
    cluster.delete_pod(name)


def test_unknown_partition_is_reported_on_the_pod(cluster: Cluster, bridge: BridgeProcess) -> None:
    name = unique("nopart")
    cluster.create(pod_manifest(name, annotations={"slinky.slurm.net/partition": "no-such-partition"}))

    def refused() -> str:
        found = condition(cluster.pod(name), "PodScheduled")
        return str(found.get("message")) if found and "Slurm refused" in str(found.get("message")) else ""

    wait_for("Slurm's refusal on the pod", refused, 30)
    assert cluster.jobs_for_pod(name) == []
    cluster.delete_pod(name)
    wait_for("pod gone", lambda: _pod_gone(cluster, name), 30)
    bridge.assert_alive()


def test_slurmrestd_down_is_shown_on_the_pod_and_recovered(
    cluster: Cluster, bridge: BridgeProcess, slurm_cluster: SlurmCluster
) -> None:
    restd = f"slurmrestd .*127.0.0.1:{slurm_cluster.url.rsplit(':', 1)[1]}"
    subprocess.run(["pkill", "-f", restd], check=False)
    try:
        name = unique("no-slurm")
        cluster.create(pod_manifest(name))

        def unavailable() -> bool:
            found = condition(cluster.pod(name), "PodScheduled")
            return bool(found and found.get("reason") == "SlurmUnavailable")

        wait_for("SlurmUnavailable condition", unavailable, 40)
        bridge.assert_alive()
    finally:
        subprocess.run(["bash", str(REPO / "testbed" / "slurm.sh"), "up", slurm_cluster.version], check=True)
    wait_for("pod bound once slurmrestd is back", lambda: _bound_node(cluster, name), 90)
    assert len(cluster.jobs_for_pod(name)) == 1
    cluster.delete_pod(name)


# --- restarts and replicas ----------------------------------------------------------------------------


def test_crash_between_submit_and_label_leaves_exactly_one_job(
    cluster: Cluster, bridge: BridgeProcess, slurm_cluster: SlurmCluster
) -> None:
    """Reproduce the state a kill -9 right after the submit leaves: a job with the pod's marker, and a
    pod with neither label nor finalizer. The restarted bridge adopts the job instead of submitting."""
    bridge.stop()
    name = unique("adopted")
    try:
        cluster.create(pod_manifest(name))
        pod = wait_for("pod created", lambda: cluster.pod(name), 10)
        config = BridgeConfig(**bridge.config)
        spec = placeholder_job_for(PodInfo.from_api(pod), config)
        job_id = asyncio.run(_submit(slurm_cluster, spec))
    finally:
        bridge.start()
    wait_for("pod bound", lambda: _bound_node(cluster, name), 40)
    jobs = cluster.jobs_for_pod(name)
    assert [j["id"] for j in jobs] == [str(job_id)], jobs
    pod = cluster.pod(name)
    assert pod is not None and pod["metadata"]["labels"]["scheduler.slinky.slurm.net/slurm-jobid"] == str(
        job_id
    )
    cluster.delete_pod(name)


async def _submit(slurm_cluster: SlurmCluster, spec: Any) -> int:
    async with SlurmClient(
        slurm_cluster.url, auth=JwtKeyAuth(slurm_cluster.user, slurm_cluster.jwt_key_file)
    ) as c:
        return (await c.submit_job(spec)).job_id


def test_kill9_during_a_burst_loses_nothing_and_duplicates_nothing(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    names = [unique("burst") for _ in range(6)]
    for name in names:
        cluster.create(pod_manifest(name, cpu="500m", memory="64Mi"))
    time.sleep(random.uniform(0.2, 1.0))
    bridge.kill9()
    bridge.start()
    for name in names:
        wait_for(f"{name} bound", partial(_bound_node, cluster, name), 60)
    for name in names:
        jobs = cluster.jobs_for_pod(name)
        assert len(jobs) == 1, f"{name}: {jobs}"
        assert jobs[0]["state"] == "RUNNING"
    for name in names:
        cluster.delete_pod(name)
    for name in names:
        wait_for(f"{name} gone", partial(_pod_gone, cluster, name), 40)


def test_orphan_job_is_cancelled_and_foreign_jobs_are_left_alone(
    cluster: Cluster, bridge: BridgeProcess, slurm_cluster: SlurmCluster
) -> None:
    cluster_id = bridge.config["cluster_id"]

    def marker(cluster_name: str) -> str:
        pod = f"{NAMESPACE}/ghost"
        return f"slurm-bridge/v1 cluster={cluster_name} pod={pod} spec=0123456789ab uid={uuid.uuid4()}"

    # Submitted as the bridge's Slurm user, as the bridge itself would have: the orphan to clean up.
    orphan = asyncio.run(
        _submit(
            slurm_cluster,
            JobSpec(
                name="e2e-orphan",
                partition=cluster.slurm.partition,
                hold=True,
                comment=marker(cluster_id),
                script=SLEEP,
            ),
        )
    )
    foreign = {
        "other-cluster": marker("someone-else"),
        "json": json.dumps({"pods": [f"{NAMESPACE}/ghost"]}),
        "other-user": marker(cluster_id),
    }
    ids = {}
    for label, comment in foreign.items():
        # sbatch runs as root here: "other-user" carries our exact marker but is not the bridge user's job
        ids[label] = (
            cluster.slurm.cli(
                "sbatch",
                "--parsable",
                "-p",
                cluster.slurm.partition,
                "-J",
                f"e2e-foreign-{label}",
                "-D",
                "/tmp",
                "--hold",
                f"--comment={comment}",
                "--wrap",
                "sleep 60",
            )
            .strip()
            .split(";")[0]
        )
    try:
        wait_for("our orphan cancelled", lambda: cluster.job_state(str(orphan))[0] == "CANCELLED", 30)
        time.sleep(2)
        for label, job_id in ids.items():
            assert cluster.job_state(job_id)[0] == "PENDING", label
    finally:
        cluster.slurm.cli("scancel", *ids.values(), check=False)


SLEEP = "#!/bin/sh\nsleep 60\n"


def test_two_replicas_only_the_leader_acts(cluster: Cluster, bridge: BridgeProcess, tmp_path: Path) -> None:
    host, port = str(bridge.config["metrics_listen_address"]).rsplit(":", 1)
    # +100, not +10: 17481 + 10 is prometheus-adapter's port, and a bridge that cannot serve its
    # metrics and probes stops at start
    replica_config = {**bridge.config, "metrics_listen_address": f"{host}:{int(port) + 100}"}
    second = BridgeProcess(replica_config, tmp_path, name="replica")
    second.start()
    try:
        names = [unique("replicated") for _ in range(3)]
        for name in names:
            cluster.create(pod_manifest(name, cpu="500m", memory="64Mi"))
        for name in names:
            wait_for(f"{name} bound", partial(_bound_node, cluster, name), 40)
            assert len(cluster.jobs_for_pod(name)) == 1
        second.assert_alive()
        assert "submitted Slurm job" not in second.log()
        # the leader dies: the replica takes over within the lease duration
        bridge.kill9()
        late = unique("after-failover")
        cluster.create(pod_manifest(late, cpu="500m", memory="64Mi"))
        wait_for("pod bound by the new leader", lambda: _bound_node(cluster, late), 40)
        assert "submitted Slurm job" in second.log()
        for name in [*names, late]:
            cluster.delete_pod(name)
        for name in [*names, late]:
            wait_for(f"{name} gone", partial(_pod_gone, cluster, name), 40)
    finally:
        second.stop()
        if bridge.process is None:
            bridge.start()


@pytest.mark.slurm_default_only
def test_time_limit_ends_the_pod(cluster: Cluster, bridge: BridgeProcess) -> None:
    name = unique("timed")
    cluster.create(pod_manifest(name, annotations={"slinky.slurm.net/timelimit": "1"}))
    wait_for("pod bound", lambda: _bound_node(cluster, name), 30)
    job_id = cluster.jobs_for_pod(name)[0]["id"]
    wait_for("job TIMEOUT", lambda: cluster.job_state(job_id)[0] == "TIMEOUT", 150, every=2)
    wait_for("pod deleted", lambda: _pod_gone(cluster, name), 40)
    wait_for("event SlurmJobTimeout", lambda: "SlurmJobTimeout" in cluster.event_reasons(name), 10)

"""Slurm's policies govern bridged pods, end to end, on every Slurm version of the testbed.

The testbed runs slurmdbd (MariaDB), priority/multifactor with fair-share, QOS normal/high/scavenger/
spot/limited, preempt/qos (high preempts scavenger, cancelled: PreemptMode=CANCEL, and spot, requeued:
the QOS's PreemptMode=REQUEUE) and backfill (testbed/slurm.sh).
The bridge runs as a real process in a namespace of its own; every test reads Slurm's own view
(sacct, sprio, sshare, squeue) beside the pods.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from tests.testbed.bridge_harness import (
    BridgeProcess,
    Cluster,
    bridge_config,
    condition,
    phase,
    pod_manifest,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed

NS = "accounting-e2e"
_PORTS = {"22.05": 17597, "24.11": 17598, "26.05": 17599}
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
JOB_ID_LABEL = "scheduler.slinky.slurm.net/slurm-jobid"
RUN = "testbed.slurm-bridge.io/run-duration"
EXIT = "testbed.slurm-bridge.io/exit-code"
OPT = "slinky.slurm.net/"
# REST v0.0.43 (Slurm 25.05+) has EXTERNAL_JOB; the testbed's versions below it refuse external mode.
EXTERNAL_VERSIONS = {"26.05"}
# A scheduler name of this module's own: bridges of other sessions (other cluster ids) watch the shared
# name and would take this module's pods for theirs ("job vanished").
SCHEDULER_NAME = "acct-e2e-scheduler"
X_SCHEDULER_NAME = "acct-x-scheduler"


def _config(slurm: SlurmCluster, kube: KubeCluster, cluster_id: str, **slurm_extra: Any) -> dict[str, Any]:
    config = bridge_config(slurm, kube, cluster_id=cluster_id, metrics_port=_PORTS[slurm.version])
    config["namespaces"] = [NS]
    config["scheduler_name"] = SCHEDULER_NAME
    config["leader_election"]["lease_name"] = f"e2e-{cluster_id}"
    # No default limit: a pod without a time limit asks for the partition's (INFINITE).
    config["slurm"].pop("default_time_limit_minutes", None)
    config["slurm"].update(slurm_extra)
    return config


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    kube.kubectl("create", "namespace", NS, check=False)
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    return Cluster(kube, slurm_cluster)


@pytest.fixture(scope="module")
def charged(cluster: Cluster) -> float:
    """Usage for account biology, started first so that Slurm's next fair-share pass (every minute)
    has seen it when the fair-share test runs: 4 nodes x 4 CPUs for 3 s."""
    cluster.slurm.cli(
        "sbatch", "--parsable", "-p", cluster.slurm.partition, "-A", "biology", "-N", "1-4", "--exclusive",
        "-J", "acct-charge", "-D", "/tmp", "-t", "1", "--wrap", "sleep 3",
    )  # fmt: skip
    return time.monotonic()


@pytest.fixture(scope="module")
def bridge(
    cluster: Cluster, charged: float, slurm_cluster: SlurmCluster, kube: KubeCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BridgeProcess]:  # fmt: skip
    cluster_id = f"acct-{slurm_cluster.version.replace('.', '')}"
    process = BridgeProcess(
        _config(slurm_cluster, kube, cluster_id), tmp_path_factory.mktemp(f"acct-{slurm_cluster.version}")
    )
    process.start()
    yield process
    _clear(cluster)
    process.stop()
    _force_clear(cluster)


@pytest.fixture(scope="module")
def timeout_pod(cluster: Cluster, bridge: BridgeProcess) -> tuple[str, float]:
    """A pod with a one-minute limit that would run 10 minutes: started early, checked late
    (Slurm's time-limit check adds up to ~30 s to the minute)."""
    name = unique("acct-timeout")
    cluster.create(_pod(name, {OPT + "timelimit": "1", RUN: "600s"}))
    return name, time.monotonic()


def _clear(cluster: Cluster) -> None:
    kubectl = cluster.kube.kubectl
    kubectl("-n", NS, "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)
    kubectl("-n", NS, "delete", "pods", "--all", "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("pods gone", lambda: not kubectl("-n", NS, "get", "pods", "-o", "name"), 40)


def _force_clear(cluster: Cluster) -> None:
    names = cluster.kube.kubectl("-n", NS, "get", "pods", "-o", "name").split()
    for name in names:
        cluster.kube.kubectl(
            "-n", NS, "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
        )
    if names:
        cluster.kube.kubectl("-n", NS, "delete", "pods", "--all", "--grace-period=0", "--force", check=False)


def _pod(
    name: str, annotations: dict[str, str], cpu: str = "1", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return _ours(pod_manifest(name, annotations=annotations, cpu=cpu, namespace=NS, labels=labels))


def _ours(manifest: dict[str, Any], scheduler: str = SCHEDULER_NAME) -> dict[str, Any]:
    manifest["spec"]["schedulerName"] = scheduler
    return manifest


def _get(cluster: Cluster, name: str) -> dict[str, Any] | None:
    return cluster.pod(name, NS)


def _wait_job_id(cluster: Cluster, name: str, timeout: float = 60) -> str:
    job_id: str = wait_for(f"{name}'s Slurm job", partial(_job_id, cluster, name), timeout)
    return job_id


def _job_id(cluster: Cluster, name: str) -> str:
    pod = _get(cluster, name)
    return str(((pod or {}).get("metadata") or {}).get("labels", {}).get(JOB_ID_LABEL) or "")


def _sacct(cluster: Cluster, job_id: str) -> dict[str, str]:
    fields = "JobID,State,ExitCode,Account,QOS,Partition,User,ElapsedRaw"
    out = cluster.slurm.cli("sacct", "-X", "-n", "-P", "-j", job_id, "-o", fields)
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return dict(zip(fields.split(","), rows[-1], strict=True)) if rows else {}


def _final_sacct(cluster: Cluster, job_id: str, timeout: float = 60) -> dict[str, str]:
    def done() -> dict[str, str] | None:
        row = _sacct(cluster, job_id)
        return row if row and row["State"].split()[0] not in ("PENDING", "RUNNING", "REQUEUED") else None

    row: dict[str, str] = wait_for(f"sacct's final record of job {job_id}", done, timeout, every=0.5)
    return row


def _sacct_start(cluster: Cluster, job_id: str) -> str:
    """The job's start time as sacct records it (ISO, seconds)."""
    return cluster.slurm.cli("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Start").strip().splitlines()[-1]


def _squeue(cluster: Cluster, job_id: str) -> tuple[str, str]:
    out = cluster.slurm.cli("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False).strip()
    state, _, reason = out.partition("|")
    return state, reason


def _events(cluster: Cluster, name: str) -> set[str]:
    return cluster.event_reasons(name, NS)


def _block(cluster: Cluster, nodes: int, *extra: str, name: str = "acct-block", secs: int = 300) -> str:
    """A root job holding `nodes` whole nodes (0: as many as are free, 1 to 4); QOS normal."""
    count = str(nodes) if nodes else f"1-{len(cluster.slurm.nodes)}"
    out = cluster.slurm.cli(
        "sbatch", "--parsable", "-p", cluster.slurm.partition, "-N", count, "--exclusive", "-J", name,
        "-D", "/tmp", *extra, "--wrap", f"sleep {secs}",
    )  # fmt: skip
    return out.strip().split(";")[0]


# --- accounting -------------------------------------------------------------------------------------


def test_sacct_shows_the_pods_truth(
    cluster: Cluster, bridge: BridgeProcess, timeout_pod: tuple[str, float]
) -> None:
    ok, failed, deleted = unique("acct-ok"), unique("acct-fail"), unique("acct-del")
    cluster.create(_pod(ok, {OPT + "account": "physics", OPT + "qos": "normal", RUN: "4s", EXIT: "0"}))
    cluster.create(_pod(failed, {OPT + "account": "biology", OPT + "qos": "high", RUN: "4s", EXIT: "3"}))
    cluster.create(_pod(deleted, {RUN: "600s"}))
    ids = {n: _wait_job_id(cluster, n) for n in (ok, failed, deleted)}
    wait_for("pod Running", lambda: phase(_get(cluster, deleted)) == "Running", 30)
    time.sleep(2)
    cluster.delete_pod(deleted, NS)
    rows = {n: _final_sacct(cluster, ids[n]) for n in (ok, failed, deleted)}
    print(f"\nSlurm {cluster.slurm.version} sacct:")
    for n, row in rows.items():
        print(f"  {n:<20} " + " | ".join(f"{k}={v}" for k, v in row.items()))
    assert (rows[ok]["State"], rows[ok]["ExitCode"]) == ("COMPLETED", "0:0")
    assert (rows[failed]["State"], rows[failed]["ExitCode"]) == ("FAILED", "3:0")  # the pod's code, not 1
    # Deleted while running: the job ends with what the pod reported when it stopped. The testbed's
    # kubelet stand-in stops a deleted pod as Succeeded (a pause container exits 0 on SIGTERM), so
    # COMPLETED 0:0 after the seconds it ran; a container killed by SIGTERM would give FAILED 143:0.
    assert (rows[deleted]["State"], rows[deleted]["ExitCode"]) == ("COMPLETED", "0:0"), rows[deleted]
    assert int(rows[deleted]["ElapsedRaw"]) < 30, rows[deleted]
    for n, account, qos in (
        (ok, "physics", "normal"),
        (failed, "biology", "high"),
        (deleted, "bridge", "normal"),
    ):
        row = rows[n]
        assert (row["Account"], row["QOS"], row["Partition"], row["User"]) == (
            account, qos, cluster.slurm.partition, "slurm",
        ), row  # fmt: skip
    # elapsed: what the pod used (run-duration 4 s, plus kwok's and the bridge's reaction times)
    assert 3 <= int(rows[ok]["ElapsedRaw"]) <= 20, rows[ok]
    assert 3 <= int(rows[failed]["ElapsedRaw"]) <= 20, rows[failed]


def test_time_limit_ends_the_pod_with_slurm_job_timeout(
    cluster: Cluster, bridge: BridgeProcess, timeout_pod: tuple[str, float]
) -> None:
    name, started = timeout_pod
    job_id = wait_for("timeout pod's job", lambda: _job_id(cluster, name), 60)
    left = 180 - (time.monotonic() - started)
    wait_for(
        "SlurmJobTimeout event", lambda: "SlurmJobTimeout" in _events(cluster, name), max(left, 10), every=1
    )
    wait_for("pod removed", lambda: _get(cluster, name) is None, 60)
    row = _final_sacct(cluster, job_id)
    print(f"\nSlurm {cluster.slurm.version} time limit: {row}")
    assert row["State"] == "TIMEOUT", row


# --- QOS limits -------------------------------------------------------------------------------------


def test_qos_limit_holds_the_excess_pods_and_says_which(cluster: Cluster, bridge: BridgeProcess) -> None:
    names = [unique("acct-lim") for _ in range(3)]
    for n in names:
        cluster.create(_pod(n, {OPT + "qos": "limited", RUN: "30s"}))

    def split() -> tuple[list[str], list[str]] | None:
        pods = {n: _get(cluster, n) for n in names}
        running = [n for n, p in pods.items() if (p or {}).get("spec", {}).get("nodeName")]
        waiting = [
            n for n, p in pods.items()
            if "QOSMaxJobsPerUserLimit" in str((condition(p, "PodScheduled") or {}).get("message"))
        ]  # fmt: skip
        return (running, waiting) if len(running) == 1 and len(waiting) == 2 else None

    _running, waiting = wait_for("one running, two held by the QOS limit", split, 60)
    message = (condition(_get(cluster, waiting[0]), "PodScheduled") or {}).get("message", "")
    print(f"\nSlurm {cluster.slurm.version}: {waiting[0]} PodScheduled=False: {message}")
    assert "the QOS lets each user run only a limited number of jobs at once" in message
    assert _squeue(cluster, _job_id(cluster, waiting[0]))[1] == "QOSMaxJobsPerUserLimit"
    for n in names:
        cluster.delete_pod(n, NS)


# --- fair-share -------------------------------------------------------------------------------------


def _fairshare(cluster: Cluster) -> dict[str, float]:
    out = cluster.slurm.cli(
        "sshare", "-a", "-n", "-P", "-A", "physics,biology", "-o", "Account,User,FairShare"
    )  # fmt: skip
    shares: dict[str, float] = {}
    for line in out.splitlines():
        account, user, fs = ([*line.split("|"), "", "", ""])[:3]
        if user.strip() == "slurm" and fs:
            shares[account.strip()] = float(fs)
    return shares


def test_fair_share_orders_the_queue(cluster: Cluster, bridge: BridgeProcess, charged: float) -> None:
    # biology's usage (the `charged` job) must have reached the fair-share factors (recomputed each minute)
    shares = wait_for(
        "biology's fair-share below physics'",
        lambda: (s := _fairshare(cluster)) and len(s) == 2 and s["biology"] < s["physics"] and s,
        max(90 - (time.monotonic() - charged), 10),
        every=2,
    )
    # The blocker must hold EVERY node: one holding only the nodes free at the time let an earlier
    # test's job end under it and the first biology pod start on that node before the rest were queued.
    blocker = _block(cluster, len(cluster.slurm.nodes), name="acct-fs-block")
    try:
        # earlier tests' jobs may still hold nodes: the blocker waits for them to end
        wait_for("blocker running", lambda: _squeue(cluster, blocker)[0] == "RUNNING", 240, every=1)
        pods = []
        # the same backlog for both accounts (as many pods each as there are nodes, each pod a whole
        # node), submitted interleaved, biology first: the first wave must be all physics
        for i in range(len(cluster.slurm.nodes)):
            for account in ("biology", "physics"):
                name = unique(f"acct-fs-{account[:3]}{i}")
                pods.append((name, account))
                cluster.create(_pod(name, {OPT + "account": account, RUN: "4s", EXIT: "0"}, cpu="4"))
        ids = {n: _wait_job_id(cluster, n) for n, _ in pods}
        # sprio lists pending jobs only (`-j` with a started one fails): filter its whole list
        listed = cluster.slurm.cli("sprio", "-o", "%.8i %.10a %.10Y %.10F %.8A %.8Q").splitlines()
        sprio = "\n".join(r for r in listed if r.split()[0] in {"JOBID", *ids.values()}) + "\n"
        sshare = cluster.slurm.cli(
            "sshare", "-a", "-A", "physics,biology", "-o", "Account,User,RawShares,RawUsage,FairShare"
        )
        cluster.slurm.cli("scancel", blocker)

        starts: dict[str, float] = {}

        def all_started() -> bool:
            for n, _ in pods:
                if n not in starts and (_get(cluster, n) or {}).get("spec", {}).get("nodeName"):
                    starts[n] = time.monotonic()
            return len(starts) == len(pods)

        wait_for("every backlog pod started", all_started, 120, every=0.2)
    finally:
        cluster.slurm.cli("scancel", blocker, check=False)
    # Slurm's own start times (seconds): no biology job may start before a physics one (a wave that
    # starts the last physics jobs may start biology ones in the same second)
    slurm_start = {n: _sacct_start(cluster, ids[n]) for n, _ in pods}
    order = sorted(pods, key=lambda p: (slurm_start[p[0]], starts[p[0]]))
    t0 = min(starts.values())
    print(f"\nSlurm {cluster.slurm.version} fair-share (FairShare {shares}):\n{sshare}{sprio}start order:")
    for n, account in order:
        print(f"  {slurm_start[n]}  +{starts[n] - t0:5.1f} s  {account:<8} {n} (job {ids[n]})")
    last_physics = max(slurm_start[n] for n, a in pods if a == "physics")
    first_biology = min(slurm_start[n] for n, a in pods if a == "biology")
    assert last_physics <= first_biology, order


# --- backfill ---------------------------------------------------------------------------------------


def test_backfill_starts_a_pod_with_a_limit_ahead_of_a_big_job(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    # One node busy for at most 4 minutes; a big high-priority job waits for all four: three nodes
    # are a hole of 4 minutes that only a job with a shorter limit may use. (A 2-minute hole failed
    # now and then: backfill plans in whole minutes (bf_resolution=60), so a 1-minute job submitted
    # late in a minute could overlap the big job's rounded start.)
    busy = _block(cluster, 1, "-t", "4", name="acct-bf-busy", secs=230)
    wait_for("busy job running", lambda: _squeue(cluster, busy)[0] == "RUNNING", 60)
    big = _block(cluster, 4, "-q", "high", "-A", "physics", "-t", "5", name="acct-bf-big", secs=5)
    limited, unlimited = unique("acct-bf-lim"), unique("acct-bf-inf")
    try:
        wait_for("big job pending", lambda: _squeue(cluster, big)[0] == "PENDING", 30)
        cluster.create(_pod(limited, {OPT + "timelimit": "1", RUN: "600s"}))
        cluster.create(_pod(unlimited, {RUN: "600s"}))
        try:
            wait_for(
                "pod with a limit backfilled",
                lambda: (_get(cluster, limited) or {}).get("spec", {}).get("nodeName"),
                45,
            )
        except AssertionError:
            print(cluster.slurm.cli("squeue", "-o", "%.8i %.14j %.9T %.22r %.10l %.6D %N %S %Q"))
            print(cluster.slurm.cli("sinfo", "-N", "-o", "%N %T %C %E"))
            raise
        time.sleep(12)  # two more backfill passes (bf_interval=5): the pod without a limit must still wait
        assert not (_get(cluster, unlimited) or {}).get("spec", {}).get("nodeName")
        assert _squeue(cluster, big)[0] == "PENDING"
        state, reason = _squeue(cluster, _job_id(cluster, unlimited))
        print(
            f"\nSlurm {cluster.slurm.version} backfill: {limited} (limit 1 min) started in the hole; "
            f"{unlimited} (no limit) {state} ({reason}); big job {big} PENDING"
        )
        assert state == "PENDING"
    finally:
        cluster.delete_pod(limited, NS)
        cluster.delete_pod(unlimited, NS)
        cluster.slurm.cli("scancel", busy, big, check=False)


# --- preemption -------------------------------------------------------------------------------------


def _pod_group(name: str, min_member: int, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"minMember": min_member},
    }


def test_high_job_preempts_a_scavenger_pod_and_gang(cluster: Cluster, bridge: BridgeProcess) -> None:
    single = unique("acct-scav")
    group = unique("acct-scavg")
    members = [f"{group}-{i}" for i in range(2)]
    # a limit lets the lowest-priority pods backfill past other sessions' pending jobs
    scavenge = {OPT + "qos": "scavenger", OPT + "account": "scavenge", OPT + "timelimit": "10"}
    cluster.create(_pod(single, {**scavenge, RUN: "600s"}))
    cluster.create(_pod_group(group, 2, scavenge))
    for m in members:
        cluster.create(_pod(m, {RUN: "600s"}, labels={POD_GROUP_LABEL: group}))
    names = [single, *members]
    wait_for("scavenger pods Running", lambda: all(phase(_get(cluster, n)) == "Running" for n in names), 240)
    ids = {n: _job_id(cluster, n) for n in names}
    assert ids[members[0]] == ids[members[1]]  # one job for the gang
    # the high job asks for exactly the scavengers' nodes, whole: it can only start by preempting them
    # (not by waiting for other sessions' jobs elsewhere)
    held = sorted({str((_get(cluster, n) or {}).get("spec", {}).get("nodeName")) for n in names})
    high = _block(
        cluster,
        len(held),
        "-w",
        ",".join(held),
        "-q",
        "high",
        "-A",
        "physics",
        "-t",
        "2",
        name="acct-high",
        secs=5,
    )
    disrupted: dict[str, str] = {}
    try:

        def all_removed() -> bool:
            for n in names:
                pod = _get(cluster, n)
                c = condition(pod, "DisruptionTarget")
                if c is not None and c.get("status") == "True":
                    disrupted[n] = str(c.get("reason"))
            return all(_get(cluster, n) is None for n in names)

        wait_for("scavenger pods evicted", all_removed, 180, every=0.2)
        rows = {n: _final_sacct(cluster, ids[n]) for n in (single, members[0])}
        print(f"\nSlurm {cluster.slurm.version} preemption by job {high}:")
        for n, row in rows.items():
            print(f"  {n:<22} " + " | ".join(f"{k}={v}" for k, v in row.items()))
        for row in rows.values():
            assert row["State"] == "PREEMPTED" and row["QOS"] == "scavenger", row
        assert "SlurmJobPreempted" in _events(cluster, single)
        assert "SlurmJobPreempted" in cluster.event_reasons(group, NS)  # the gang's events are its group's
        # DisruptionTarget: the bridge's (SlurmJobPreempted), then the API server's own for an eviction
        # (EvictionByEvictionAPI); a poll may see either, never another
        assert set(disrupted.values()) <= {"SlurmJobPreempted", "EvictionByEvictionAPI"}, disrupted
        log = bridge.log()
        assert f"{NS}/{single}: evicted (SlurmJobPreempted)" in log
        for m in members:
            assert f"{NS}/{m}: evicted (SlurmJobPreempted)" in log
    finally:
        cluster.slurm.cli("scancel", high, check=False)
        cluster.kube.kubectl(
            "-n", NS, "delete", "podgroups.scheduling.x-k8s.io", group, "--wait=false", check=False
        )


def _job_pods(cluster: Cluster, job: str) -> list[dict[str, Any]]:
    out = cluster.kube.kubectl("-n", NS, "get", "pods", "-l", f"job-name={job}", "-o", "json")
    return list(json.loads(out)["items"])


def test_requeue_preemption_evicts_the_pod_and_its_job_brings_the_work_back(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    """QOS `spot` has PreemptMode=REQUEUE: Slurm requeues the preempted placeholder (same job id, back
    to PENDING). A bound pod cannot be moved, so the bridge evicts it (DisruptionTarget, Eviction API)
    and cancels the requeued job; the pod's Kubernetes Job makes a new pod, which gets a new Slurm job
    and runs when the `high` job is done - the work comes back, as the site configured."""
    job = unique("acct-spot")
    spot = {OPT + "qos": "spot", OPT + "account": "scavenge", OPT + "timelimit": "10", RUN: "15s", EXIT: "0"}
    template = _pod("unused", spot)
    template = {"metadata": {"annotations": spot}, "spec": template["spec"]}
    template["spec"]["restartPolicy"] = "Never"
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "namespace": NS},
        "spec": {"backoffLimit": 3, "completions": 1, "parallelism": 1, "template": template},
    }
    cluster.create(manifest)
    high = ""
    try:

        def running_pod() -> dict[str, Any] | None:
            pods = [p for p in _job_pods(cluster, job) if p.get("status", {}).get("phase") == "Running"]
            return pods[0] if pods else None

        first = wait_for("the Job's pod Running", running_pod, 240)
        first_name, node = first["metadata"]["name"], first["spec"]["nodeName"]
        first_job = _job_id(cluster, first_name)
        high = _block(
            cluster, 1, "-w", node, "-q", "high", "-A", "physics", "-t", "2", name="acct-high-rq", secs=5
        )
        disrupted: set[str] = set()

        def evicted() -> bool:
            pod = _get(cluster, first_name)
            c = condition(pod, "DisruptionTarget")
            if c is not None and c.get("status") == "True":
                disrupted.add(str(c.get("reason")))
            return pod is None

        wait_for("the preempted pod evicted", evicted, 120, every=0.2)
        assert "SlurmJobRequeued" in _events(cluster, first_name) or "SlurmJobRequeued" in bridge.log()
        assert f"{NS}/{first_name}: evicted (SlurmJobRequeued)" in bridge.log()
        assert disrupted <= {"SlurmJobRequeued", "EvictionByEvictionAPI"}, disrupted

        def completed() -> bool:
            out = cluster.kube.kubectl("-n", NS, "get", "job", job, "-o", "json")
            return int(json.loads(out).get("status", {}).get("succeeded") or 0) == 1

        wait_for("the Job complete with its new pod", completed, 180, every=1)
        # Slurm's record: the first job was requeued once, then cancelled by the bridge (its pod is gone)
        restarts = cluster.slurm.cli("sacct", "-n", "-P", "-X", "-D", "-j", first_job, "-o", "State")
        states = [line.split()[0] for line in restarts.splitlines() if line.strip()]
        high_row = _final_sacct(cluster, high)
        print(f"\nSlurm {cluster.slurm.version} requeue: job {first_job} states {states}; high {high_row}")
        assert "REQUEUED" in states or "PREEMPTED" in states, states
        assert states[-1] == "CANCELLED", states
    finally:
        if high:
            cluster.slurm.cli("scancel", high, check=False)
        cluster.kube.kubectl("-n", NS, "delete", "job", job, "--wait=false", check=False)


# --- external placeholders --------------------------------------------------------------------------


def test_external_placeholder_mode_by_version(
    cluster: Cluster, slurm_cluster: SlurmCluster, kube: KubeCluster, bridge: BridgeProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    cluster_id = f"acctx-{slurm_cluster.version.replace('.', '')}"
    config = _config(slurm_cluster, kube, cluster_id, placeholder_mode="external")
    config["metrics_listen_address"] = f"127.0.0.1:{_PORTS[slurm_cluster.version] - 10}"
    config["namespaces"] = [f"{NS}-x"]
    config["scheduler_name"] = X_SCHEDULER_NAME  # not the module bridge's: it would take these pods too
    process = BridgeProcess(config, tmp_path_factory.mktemp(f"acctx-{slurm_cluster.version}"))
    if slurm_cluster.version not in EXTERNAL_VERSIONS:
        process.start()
        assert process.process is not None
        assert process.process.wait(timeout=60) == 2
        log = process.log()
        assert "refusing to start: slurm.placeholder_mode 'external' needs EXTERNAL_JOB" in log, log[-2000:]
        assert "v0.0.43" in log
        return
    kube.kubectl("create", "namespace", f"{NS}-x", check=False)
    process.start()
    pod = unique("acctx-pod")
    group = unique("acctx-g")
    try:
        manifest = _ours(
            pod_manifest(pod, annotations={RUN: "3s", EXIT: "0"}, namespace=f"{NS}-x"), X_SCHEDULER_NAME
        )
        cluster.create(manifest)
        cluster.create({**_pod_group(group, 2, {}), "metadata": {"name": group, "namespace": f"{NS}-x"}})
        for i in range(2):
            m = pod_manifest(
                f"{group}-{i}",
                annotations={RUN: "3s", EXIT: "0"},
                namespace=f"{NS}-x",
                labels={POD_GROUP_LABEL: group},
            )
            cluster.create(_ours(m, X_SCHEDULER_NAME))
        names = [pod, f"{group}-0", f"{group}-1"]

        def job_of(n: str) -> str:
            p = cluster.pod(n, f"{NS}-x")
            return str(((p or {}).get("metadata") or {}).get("labels", {}).get(JOB_ID_LABEL) or "")

        ids = {n: str(wait_for(f"{n} bound", partial(job_of, n), 60)) for n in names}
        for n in names:
            out = cluster.slurm.cli("scontrol", "-o", "show", "job", ids[n])
            assert "BatchFlag=0" in out, out  # an EXTERNAL_JOB: nothing launched on the nodes
        seen: dict[str, str | None] = {}

        def all_succeeded() -> bool:
            seen.update({n: phase(cluster.pod(n, f"{NS}-x")) for n in names})
            return all(p == "Succeeded" for p in seen.values())

        try:
            wait_for("pods Succeeded", all_succeeded, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; phases {seen}") from exc
        rows = {n: _final_sacct(cluster, ids[n]) for n in (pod, f"{group}-0")}
        print(f"\nSlurm {slurm_cluster.version} external placeholders: {rows}")
        # no REST call ends an external job COMPLETED: a finished pod's job is cancelled
        assert all(r["State"].startswith(("CANCELLED", "COMPLETED")) for r in rows.values()), rows
        process.assert_alive()
    finally:
        kube.kubectl(
            "-n", f"{NS}-x", "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False
        )
        kube.kubectl("-n", f"{NS}-x", "delete", "pods", "--all", "--wait=false", check=False)
        with contextlib.suppress(AssertionError):
            wait_for(
                "x pods gone", lambda: not kube.kubectl("-n", f"{NS}-x", "get", "pods", "-o", "name"), 40
            )
        process.stop()
        names_left = kube.kubectl("-n", f"{NS}-x", "get", "pods", "-o", "name").split()
        for n in names_left:
            kube.kubectl(
                "-n",
                f"{NS}-x",
                "patch",
                n,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )

"""slurmrestd answering wrongly, against the real testbed, the bridge a real process (issue 16).

A fault proxy (tests/testbed/fault_proxy.py) stands between the bridge and the real slurmrestd and, on
demand, drops the connection, answers 500 or 401, serves a job list that is `{"jobs": null}`, `{}` or
empty, or answers too slowly for the bridge's request timeout. Throughout, the bridge leads with a bound
running pod and a pending one (its job held). For each fault: the bridge stays up and says what is
wrong (/readyz, a metric, the log, the condition of a pod created during the fault); it never deletes
the bound pod nor ends either job on missing data; and once the proxy forwards again it converges (the
pod created during the fault gets one job and is bound, or shows why its job waits). Last, the Lease is
taken from the bridge: it stops with exit status 3 and one ERROR line, and a restart leads again.

The bridge has a scheduler name, namespace, cluster id and Lease of its own, so the other tests'
bridges running on the shared testbed never touch these pods (nor this one theirs).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.testbed.bridge_harness import (
    BridgeProcess,
    Cluster,
    bridge_config,
    clear_pods,
    condition,
    force_clear,
    pod_manifest,
    unique,
)
from tests.testbed.bridge_harness import wait_for as _wait_for
from tests.testbed.fault_proxy import Fault, FaultProxy
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.slurm_default_only]

NAMESPACE = "faults-e2e"
SCHEDULER = "faults-scheduler"
CLUSTER_ID = "faults-e2e"
LEASE = "faults-e2e"
LEASE_NAMESPACE = "slurm-bridge-system"
JOB_ID_LABEL = "scheduler.slinky.slurm.net/slurm-jobid"
REQUEST_TIMEOUT = 1.5  # the bridge's slurmrestd request timeout; the slow fault answers after 3 s
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING")


def wait_for(what: str, probe: Any, timeout: float = 30.0) -> Any:
    return _wait_for(what, probe, timeout, every=0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest = pod_manifest(name, annotations=annotations, cpu="500m", memory="64Mi", namespace=NAMESPACE)
    manifest["spec"]["schedulerName"] = SCHEDULER
    return manifest


@dataclass
class Faults:
    cluster: Cluster
    proxy: FaultProxy
    bridge: BridgeProcess
    running: str  # a pod bound to its RUNNING job
    running_uid: str
    running_job: str
    running_node: str
    pending: str  # a pod whose job is held (PENDING for good)
    pending_job: str

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.cluster.pod(name, NAMESPACE)

    def jobs(self, name: str) -> list[dict[str, str]]:
        return [j for j in self.cluster.jobs_for_pod(name) if f"{NAMESPACE}/{name} " in j["comment"] + " "]

    def active_jobs(self, name: str) -> list[dict[str, str]]:
        return [j for j in self.jobs(name) if j["state"] in ACTIVE]

    def metrics_url(self, path: str) -> str:
        return f"http://{self.bridge.config['metrics_listen_address']}{path}"

    def readiness(self) -> tuple[int, str]:
        try:
            answer = httpx.get(self.metrics_url("/readyz"), timeout=5)
        except httpx.HTTPError as error:
            return 0, repr(error)
        return answer.status_code, answer.text

    def metric(self, sample: str) -> float:
        text = httpx.get(self.metrics_url("/metrics"), timeout=5).text
        found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def converged(self, name: str) -> bool:
        """One active job for the pod, and the pod bound to its node or showing it pending."""
        jobs = self.active_jobs(name)
        if len(jobs) != 1:
            return False
        pod = self.pod(name)
        if jobs[0]["state"] == "RUNNING":
            return _node_of(pod) == jobs[0]["nodes"]
        found = condition(pod, "PodScheduled")
        return bool(found and found.get("reason") == "SlurmJobPending" and jobs[0]["id"] in found["message"])

    def assert_nothing_lost(self, *, alive: bool = True) -> None:
        """The bound pod still bound to its running job, the pending pod's job still pending."""
        if alive:
            self.bridge.assert_alive()
        pod = self.pod(self.running)
        assert pod is not None, "the bound pod was deleted"
        assert pod["metadata"]["uid"] == self.running_uid
        assert not pod["metadata"].get("deletionTimestamp"), "the bound pod is being deleted"
        assert pod["spec"].get("nodeName") == self.running_node
        assert [(j["id"], j["state"]) for j in self.jobs(self.running)] == [(self.running_job, "RUNNING")]
        pending = self.pod(self.pending)
        assert pending is not None and not pending["metadata"].get("deletionTimestamp")
        assert [(j["id"], j["state"]) for j in self.jobs(self.pending)] == [(self.pending_job, "PENDING")]


def _node_of(pod: dict[str, Any] | None) -> str:
    return str(pod["spec"].get("nodeName") or "") if pod else ""


def _clear(cluster: Cluster) -> None:
    clear_pods(cluster.kube, NAMESPACE, 20)
    force_clear(cluster.kube, NAMESPACE)


def _cancel_leftovers(cluster: Cluster) -> None:
    out = cluster.slurm.cli("squeue", "-h", "-t", "PENDING,RUNNING", "-o", "%i|%k", check=False)
    for line in out.splitlines():
        job_id, _, comment = line.partition("|")
        if f"cluster={CLUSTER_ID} " in comment:
            cluster.slurm.cli("scancel", job_id.strip(), check=False)


@pytest.fixture(scope="module")
def faults(
    slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faults]:
    cluster = Cluster(kube, slurm_cluster)
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    _clear(cluster)
    proxy = FaultProxy(slurm_cluster.url, slow_seconds=2 * REQUEST_TIMEOUT)
    proxy.start()
    config = bridge_config(slurm_cluster, kube, cluster_id=CLUSTER_ID, metrics_port=_free_port())
    config["scheduler_name"] = SCHEDULER
    config["namespaces"] = [NAMESPACE]
    config["slurm"]["url"] = proxy.url
    config["slurm"]["request_timeout_seconds"] = REQUEST_TIMEOUT
    config["leader_election"]["lease_name"] = LEASE
    bridge = BridgeProcess(config, tmp_path_factory.mktemp("server-faults"))
    bridge.start()
    try:
        running, pending = unique("bound"), unique("held")
        cluster.create(_pod(running))
        # priority 0 submits the job held: it stays PENDING without taking a node from other tests
        cluster.create(_pod(pending, {"slinky.slurm.net/priority": "0"}))
        node = wait_for("the running pod bound", lambda: _node_of(cluster.pod(running, NAMESPACE)), 60)
        running_pod = cluster.pod(running, NAMESPACE)
        assert running_pod is not None
        running_job = running_pod["metadata"]["labels"][JOB_ID_LABEL]
        pending_job = wait_for(
            "the held pod's job",
            lambda: (
                (cluster.pod(pending, NAMESPACE) or {})
                .get("metadata", {})
                .get("labels", {})
                .get(JOB_ID_LABEL)
            ),
            30,
        )
        yield Faults(
            cluster=cluster,
            proxy=proxy,
            bridge=bridge,
            running=running,
            running_uid=running_pod["metadata"]["uid"],
            running_job=running_job,
            running_node=node,
            pending=pending,
            pending_job=pending_job,
        )
    finally:
        proxy.set(Fault.NONE)
        _clear(cluster)
        bridge.stop()
        proxy.stop()
        _cancel_leftovers(cluster)


@dataclass(frozen=True)
class Case:
    fault: Fault
    readiness_says: str  # in /readyz's answer while the fault lasts
    log_says: str
    counter: str  # a metric sample that counts the fault
    # the PodScheduled condition of a pod created during the fault: its reason, "" when none is due
    newcomer_reason: str = ""
    # Only the job list is broken; submits and reads of one job pass. A pod created during the fault
    # may then be bound: its own job, read alone right after the submit, said RUNNING before the first
    # broken list was seen (after that, nothing read beside a failing list is acted on).
    list_only: bool = False


POLL_FAILED = "Slurm job poll failed"
POLL_ERRORS = "slurm_bridge_job_poll_errors_total"
NOT_BELIEVED = 'slurm_bridge_job_list_mass_vanish_total{outcome="refuted"}'

CASES = [
    Case(Fault.DROP, "RemoteProtocolError", POLL_FAILED, POLL_ERRORS, "SlurmUnavailable"),
    Case(Fault.ERROR_500, "(HTTP 500)", POLL_FAILED, POLL_ERRORS, "SlurmUnavailable"),
    Case(Fault.UNAUTHORIZED, "(HTTP 401)", POLL_FAILED, POLL_ERRORS, "SlurmAccessDenied"),
    Case(Fault.JOBS_NULL, "'jobs' is null", POLL_FAILED, POLL_ERRORS, list_only=True),
    Case(Fault.EMPTY_OBJECT, "no 'jobs' list", POLL_FAILED, POLL_ERRORS, list_only=True),
    Case(Fault.EMPTY_LIST, "still there", "not believed", NOT_BELIEVED, list_only=True),
    Case(Fault.SLOW, "ReadTimeout", POLL_FAILED, POLL_ERRORS, "SlurmUnavailable"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.fault.value for case in CASES])
def test_a_slurmrestd_fault_is_shown_never_acted_on_and_recovered(faults: Faults, case: Case) -> None:
    faults.assert_nothing_lost()
    counted_before = faults.metric(case.counter)
    log_before = len(faults.bridge.log())
    faults.proxy.set(case.fault)
    newcomer = unique("during")
    try:
        faults.cluster.create(_pod(newcomer))
        _, said = wait_for(
            f"/readyz saying {case.readiness_says!r}",
            lambda: (
                (answer := faults.readiness())[0] == 503
                and case.readiness_says in answer[1]
                and "slurm:" in answer[1]  # the job index's own check, not only the exporter's
                and answer
            ),
        )
        assert "slurm:" in said
        wait_for(f"{case.counter} counting", lambda: faults.metric(case.counter) >= counted_before + 2)
        if case.newcomer_reason:
            wait_for(
                f"the new pod's condition {case.newcomer_reason}",
                lambda: (
                    (found := condition(faults.pod(newcomer), "PodScheduled"))
                    and found.get("reason") == case.newcomer_reason
                ),
            )
        assert faults.proxy.count(case.fault) > 0
        faults.assert_nothing_lost()
        if not case.list_only:
            assert _node_of(faults.pod(newcomer)) == ""
        assert case.log_says in faults.bridge.log()[log_before:]
    finally:
        faults.proxy.set(Fault.NONE)
    wait_for("/readyz 200 again", lambda: faults.readiness()[0] == 200, 40)
    # Converged: one job for the new pod, and the pod shows it (bound where it runs, or its pending
    # reason while other tests' jobs hold the shared nodes).
    wait_for("the new pod converged", lambda: faults.converged(newcomer), 40)
    faults.assert_nothing_lost()
    assert "Traceback" not in faults.bridge.log()[log_before:]  # (not counting the clean-up below)
    faults.cluster.delete_pod(newcomer, NAMESPACE)
    wait_for("the new pod gone", lambda: faults.pod(newcomer) is None, 30)


def _k8s(action: str) -> None:
    subprocess.run(["bash", str(REPO / "testbed" / "k8s.sh"), action], check=True, timeout=120)


def test_the_api_server_stopped_and_restarted(faults: Faults) -> None:
    """kube-apiserver gone for longer than the Lease's renew deadline, then back (etcd kept): the bridge
    touches nothing in Slurm meanwhile; it keeps running or stops cleanly with exit status 3 (it could not
    renew its Lease: a Deployment restarts it); then it leads again and converges, nothing lost."""
    faults.assert_nothing_lost()
    log_before = len(faults.bridge.log())
    deadline = float(faults.bridge.config["leader_election"]["renew_deadline_seconds"])
    _k8s("apiserver-stop")
    try:
        time.sleep(deadline + 5)
        # Slurm's side while Kubernetes is away: both jobs as they were
        assert [(j["id"], j["state"]) for j in faults.jobs(faults.running)] == [
            (faults.running_job, "RUNNING")
        ]
        assert [(j["id"], j["state"]) for j in faults.jobs(faults.pending)] == [
            (faults.pending_job, "PENDING")
        ]
    finally:
        _k8s("apiserver-start")
    process = faults.bridge.process
    assert process is not None
    if process.poll() is not None:
        assert process.returncode == 3, f"exit {process.returncode}:\n{faults.bridge.log()[-3000:]}"
        faults.bridge.process = None
        faults.bridge.start()  # as its Deployment would
    wait_for("/readyz 200 after the API server came back", lambda: faults.readiness()[0] == 200, 60)
    faults.assert_nothing_lost()
    newcomer = unique("after-api")
    faults.cluster.create(_pod(newcomer))
    wait_for("a pod created after the restart converged", lambda: faults.converged(newcomer), 60)
    said = faults.bridge.log()[log_before:]
    assert "Traceback" not in said
    print(f"\nAPI server stopped {deadline + 5:.0f} s: bridge exit {process.returncode} (None: stayed up)")
    faults.cluster.delete_pod(newcomer, NAMESPACE)
    wait_for("the new pod gone", lambda: faults.pod(newcomer) is None, 30)


def test_a_lease_taken_over_ends_the_leader_cleanly_and_a_restart_rejoins(faults: Faults) -> None:
    """Someone else holds the Lease (as after a partition): the leader stops at once with exit status 3
    and one ERROR line, no traceback, touching nothing; restarted, it leads again once the Lease frees."""
    kubectl = faults.cluster.kube.kubectl
    log_before = len(faults.bridge.log())

    def take_over() -> str | None:
        """The intruder's replace, on the Lease's current version: the bridge renews it every 0.5 s, so a
        replace may meet a newer version (409) and is simply tried again."""
        lease = json.loads(kubectl("-n", LEASE_NAMESPACE, "get", "lease", LEASE, "-o", "json"))
        holder = str(lease["spec"]["holderIdentity"])
        lease["spec"]["holderIdentity"] = "faults-intruder"
        lease["spec"]["leaseDurationSeconds"] = 3  # the intruder never renews: it lapses 3 s later
        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            kubectl("replace", "-f", "-", stdin=json.dumps(lease))
        except RuntimeError as error:
            if "Conflict" not in str(error):
                raise
            return None
        return holder

    holder = _wait_for("the intruder's replace of the Lease", take_over, 15, every=0.05)
    process = faults.bridge.process
    assert process is not None
    assert process.wait(timeout=15) == 3
    said = faults.bridge.log()[log_before:]
    assert "Traceback" not in said
    lost = [line for line in said.splitlines() if " ERROR " in line]
    assert len(lost) == 1, lost
    assert f"lost by {holder}: taken by 'faults-intruder'" in lost[0] and "exit 3" in lost[0]
    faults.bridge.process = None
    faults.assert_nothing_lost(alive=False)
    faults.bridge.start()
    wait_for("the restarted bridge leading", lambda: "became leader" in faults.bridge.log()[log_before:], 40)
    wait_for("/readyz 200", lambda: faults.readiness()[0] == 200, 30)
    faults.assert_nothing_lost()

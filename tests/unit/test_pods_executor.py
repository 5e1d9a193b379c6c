"""The pod executor (controller/pods.py) against the in-memory fakes: for a pod and its jobs as the caches
hold them, what it writes to Kubernetes and Slurm, in what order, and how the key is retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.objects import PodInfo
from bridge.translate import placeholder_job_for
from bridge.wellknown import FINALIZER, LABEL_SLURM_JOB_ID, TAINT_MANAGED_NODE
from controller.pods import ABSENCE_RECHECK_SECONDS, PENDING_RECHECK_SECONDS, PodMetrics, PodReconciler
from controller.runtime import Result, RetryLater
from kube_client import KubeObject
from slurm_client import AuthError, InvalidRequest, Job, JobSpec, JobState, SlurmTransportError, SubmitResult
from tests.fakes.kube import FakeCache, FakeEvents, FakeKube
from tests.fakes.slurm import FakeJobIndex, FakeSlurm

CONFIG = BridgeConfig(cluster_id="c1", namespaces=("ml",))
UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
KEY = "ml/train-0"
BOTH = frozenset({"scheduler", "controller"})


def raw_pod(
    *,
    phase: str = "Pending",
    node: str | None = None,
    finalizer: bool = True,
    job_id: int | None = None,
    gang: str | None = None,
) -> KubeObject:
    labels: dict[str, str] = {}
    if job_id is not None:
        labels[LABEL_SLURM_JOB_ID] = str(job_id)
    if gang is not None:
        labels["scheduling.x-k8s.io/pod-group"] = gang
    pod: KubeObject = {
        "kind": "Pod",
        "metadata": {
            "name": "train-0",
            "namespace": "ml",
            "uid": UID,
            "labels": labels,
            "finalizers": [FINALIZER] if finalizer else [],
        },
        "spec": {
            "schedulerName": CONFIG.scheduler_name,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        },
        "status": {"phase": phase},
    }
    if node is not None:
        pod["spec"]["nodeName"] = node
    return pod


SPEC = placeholder_job_for(PodInfo.from_api(raw_pod()), CONFIG)


def job(state: JobState, *, job_id: int = 7, batch: bool | None = None, nodes: tuple[str, ...] = ()) -> Job:
    return Job(job_id=job_id, name=SPEC.name, state=state, comment=SPEC.comment, nodes=nodes, batch=batch)


@dataclass
class Case:
    id: str
    pod: KubeObject | None
    jobs: list[Job] = field(default_factory=list)
    components: frozenset[str] = BOTH
    kube: list[tuple[Any, ...]] = field(default_factory=list)  # writes, in order
    submitted: int = 0
    cancelled: list[tuple[int, str | None]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    result: Result | type[Exception] = field(default_factory=Result)
    slurm_fails: Exception | None = None
    unsettled: bool = False
    unpolled: bool = False  # the job index has not polled since the labelled job was found missing
    gone: bool = False  # the pod vanished from the API server after the cache saw it


PREPARE = (
    "patch",
    "pods",
    "train-0",
    None,
    {
        "metadata": {"finalizers": [FINALIZER], "uid": UID},
        "spec": {"tolerations": [{"key": TAINT_MANAGED_NODE, "operator": "Exists"}]},
    },
)


VANISHED = "Slurm job 9 left slurmctld before its end was seen"
CANCELLED = "Slurm job 7 was cancelled in Slurm (scancel); deleting the pod"


def pending(reason: str, message: str) -> tuple[Any, ...]:
    return ("condition", "train-0", "PodScheduled", "False", reason, message)


CASES = [
    Case(
        "new pod: finalizer + toleration (uid precondition), then one submit",
        raw_pod(finalizer=False),
        kube=[PREPARE],
        submitted=1,
        result=Result(requeue_after=PENDING_RECHECK_SECONDS),
    ),
    Case(
        "the controller alone never submits",
        raw_pod(finalizer=False),
        components=frozenset({"controller"}),
        kube=[PREPARE],
        result=Result(requeue_after=PENDING_RECHECK_SECONDS),
    ),
    Case(
        "a running job binds the pod (uid precondition, node annotation)",
        raw_pod(job_id=7),
        [job(JobState.RUNNING, nodes=("node1",))],
        kube=[("bind", "train-0", "node1", UID, {"slinky.slurm.net/slurm-node": "node1"})],
        events=["Scheduled"],
        result=Result(requeue_after=PENDING_RECHECK_SECONDS),
    ),
    Case(
        "the scheduler alone never binds",
        raw_pod(job_id=7),
        [job(JobState.RUNNING, nodes=("node1",))],
        components=frozenset({"scheduler"}),
        result=Result(requeue_after=PENDING_RECHECK_SECONDS),
    ),
    Case(
        "a succeeded pod ends its batch job with USR1, then lets go",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.RUNNING, nodes=("node1",))],
        cancelled=[(7, "USR1")],
        kube=[("unfinalize", "train-0", FINALIZER)],
        events=["SlurmJobReleased"],
    ),
    Case(
        "a failed pod ends its batch job with USR2",
        raw_pod(phase="Failed", node="node1", job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=True)],
        cancelled=[(7, "USR2 exit=1")],
        kube=[("unfinalize", "train-0", FINALIZER)],
        events=["SlurmJobReleased"],
    ),
    Case(
        "an external placeholder ignores signals: a plain cancel",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=False)],
        cancelled=[(7, None)],
        kube=[("unfinalize", "train-0", FINALIZER)],
        events=["SlurmJobReleased"],
    ),
    Case("a pod gone: its pending job is cancelled", None, [job(JobState.PENDING)], cancelled=[(7, None)]),
    Case(
        "a job cancelled under a running pod: DisruptionTarget, then delete that incarnation",
        raw_pod(phase="Running", node="node1", job_id=7),
        [job(JobState.CANCELLED, nodes=("node1",))],
        kube=[
            ("condition", "train-0", "DisruptionTarget", "True", "SlurmJobCancelled", CANCELLED),
            ("delete-pod", "train-0", UID),
        ],
        events=["SlurmJobCancelled"],
    ),
    Case(
        "a pod gone before its delete: nothing deleted, no error",
        raw_pod(phase="Running", node="node1", job_id=7),
        [job(JobState.CANCELLED, nodes=("node1",))],
        gone=True,
        events=["SlurmJobCancelled"],
    ),
    Case(
        "Slurm refuses the job: said on the pod and in a Warning event, asked again in a minute",
        raw_pod(),
        slurm_fails=InvalidRequest("Invalid partition name specified", status=500),
        kube=[
            pending(
                "InvalidSlurmJobOptions", "Slurm refused the job: Invalid partition name specified (HTTP 500)"
            )
        ],
        events=["InvalidSlurmJobOptions"],
        result=RetryLater,
    ),
    Case(
        "Slurm denies the bridge's token: said as access denied, not as unavailable",
        raw_pod(),
        slurm_fails=AuthError("Access/permission denied", status=401),
        kube=[
            pending(
                "SlurmAccessDenied",
                "Slurm refused the bridge's credentials or its right to submit (Access/permission "
                "denied (HTTP 401)); check the bridge's token or JWT key and its Slurm user's "
                "associations; retrying",
            )
        ],
        events=["SlurmAccessDenied"],
        result=RetryLater,
    ),
    Case(
        "slurmrestd failing after the request left: said, and no blind resubmit",
        raw_pod(),
        slurm_fails=SlurmTransportError("connection reset", sent=True),
        kube=[pending("SlurmUnavailable", "cannot submit to Slurm (connection reset); retrying")],
        result=RetryLater,
    ),
    Case(
        "a label naming a job the index has not listed yet: no verdict until the next poll",
        raw_pod(phase="Running", node="node1", job_id=9),
        unpolled=True,
        result=Result(requeue_after=ABSENCE_RECHECK_SECONDS),
    ),
    Case(
        "a label naming a job a later poll did not list: the job vanished",
        raw_pod(phase="Running", node="node1", job_id=9),
        kube=[
            ("condition", "train-0", "DisruptionTarget", "True", "SlurmJobVanished", VANISHED),
            ("delete-pod", "train-0", UID),
        ],
        events=["SlurmJobVanished"],
    ),
    Case("an unconfirmed earlier submit holds the next one", raw_pod(), unsettled=True, result=RetryLater),
    Case("a gang member is left to its gang", raw_pod(finalizer=False, gang="train"), result=Result()),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_pod_executor(case: Case) -> None:
    kube, slurm, events = FakeKube(), FakeSlurm(), FakeEvents()
    slurm.fail = case.slurm_fails
    jobs = FakeJobIndex("c1", case.jobs)
    jobs.settled = not case.unsettled
    jobs.polled_since_absence = not case.unpolled
    if case.gone:
        kube.gone.add(KEY)
    handed: list[str] = []
    reconciler = PodReconciler(
        CONFIG,
        kube=kube,
        slurm=slurm,
        pods=FakeCache([case.pod] if case.pod is not None else []),
        nodes=FakeCache([{"metadata": {"name": "node1", "labels": {}}}]),
        jobs=jobs,
        events=events,
        components=case.components,
        metrics=PodMetrics(None),
        gang_of=lambda pod: (
            "ml/podgroup.scheduling.x-k8s.io/train"
            if "scheduling.x-k8s.io/pod-group" in (pod["metadata"].get("labels") or {})
            else None
        ),
        on_gang_member=handed.append,
    )
    if isinstance(case.result, type):
        with pytest.raises(case.result):
            await reconciler.reconcile(KEY)
    else:
        assert await reconciler.reconcile(KEY) == case.result
    assert kube.calls == case.kube
    assert len(slurm.submitted) == case.submitted
    assert slurm.cancelled == case.cancelled
    assert events.reasons() == case.events
    if case.slurm_fails is not None and isinstance(case.slurm_fails, SlurmTransportError):
        assert not jobs.settled
    if case.pod is not None and "scheduling.x-k8s.io/pod-group" in case.pod["metadata"]["labels"]:
        assert handed == ["ml/podgroup.scheduling.x-k8s.io/train"]


async def test_a_submit_is_written_through_so_the_next_reconcile_does_not_submit_again() -> None:
    kube, slurm, jobs = FakeKube(), FakeSlurm(), FakeJobIndex("c1")
    reconciler = PodReconciler(
        CONFIG,
        kube=kube,
        slurm=slurm,
        pods=FakeCache([raw_pod()]),
        nodes=FakeCache(),
        jobs=jobs,
        events=FakeEvents(),
        components=BOTH,
        metrics=PodMetrics(None),
    )
    await reconciler.reconcile(KEY)
    await reconciler.reconcile(KEY)
    assert len(slurm.submitted) == 1
    assert [j.job_id for j in jobs.jobs] == [101]


async def test_an_orphan_sweep_survives_a_failing_cancel() -> None:
    from datetime import UTC, datetime, timedelta

    old = job(JobState.PENDING).model_copy(update={"submit_time": datetime.now(UTC) - timedelta(hours=1)})
    slurm = FakeSlurm()
    slurm.fail_cancel = SlurmTransportError("reset", sent=True)
    jobs = FakeJobIndex("c1", [old])
    reconciler = PodReconciler(
        CONFIG,
        kube=FakeKube(),
        slurm=slurm,
        pods=FakeCache(),
        nodes=FakeCache(),
        jobs=jobs,
        events=FakeEvents(),
        components=BOTH,
        metrics=PodMetrics(None),
    )
    assert await reconciler.clean_orphans() == 1  # planned, failed, logged: retried by the next sweep
    slurm.fail_cancel = None
    assert await reconciler.clean_orphans() == 1
    assert slurm.cancelled == [(7, None)]


async def test_a_submit_cut_short_by_the_reconcile_deadline_holds_the_next_one() -> None:
    # The request may have reached slurmctld before the deadline cancelled it: submitting again before a
    # poll has looked would make a second job for the pod.
    class HangingSlurm(FakeSlurm):
        async def submit_job(self, spec: JobSpec) -> SubmitResult:
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

    kube, jobs = FakeKube(), FakeJobIndex("c1")
    reconciler = PodReconciler(
        CONFIG,
        kube=kube,
        slurm=HangingSlurm(),
        pods=FakeCache([raw_pod()]),
        nodes=FakeCache(),
        jobs=jobs,
        events=FakeEvents(),
        components=BOTH,
        metrics=PodMetrics(None),
    )
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await reconciler.reconcile(KEY)
    assert not jobs.settled

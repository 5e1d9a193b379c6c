from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.marker import JobMarker, decode_marker
from bridge.objects import NodeInfo, PodInfo, slurm_to_kubernetes_nodes
from bridge.translate import (
    JobOutcome,
    TranslationError,
    job_spec_for,
    placeholder_job_for,
    select_pod,
    spec_digest,
)
from bridge.wellknown import FINALIZER, LABEL_SLURM_JOB_ID, Reason
from controller.plan import (
    AddFinalizerAndLabel,
    BindPod,
    CancelJob,
    DeletePod,
    PodAction,
    PodObservation,
    RecordEvent,
    RemoveFinalizer,
    SetPendingReason,
    SubmitJob,
    ending,
    plan_orphan_cleanup,
    plan_pod,
)
from slurm_client import Job, JobState

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
EARLIER_UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NODES = {"node1": "k8s-node-1", "node2": "k8s-node-2"}

CONFIG = BridgeConfig(cluster_id="c1")


def pod(
    *,
    phase: str | None = None,
    node: str | None = None,
    deleting: bool = False,
    finalizer: bool = True,
    label: int | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = "slurm-bridge",
    scheduled: tuple[str, str] | None = None,
    scheduler: str = "slurm-bridge-scheduler",
) -> PodInfo:
    meta: dict[str, Any] = {"name": "train-0", "namespace": namespace, "uid": UID}
    if finalizer:
        meta["finalizers"] = [FINALIZER]
    if label is not None:
        meta["labels"] = {LABEL_SLURM_JOB_ID: str(label)}
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-05-01T11:59:00Z"
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
    }
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if scheduled:
        reason, message = scheduled
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
        ]
    return PodInfo.from_api({"metadata": meta, "spec": spec, "status": status})


def job(
    job_id: int,
    state: JobState,
    *,
    uid: str = UID,
    digest: str | None = None,
    nodes: tuple[str, ...] = (),
    reason: str | None = None,
    cluster: str = "c1",
    submitted: datetime | None = NOW - timedelta(minutes=5),
) -> Job:
    """A job whose marker names the pod above (with the spec it translates to, unless `digest`)."""
    marker = JobMarker(
        cluster, "slurm-bridge", "train-0", uid, digest or spec_digest(job_spec_for(pod(), CONFIG))
    )
    return Job(
        job_id=job_id,
        name="train-0",
        state=state,
        state_reason=reason,
        nodes=nodes,
        comment=marker.encode(),
        submit_time=submitted,
    )


def submit(p: PodInfo) -> SubmitJob:
    return SubmitJob(placeholder_job_for(p, CONFIG))


def pending(reason: Reason, message: str, warning: bool = False) -> list[PodAction]:
    return [SetPendingReason(reason, message), RecordEvent(reason, message, warning)]


def deleted(reason: Reason, message: str) -> list[PodAction]:
    evict = reason in (Reason.JOB_PREEMPTED, Reason.JOB_REQUEUED)  # Slurm took the allocation back
    return [RecordEvent(reason, message, warning=True), DeletePod(reason, message, evict)]


def problems(p: PodInfo) -> str:
    with pytest.raises(TranslationError) as caught:
        job_spec_for(p, CONFIG)
    return caught.value.message


BAD = {"slinky.slurm.net/timelimit": "soon"}
CHANGED = {"slinky.slurm.net/partition": "big"}
REFUSED = select_pod(pod(namespace="team-a"), CONFIG).message
JOB_SEEN = RecordEvent(Reason.JOB_SUBMITTED, "Slurm job 42 holds this pod's place")
BOUND = RecordEvent(
    Reason.SCHEDULED, "Successfully assigned slurm-bridge/train-0 to k8s-node-1 (Slurm job 42)"
)
STALE = f"Slurm job 40 belongs to an earlier pod of this name (uid {EARLIER_UID})"
OLD = "000000000000"  # the digest of a spec the pod no longer asks for


SCENARIOS = [
    # --- the pod is gone
    pytest.param(
        None,
        [job(41, JobState.COMPLETED), job(42, JobState.RUNNING, nodes=("node1",))],
        [CancelJob(42, JobOutcome.CANCEL, "its pod is gone")],
        id="gone-pod-cancels-active-jobs",
    ),
    pytest.param(None, [], [], id="gone-pod-without-jobs"),
    pytest.param(None, [job(42, JobState.RUNNING, cluster="c2")], [], id="gone-pod-other-clusters-job-kept"),
    # --- submission
    pytest.param(
        pod(finalizer=False),
        [],
        [AddFinalizerAndLabel(None), submit(pod())],
        id="new-pod-finalizer-then-submit",
    ),
    pytest.param(pod(), [], [submit(pod())], id="new-pod-with-finalizer-submits"),
    pytest.param(pod(scheduler="default-scheduler"), [], [], id="other-scheduler-ignored"),
    pytest.param(
        pod(namespace="team-a", finalizer=False),
        [],
        pending(Reason.NAMESPACE_NOT_ALLOWED, REFUSED, warning=True),
        id="namespace-refused",
    ),
    pytest.param(
        pod(namespace="team-a", finalizer=False, scheduled=(Reason.NAMESPACE_NOT_ALLOWED, REFUSED)),
        [],
        [],
        id="namespace-refused-already-shown",
    ),
    pytest.param(
        pod(annotations=BAD),
        [],
        pending(Reason.INVALID_JOB_OPTIONS, problems(pod(annotations=BAD)), warning=True),
        id="bad-annotation-reported",
    ),
    pytest.param(pod(node="k8s-node-1", finalizer=False), [], [], id="bound-by-someone-else-ignored"),
    pytest.param(
        pod(),
        [
            job(40, JobState.PENDING, uid=EARLIER_UID),
            job(41, JobState.RUNNING, uid=EARLIER_UID, cluster="c2"),
        ],
        [
            CancelJob(40, JobOutcome.CANCEL, STALE),
            RecordEvent(Reason.STALE_JOB, f"cancelling: {STALE}", warning=True),
            submit(pod()),
        ],
        id="earlier-pods-job-cancelled-then-submit",
    ),
    # --- adoption and pending
    pytest.param(
        pod(finalizer=False),
        [job(42, JobState.PENDING, reason="Resources")],
        [AddFinalizerAndLabel(42), JOB_SEEN, *pending(Reason.JOB_PENDING, "Slurm job 42 pending: Resources")],
        id="existing-job-adopted-never-resubmitted",
    ),
    pytest.param(
        pod(label=42, scheduled=(Reason.JOB_PENDING, "Slurm job 42 pending: Resources")),
        [job(42, JobState.PENDING, reason="Resources")],
        [],
        id="pending-unchanged-does-nothing",
    ),
    pytest.param(
        pod(label=42, scheduled=(Reason.JOB_PENDING, "Slurm job 42 pending: Resources")),
        [job(42, JobState.PENDING, reason="Priority")],
        pending(Reason.JOB_PENDING, "Slurm job 42 pending: Priority"),
        id="pending-reason-propagated",
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.PENDING, reason=None)],
        pending(Reason.JOB_PENDING, "Slurm job 42 pending"),
        id="pending-without-reason",
    ),
    pytest.param(
        pod(label=42, annotations=CHANGED),
        [job(42, JobState.PENDING, reason="Priority")],
        [
            CancelJob(42, JobOutcome.CANCEL, "Slurm job 42 no longer matches the pod's options"),
            RecordEvent(
                Reason.JOB_SUPERSEDED,
                "Slurm job 42 no longer matches the pod's options; cancelling it and submitting a new one",
            ),
            submit(pod(annotations=CHANGED)),
        ],
        id="changed-options-cancel-and-resubmit",
    ),
    pytest.param(
        pod(label=42, annotations=BAD),
        [job(42, JobState.PENDING)],
        pending(
            Reason.INVALID_JOB_OPTIONS,
            problems(pod(annotations=BAD)) + " (Slurm job 42 stays queued with the earlier options)",
            warning=True,
        ),
        id="options-broken-while-pending-keep-job",
    ),
    pytest.param(
        pod(label=42, annotations=CHANGED),
        [job(42, JobState.CANCELLED, digest=spec_digest(job_spec_for(pod(), CONFIG)))],
        [submit(pod(annotations=CHANGED))],
        id="superseded-job-gone-submit-new",
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.CANCELLED, digest=OLD), job(43, JobState.PENDING, reason="Priority")],
        [
            AddFinalizerAndLabel(43),
            RecordEvent(Reason.JOB_SUBMITTED, "Slurm job 43 holds this pod's place"),
            *pending(Reason.JOB_PENDING, "Slurm job 43 pending: Priority"),
        ],
        id="resubmitted-job-relabelled",
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.PENDING), job(43, JobState.PENDING), job(44, JobState.RUNNING, nodes=("node2",))],
        [
            CancelJob(43, JobOutcome.CANCEL, "Slurm job 43 duplicates job 42"),
            RecordEvent(Reason.DUPLICATE_JOB, "cancelling: Slurm job 43 duplicates job 42", warning=True),
            CancelJob(44, JobOutcome.CANCEL, "Slurm job 44 duplicates job 42"),
            RecordEvent(Reason.DUPLICATE_JOB, "cancelling: Slurm job 44 duplicates job 42", warning=True),
            *pending(Reason.JOB_PENDING, "Slurm job 42 pending"),
        ],
        id="duplicates-cancelled-oldest-kept",
    ),
    pytest.param(pod(), [job(42, JobState.RUNNING, cluster="c2")], [submit(pod())], id="other-clusters-job"),
    # --- running: bind
    pytest.param(
        pod(label=42),
        [job(42, JobState.RUNNING, nodes=("node1", "node2"))],
        [BindPod("k8s-node-1", "node1", 42), BOUND],
        id="running-binds-to-first-node",
    ),
    pytest.param(
        pod(finalizer=False),
        [job(42, JobState.RUNNING, nodes=("node1",))],
        [AddFinalizerAndLabel(42), JOB_SEEN, BindPod("k8s-node-1", "node1", 42), BOUND],
        id="running-adopted-and-bound",
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.RUNNING, nodes=("node9",))],
        pending(
            Reason.NODE_NOT_IN_KUBERNETES,
            "Slurm job 42 runs on Slurm node node9, which is no Kubernetes node",
            warning=True,
        ),
        id="running-on-unmapped-node",
    ),
    pytest.param(pod(label=42), [job(42, JobState.RUNNING)], [], id="running-without-nodes-yet"),
    pytest.param(
        pod(label=42, node="k8s-node-1"), [job(42, JobState.RUNNING, nodes=("node1",))], [], id="bound"
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.SUSPENDED, nodes=("node1",))],
        pending(Reason.JOB_SUSPENDED, "Slurm job 42 is suspended"),
        id="suspended-before-bind",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1"),
        [job(42, JobState.PENDING, reason="BeginTime")],
        deleted(Reason.JOB_REQUEUED, "Slurm job 42 was requeued"),
        id="requeued-while-bound-deletes-pod",
    ),
    # --- the job ended while the pod lives
    *[
        pytest.param(
            pod(label=42, node="k8s-node-1"),
            [job(42, state, nodes=("node1",))],
            deleted(reason, f"Slurm job 42 {ended}; deleting the pod"),
            id=f"job-{state.lower()}-deletes-pod",
        )
        for state, reason, ended in [
            (JobState.COMPLETED, Reason.JOB_COMPLETED, "completed"),
            (JobState.CANCELLED, Reason.JOB_CANCELLED, "was cancelled in Slurm (scancel)"),
            (JobState.TIMEOUT, Reason.JOB_TIMEOUT, "reached its time limit"),
            (JobState.PREEMPTED, Reason.JOB_PREEMPTED, "was preempted"),
            (JobState.NODE_FAIL, Reason.JOB_NODE_FAIL, "ended with a node failure"),
            (JobState.FAILED, Reason.JOB_FAILED, "failed"),
            (JobState.OUT_OF_MEMORY, Reason.JOB_OUT_OF_MEMORY, "ran out of memory"),
        ]
    ],
    pytest.param(
        pod(label=42),
        [job(42, JobState.CANCELLED)],
        deleted(Reason.JOB_CANCELLED, "Slurm job 42 was cancelled in Slurm (scancel); deleting the pod"),
        id="pending-job-scancelled-deletes-pod",
    ),
    pytest.param(
        pod(label=42),
        [job(42, JobState.FAILED, reason="BadConstraints")],
        deleted(Reason.JOB_FAILED, "Slurm job 42 failed (BadConstraints); deleting the pod"),
        id="job-failed-at-submit-says-why",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1"),
        [],
        deleted(Reason.JOB_VANISHED, "Slurm job 42 left slurmctld before its end was seen"),
        id="job-purged-deletes-pod",
    ),
    # --- the pod finished: release at terminal with its outcome
    pytest.param(
        pod(label=42, node="k8s-node-1", phase="Succeeded"),
        [job(42, JobState.RUNNING, nodes=("node1",))],
        [
            CancelJob(42, JobOutcome.SUCCESS, "pod Succeeded", exit_code=0),
            RecordEvent(Reason.JOB_RELEASED, "pod Succeeded: ending Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="succeeded-ends-job-with-success",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1", phase="Failed", deleting=True),
        [job(42, JobState.RUNNING, nodes=("node1",))],
        [
            CancelJob(42, JobOutcome.FAILURE, "pod Failed", exit_code=1),
            RecordEvent(Reason.JOB_RELEASED, "pod Failed: ending Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="failed-and-deleted-ends-job-with-failure",
    ),
    pytest.param(
        pod(label=42, phase="Failed"),
        [job(42, JobState.PENDING)],
        [
            CancelJob(42, JobOutcome.CANCEL, "pod Failed"),
            RecordEvent(Reason.JOB_RELEASED, "pod Failed: ending Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="failed-before-start-plain-cancel",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1", phase="Succeeded"),
        [job(42, JobState.COMPLETED)],
        [RemoveFinalizer()],
        id="succeeded-job-already-ended",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1", phase="Succeeded", finalizer=False),
        [job(42, JobState.COMPLETED)],
        [],
        id="succeeded-all-done",
    ),
    # --- the pod is being deleted
    pytest.param(
        pod(label=42, node="k8s-node-1", deleting=True),
        [job(42, JobState.RUNNING, nodes=("node1",))],
        [],
        id="terminating-keeps-job-until-terminal",
    ),
    pytest.param(
        pod(label=42, deleting=True),
        [job(42, JobState.PENDING)],
        [
            CancelJob(42, JobOutcome.CANCEL, "pod deleted before it was bound"),
            RecordEvent(Reason.JOB_RELEASED, "pod deleted before it was bound: cancelling Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="deleted-before-bind-cancels-at-once",
    ),
    pytest.param(
        pod(label=42, deleting=True),
        [job(42, JobState.RUNNING, nodes=("node1",))],
        [
            CancelJob(42, JobOutcome.CANCEL, "pod deleted before it was bound"),
            RecordEvent(Reason.JOB_RELEASED, "pod deleted before it was bound: cancelling Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="deleted-before-bind-even-if-job-started",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1", deleting=True),
        [job(42, JobState.PENDING)],
        [
            CancelJob(42, JobOutcome.CANCEL, "pod deleted"),
            RecordEvent(Reason.JOB_RELEASED, "pod deleted: cancelling Slurm job 42"),
            RemoveFinalizer(),
        ],
        id="terminating-with-requeued-job-cancels-it",
    ),
    pytest.param(
        pod(label=42, node="k8s-node-1", deleting=True),
        [job(42, JobState.NODE_FAIL)],
        [RemoveFinalizer()],
        id="terminating-job-ended-releases-pod",
    ),
    pytest.param(pod(deleting=True), [], [RemoveFinalizer()], id="deleted-before-any-job"),
]


@pytest.mark.parametrize(("p", "jobs", "expected"), SCENARIOS)
def test_plan_pod(p: PodInfo | None, jobs: list[Job], expected: list[PodAction]) -> None:
    assert plan_pod(PodObservation(p, jobs, NODES), CONFIG) == expected


@pytest.mark.parametrize(("p", "jobs", "expected"), SCENARIOS)
def test_plan_invariants(p: PodInfo | None, jobs: list[Job], expected: list[PodAction]) -> None:
    actions = plan_pod(PodObservation(p, jobs, NODES), CONFIG)
    cancelled = {a.job_id for a in actions if isinstance(a, CancelJob)}
    own_active = {
        j.job_id
        for j in jobs
        if not j.state.is_finished and getattr(decode_marker(j.comment, "c1"), "pod_uid", None) == UID
    }
    # never a second job while one for this pod remains
    if any(isinstance(a, SubmitJob) for a in actions):
        assert own_active <= cancelled
    # never release a pod's finalizer while its running allocation is kept
    if any(isinstance(a, RemoveFinalizer) for a in actions):
        assert own_active <= cancelled
    # planning is level-based: the same observation gives the same plan
    assert actions == plan_pod(PodObservation(p, jobs, NODES), CONFIG)


@pytest.mark.parametrize(
    ("jobs", "live_uids", "cancelled"),
    [
        ([job(42, JobState.RUNNING)], set(), [42]),
        ([job(42, JobState.PENDING)], {UID}, []),
        ([job(42, JobState.COMPLETED)], set(), []),
        ([job(42, JobState.PENDING, submitted=NOW - timedelta(seconds=10))], set(), []),
        ([job(42, JobState.PENDING, submitted=None)], set(), []),
        ([job(42, JobState.RUNNING, cluster="c2")], set(), []),
        (
            [
                Job(job_id=7, name="x", state=JobState.RUNNING, comment='{"pods": ["slurm-bridge/x"]}'),
                Job(job_id=8, name="y", state=JobState.RUNNING, comment=None),
                Job(job_id=9, name="z", state=JobState.RUNNING, comment="slurm-bridge/v1 cluster=c1 pod=a/b"),
            ],
            set(),
            [],
        ),
        ([job(42, JobState.RUNNING), job(43, JobState.PENDING, uid=EARLIER_UID)], {UID}, [43]),
    ],
    ids=[
        "pod-gone",
        "pod-alive",
        "already-finished",
        "too-young",
        "no-submit-time",
        "other-cluster",
        "no-positive-marker",
        "only-the-gone-uid",
    ],
)
def test_orphan_cleanup(jobs: list[Job], live_uids: set[str], cancelled: list[int]) -> None:
    actions = plan_orphan_cleanup(jobs, live_uids, "c1", NOW)
    assert [a.job_id for a in actions] == cancelled
    assert all(a.outcome is JobOutcome.CANCEL for a in actions)


# --- planner inputs --------------------------------------------------------------------------------


def node(name: str, labels: dict[str, str] | None = None) -> NodeInfo:
    return NodeInfo.from_api({"metadata": {"name": name, "labels": labels or {}}, "spec": {}})


@pytest.mark.parametrize(
    ("nodes", "label", "expected"),
    [
        ([node("node1"), node("node2")], None, {"node1": "node1", "node2": "node2"}),
        (
            [node("k8s-a", {"slurm": "node1"}), node("k8s-b", {"slurm": "node2"}), node("control-plane")],
            "slurm",
            {"node1": "k8s-a", "node2": "k8s-b"},
        ),
        ([node("k8s-b", {"slurm": "node1"}), node("k8s-a", {"slurm": "node1"})], "slurm", {"node1": "k8s-a"}),
    ],
    ids=["same-names", "by-label-skips-unlabelled", "label-clash-is-deterministic"],
)
def test_slurm_to_kubernetes_nodes(
    nodes: list[NodeInfo], label: str | None, expected: dict[str, str]
) -> None:
    assert slurm_to_kubernetes_nodes(nodes, label) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({LABEL_SLURM_JOB_ID: "42"}, 42),
        ({}, None),
        ({LABEL_SLURM_JOB_ID: "x42"}, None),
        ({LABEL_SLURM_JOB_ID: "٤"}, None),
    ],
    ids=["set", "absent", "garbled", "non-ascii-digit"],
)
def test_labelled_job_id(labels: dict[str, str], expected: int | None) -> None:
    assert PodInfo.from_api({"metadata": {"name": "p", "labels": labels}}).labelled_job_id == expected


def test_pod_from_api_reads_what_planning_needs() -> None:
    p = PodInfo.from_api(
        {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": UID,
                "finalizers": [FINALIZER],
                "deletionTimestamp": "2026-05-01T12:00:00Z",
            },
            "spec": {
                "schedulerName": "s",
                "nodeName": "n1",
                "initContainers": [{"name": "i", "restartPolicy": "Always"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"},
                ],
            },
        }
    )
    assert (p.key, p.uid, p.scheduler_name, p.node_name, p.phase) == ("ns/p", UID, "s", "n1", "Running")
    assert p.has_finalizer
    assert p.is_deleting
    assert p.is_bound
    assert not p.is_terminal
    assert p.init_containers[0].sidecar
    assert p.deletion_timestamp == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    condition = p.condition("PodScheduled")
    assert condition is not None
    assert condition.status == "True"


@pytest.mark.parametrize(
    ("namespace", "confirmed", "expected"),
    [
        ("slurm-bridge", True, "vanished"),
        ("slurm-bridge", False, "wait"),  # the scheduler run apart labelled it; our index has not polled yet
        ("elsewhere", True, "wait"),  # another bridge's namespace and label: not ours to judge
    ],
    ids=["confirmed-gone", "not-polled-since", "foreign-namespace"],
)
def test_a_labelled_job_missing_from_the_index_is_judged_only_when_sure(
    namespace: str, confirmed: bool, expected: str
) -> None:
    observed = PodObservation(
        pod(phase="Running", node="k8s-node-1", label=42, namespace=namespace),
        [],
        NODES,
        labelled_job_absence_confirmed=confirmed,
    )
    actions = plan_pod(observed, CONFIG)
    if expected == "wait":
        assert actions == []
    else:
        assert actions == deleted(Reason.JOB_VANISHED, "Slurm job 42 left slurmctld before its end was seen")


# --- ending(): what a placeholder is told when its pod or gang ends -----------------------------------


@pytest.mark.parametrize(
    ("state", "batch", "outcome", "failed_code", "expected"),
    [
        pytest.param(JobState.RUNNING, True, JobOutcome.SUCCESS, None, (JobOutcome.SUCCESS, 0), id="ok-0"),
        pytest.param(JobState.RUNNING, True, JobOutcome.FAILURE, 3, (JobOutcome.FAILURE, 3), id="failed-3"),
        pytest.param(
            JobState.RUNNING, True, JobOutcome.FAILURE, None, (JobOutcome.FAILURE, 1), id="unknown-1"
        ),
        pytest.param(
            JobState.RUNNING, None, JobOutcome.FAILURE, 7, (JobOutcome.FAILURE, 7), id="kind-unknown"
        ),
        pytest.param(
            JobState.RUNNING, False, JobOutcome.FAILURE, 3, (JobOutcome.FAILURE, None), id="external"
        ),
        pytest.param(
            JobState.PENDING, True, JobOutcome.FAILURE, 3, (JobOutcome.CANCEL, None), id="not-started"
        ),
        pytest.param(JobState.RUNNING, True, JobOutcome.CANCEL, 3, (JobOutcome.CANCEL, None), id="cancel"),
        pytest.param(
            JobState.SUSPENDED, True, JobOutcome.SUCCESS, None, (JobOutcome.CANCEL, None), id="susp"
        ),
    ],
)
def test_ending_tells_a_running_batch_placeholder_the_pods_exit_code(
    state: JobState,
    batch: bool | None,
    outcome: JobOutcome,
    failed_code: int | None,
    expected: tuple[JobOutcome, int | None],
) -> None:
    placeholder = job(42, state, nodes=("node1",)).model_copy(update={"batch": batch})
    action = ending(placeholder, outcome, "why", failed_code)
    assert (action.outcome, action.exit_code) == expected
    # the comment travels with an exit code: the placeholder reads it back with squeue
    assert (action.comment == placeholder.comment) is (expected[1] is not None)

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind, GroupStatus
from bridge.gang_marker import GangMarker
from bridge.gang_translate import gang_job_spec_for, gang_spec_digest, placeholder_gang_job_for
from bridge.objects import PodCondition, PodInfo
from bridge.translate import JobOutcome, job_spec_for
from bridge.wellknown import ANNOTATION_SLURM_NODE, FINALIZER, LABEL_SLURM_JOB_ID, GangReason, Reason
from controller.gang_plan import (
    AddMemberFinalizers,
    BindMembers,
    DeleteMembers,
    GangAction,
    GangObservation,
    LabelGroup,
    MemberBinding,
    PodRef,
    RecordGroupEvent,
    RecordPodEvent,
    RemoveMemberFinalizers,
    SetGroupCondition,
    SetGroupStatus,
    SetMembersPending,
    gang_recheck_at,
    plan_gang,
    plan_gang_orphan_cleanup,
)
from controller.plan import CancelJob, SubmitJob
from slurm_client import Job, JobState

GROUP_UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
EARLIER_UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NODES = {"node1": "k8s-node-1", "node2": "k8s-node-2", "node3": "k8s-node-3"}
KEY = GangKey(namespace="ml", kind=GangKind.COSCHEDULING, name="train")

CONFIG = BridgeConfig(cluster_id="c1", namespaces=("ml",))


def pod(
    name: str,
    *,
    phase: str | None = None,
    node: str | None = None,
    deleting: bool = False,
    finalizer: bool = True,
    label: int | None = None,
    scheduled: tuple[str, str] | None = None,
    age: timedelta = timedelta(seconds=30),
    scheduler: str = "slurm-bridge-scheduler",
    namespace: str = "ml",
    cpu: str = "1",
) -> PodInfo:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "creationTimestamp": (NOW - age).isoformat(),
        "labels": {"scheduling.x-k8s.io/pod-group": "train"},
        "annotations": {},
    }
    if finalizer:
        meta["finalizers"] = [FINALIZER]
    if label is not None:
        meta["labels"][LABEL_SLURM_JOB_ID] = str(label)
    if deleting:
        meta["deletionTimestamp"] = (NOW - timedelta(seconds=5)).isoformat()
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}],
    }
    if node is not None:
        spec["nodeName"] = node
        meta["annotations"][ANNOTATION_SLURM_NODE] = node.replace("k8s-node-", "node")
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if scheduled is not None:
        reason, message = scheduled
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
        ]
    return PodInfo.from_api({"metadata": meta, "spec": spec, "status": status})


def group(
    *,
    min_member: int = 2,
    timeout: int | None = None,
    annotations: dict[str, str] | None = None,
    status: GroupStatus | None = None,
    kind: GangKind = GangKind.COSCHEDULING,
    uid: str = GROUP_UID,
    condition: tuple[str, str, str] | None = None,
) -> GangInfo:
    return GangInfo(
        key=KEY.model_copy(update={"kind": kind}),
        uid=uid,
        min_member=min_member,
        annotations=annotations or {},
        schedule_timeout_seconds=timeout,
        status=status or GroupStatus(),
        scheduled_condition=(
            PodCondition(
                type="PodGroupInitiallyScheduled",
                status=condition[0],
                reason=condition[1],
                message=condition[2],
            )
            if condition
            else None
        ),
    )


def digest_for(members: int, gang: GangInfo | None = None) -> str:
    pods = [pod(f"w-{i}") for i in range(members)]
    return gang_spec_digest(gang_job_spec_for(gang or group(), pods, CONFIG))


def job(
    job_id: int,
    state: JobState,
    *,
    nodes: tuple[str, ...] = (),
    members: int = 2,
    uid: str = GROUP_UID,
    digest: str | None = None,
    reason: str | None = None,
    cluster: str = "c1",
    kind: GangKind = GangKind.COSCHEDULING,
    submitted: datetime | None = NOW - timedelta(minutes=5),
) -> Job:
    marker = GangMarker(cluster, "ml", kind, "train", uid, digest or digest_for(members))
    return Job(
        job_id=job_id,
        name="train",
        state=state,
        state_reason=reason,
        nodes=nodes,
        node_count=len(nodes) or None,
        comment=marker.encode(),
        submit_time=submitted,
    )


def observe(
    pods: Sequence[PodInfo],
    jobs: Sequence[Job] = (),
    gang: GangInfo | None = None,
    *,
    no_group: bool = False,
    partitions: dict[str, int] | None = None,
    now: datetime = NOW,
) -> GangObservation:
    the_group = None if no_group else (gang or group())
    return GangObservation(
        key=the_group.key if the_group is not None else KEY,
        now=now,
        gang=the_group,
        pods=pods,
        jobs=jobs,
        slurm_to_kubernetes_nodes=NODES,
        partition_nodes=partitions or {},
    )


def ref(name: str) -> PodRef:
    return PodRef(name, str(uuid.uuid5(uuid.NAMESPACE_DNS, name)))


def refs(*names: str) -> tuple[PodRef, ...]:
    return tuple(ref(n) for n in names)


def pending(
    names: Sequence[str], reason: Reason | GangReason, message: str, warning: bool = False
) -> list[GangAction]:
    return [SetMembersPending(refs(*names), reason, message), RecordGroupEvent(reason, message, warning)]


def submit(members: int, gang: GangInfo | None = None) -> SubmitJob:
    return SubmitJob(
        placeholder_gang_job_for(gang or group(), [pod(f"w-{i}") for i in range(members)], CONFIG)
    )


def bind(job_id: int, *pairs: tuple[str, str]) -> list[GangAction]:
    bindings = tuple(
        MemberBinding(ref(name), f"k8s-{slurm.replace('node', 'node-')}", slurm) for name, slurm in pairs
    )
    return [
        BindMembers(job_id, bindings),
        *[
            RecordPodEvent(
                b.pod,
                Reason.SCHEDULED,
                f"Successfully assigned ml/{b.pod.name} to {b.node_name}"
                f" (Slurm job {job_id}, node {b.slurm_node})",
            )
            for b in bindings
        ],
    ]


def deleted(names: Sequence[str], reason: Reason | GangReason, message: str) -> list[GangAction]:
    evict = reason in (Reason.JOB_PREEMPTED, Reason.JOB_REQUEUED)  # Slurm took the allocation back
    return [
        RecordGroupEvent(reason, message, warning=True),
        DeleteMembers(refs(*names), reason, message, evict),
    ]


WAITING_1_OF_2 = "waiting for members: 1 of 2 exist"
PENDING_42 = "Slurm job 42 pending: Resources"
HOLDS_42 = RecordGroupEvent(Reason.JOB_SUBMITTED, "Slurm job 42 holds the places of 2 members")
RUNNING_BOUND = [
    pod("w-0", label=42, node="k8s-node-1", phase="Running"),
    pod("w-1", label=42, node="k8s-node-2", phase="Running"),
]
RUNNING_42 = job(42, JobState.RUNNING, nodes=("node1", "node2"))
BAD_OPTION = {"slinky.slurm.net/timelimit": "soon"}
BAD_MESSAGE = "slinky.slurm.net/timelimit: 'soon' is not a whole number >= 1"
FAILED_W1 = "member w-1 failed: ending the gang and its Slurm job 42"
ALL_ENDED = "every member has ended: releasing Slurm job 42"
NO_GROUP = "PodGroup ml/train does not exist; the pod waits for it"
GROUP_GONE = "PodGroup ml/train is gone: ending its gang and Slurm job 42"
STALE = f"Slurm job 40 belongs to an earlier group of this name (uid {EARLIER_UID})"
SUPERSEDED_3 = "Slurm job 42 no longer matches the gang (3 members now)"
SUPERSEDED_1 = "Slurm job 42 no longer matches the gang (1 members now)"
OLD = "000000000000"


SCENARIOS = [
    # --- gathering members -------------------------------------------------------------------------
    pytest.param(
        observe([pod("w-0", finalizer=False)]),
        pending(["w-0"], GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2),
        id="no-job-until-min-member",
    ),
    pytest.param(
        observe([pod("w-0", scheduled=(GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2))]),
        [],
        id="waiting-already-shown",
    ),
    pytest.param(
        observe([pod("w-0", age=timedelta(seconds=30))], gang=group(timeout=60)),
        pending(["w-0"], GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2),
        id="within-schedule-timeout",
    ),
    pytest.param(
        observe(
            [pod("w-0", age=timedelta(seconds=61)), pod("w-9", age=timedelta(seconds=5))],
            gang=group(min_member=3, timeout=60),
        ),
        pending(
            ["w-0", "w-9"],
            GangReason.SCHEDULE_TIMEOUT,
            "only 2 of 3 members after 60s (scheduleTimeoutSeconds);"
            " nothing is submitted until all of them exist",
            warning=True,
        ),
        id="schedule-timeout-from-oldest-member-nothing-submitted",
    ),
    pytest.param(
        observe([pod("w-0", finalizer=False), pod("w-1", finalizer=False)]),
        [AddMemberFinalizers(refs("w-0", "w-1"), None), submit(2)],
        id="min-member-reached-finalizers-then-submit",
    ),
    pytest.param(observe([pod("w-0"), pod("w-1")]), [submit(2)], id="prepared-members-submit"),
    pytest.param(observe([pod("w-0"), pod("w-1"), pod("w-2")]), [submit(3)], id="all-members-one-job"),
    pytest.param(
        observe([pod("w-0"), pod("w-1", scheduler="default-scheduler")]),
        pending(["w-0"], GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2),
        id="other-schedulers-pods-do-not-count",
    ),
    pytest.param(
        observe([pod("w-0"), pod("w-1", phase="Succeeded", finalizer=False)]),
        pending(["w-0"], GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2),
        id="finished-pods-do-not-count",
    ),
    pytest.param(
        observe([pod("w-0", namespace="team-a"), pod("w-1", namespace="team-a")]),
        pending(
            ["w-0", "w-1"],
            Reason.NAMESPACE_NOT_ALLOWED,
            "namespace 'team-a' is not allowed for scheduler 'slurm-bridge-scheduler' (allowed: ml);"
            " the pod will not be scheduled",
            warning=True,
        ),
        id="namespace-refused",
    ),
    pytest.param(
        observe([pod("w-0")], gang=group(annotations=BAD_OPTION)),
        pending(["w-0"], Reason.INVALID_JOB_OPTIONS, BAD_MESSAGE, warning=True),
        id="bad-options-reported-before-all-members-exist",
    ),
    pytest.param(
        observe(
            [pod("w-0"), pod("w-1")],
            gang=group(annotations={"scheduler.slinky.slurm.net/gang-failure-policy": "x"}),
        ),
        pending(
            ["w-0", "w-1"],
            Reason.INVALID_JOB_OPTIONS,
            "the group's failure policy is not one of EndGang, Continue",
            warning=True,
        ),
        id="bad-failure-policy",
    ),
    pytest.param(
        observe([pod("w-0")], gang=group(min_member=3), partitions={"slurm-bridge": 2}),
        pending(
            ["w-0"],
            GangReason.LARGER_THAN_PARTITION,
            "the gang needs 3 nodes (one per member) but partition 'slurm-bridge' has 2; it can never run,"
            " so nothing is submitted",
            warning=True,
        ),
        id="larger-than-partition-refused-early",
    ),
    pytest.param(
        observe([pod("w-0"), pod("w-1")], partitions={"slurm-bridge": 2, "big": 1}),
        [submit(2)],
        id="fits-the-partition",
    ),
    pytest.param(
        observe([pod("w-0"), pod("w-1")], partitions={"other": 1}),
        [submit(2)],
        id="unknown-partition-not-checked",
    ),
    pytest.param(
        observe([pod("w-0"), pod("w-1")], [job(42, JobState.RUNNING, cluster="c2")]),
        [submit(2)],
        id="other-clusters-job-ignored",
    ),
    pytest.param(
        observe(
            [pod("w-0"), pod("w-1")],
            gang=group(kind=GangKind.WORKLOAD).model_copy(update={"all_or_nothing": False}),
        ),
        [],
        id="basic-policy-is-no-gang",
    ),
    # --- the job is pending ------------------------------------------------------------------------
    pytest.param(
        observe([pod("w-0"), pod("w-1")], [job(42, JobState.PENDING, reason="Resources")]),
        [
            AddMemberFinalizers(refs("w-0", "w-1"), 42),
            HOLDS_42,
            *pending(["w-0", "w-1"], Reason.JOB_PENDING, PENDING_42),
        ],
        id="job-seen-members-labelled-never-resubmitted",
    ),
    pytest.param(
        observe(
            [pod(f"w-{i}", label=42, scheduled=(Reason.JOB_PENDING, PENDING_42)) for i in range(2)],
            [job(42, JobState.PENDING, reason="Resources")],
        ),
        [],
        id="pending-unchanged",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42), pod("w-2", finalizer=False)],
            [job(42, JobState.PENDING)],
        ),
        [
            CancelJob(42, JobOutcome.CANCEL, SUPERSEDED_3),
            RecordGroupEvent(Reason.JOB_SUPERSEDED, f"{SUPERSEDED_3}; cancelling it"),
            AddMemberFinalizers(refs("w-2"), None),
            submit(3),
        ],
        id="member-joins-while-pending-resubmit",
    ),
    pytest.param(
        observe([pod("w-0", label=42), pod("w-1", label=42, deleting=True)], [job(42, JobState.PENDING)]),
        [
            CancelJob(42, JobOutcome.CANCEL, SUPERSEDED_1),
            RecordGroupEvent(Reason.JOB_SUPERSEDED, f"{SUPERSEDED_1}; cancelling it"),
            *pending(["w-0"], GangReason.WAITING_FOR_MEMBERS, WAITING_1_OF_2),
            RemoveMemberFinalizers(refs("w-1")),
        ],
        id="member-deleted-while-pending-cancel-and-wait",
    ),
    pytest.param(
        observe([], [job(42, JobState.PENDING)]),
        [
            CancelJob(42, JobOutcome.CANCEL, "no member is left for Slurm job 42"),
            RecordGroupEvent(Reason.JOB_RELEASED, "no member is left for Slurm job 42: cancelling it"),
        ],
        id="every-member-gone-while-pending",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42)],
            [job(42, JobState.PENDING)],
            group(annotations=BAD_OPTION),
        ),
        pending(
            ["w-0", "w-1"],
            Reason.INVALID_JOB_OPTIONS,
            f"{BAD_MESSAGE} (Slurm job 42 stays queued with the earlier options)",
            warning=True,
        ),
        id="options-broken-while-pending-keep-job",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42)],
            [job(42, JobState.SUSPENDED, nodes=("node1", "node2"))],
        ),
        pending(["w-0", "w-1"], Reason.JOB_SUSPENDED, "Slurm job 42 is suspended"),
        id="suspended-before-bind",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42)],
            [job(40, JobState.PENDING, uid=EARLIER_UID), job(42, JobState.PENDING, reason="Resources")],
        ),
        [
            CancelJob(40, JobOutcome.CANCEL, STALE),
            RecordGroupEvent(Reason.STALE_JOB, STALE, warning=True),
            *pending(["w-0", "w-1"], Reason.JOB_PENDING, PENDING_42),
        ],
        id="earlier-groups-job-cancelled",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42)],
            [job(42, JobState.PENDING, reason="Resources"), job(43, JobState.PENDING)],
        ),
        [
            CancelJob(43, JobOutcome.CANCEL, "Slurm job 43 duplicates job 42"),
            RecordGroupEvent(Reason.DUPLICATE_JOB, "Slurm job 43 duplicates job 42", warning=True),
            *pending(["w-0", "w-1"], Reason.JOB_PENDING, PENDING_42),
        ],
        id="duplicate-cancelled-oldest-kept",
    ),
    # --- the job runs: bind all or none -------------------------------------------------------------
    pytest.param(
        observe([pod("w-1", label=42), pod("w-0", label=42)], [RUNNING_42]),
        bind(42, ("w-0", "node1"), ("w-1", "node2")),
        id="running-binds-each-member-to-its-own-node-in-rank-order",
    ),
    pytest.param(
        observe([pod("w-0", finalizer=False), pod("w-1", finalizer=False)], [RUNNING_42]),
        [
            AddMemberFinalizers(refs("w-0", "w-1"), 42),
            HOLDS_42,
            *bind(42, ("w-0", "node1"), ("w-1", "node2")),
        ],
        id="started-before-seen-pending-labelled-then-bound",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42), pod("w-1", label=42)],
            [job(42, JobState.RUNNING, nodes=("node1", "node9"))],
        ),
        pending(
            ["w-0", "w-1"],
            Reason.NODE_NOT_IN_KUBERNETES,
            "Slurm job 42 holds 2 free nodes (node1, node9) for 2 members,"
            " 1 of them distinct Kubernetes nodes (no Kubernetes node: node9);"
            " binding none, since a gang never starts in part",
            warning=True,
        ),
        id="never-binds-in-part",
    ),
    pytest.param(
        observe([pod("w-0", label=42), pod("w-1", label=42)], [job(42, JobState.RUNNING)]),
        [],
        id="running-without-node-list-yet",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42, node="k8s-node-2", phase="Running"), pod("w-1", label=42)], [RUNNING_42]
        ),
        bind(42, ("w-1", "node1")),
        id="bind-retry-keeps-bound-members-and-uses-the-free-node",
    ),
    pytest.param(
        observe(
            [pod("w-0", label=42, node="k8s-node-1"), pod("w-1", label=42)],
            [job(42, JobState.RUNNING, nodes=("node1",))],
        ),
        # one member bound, the other cannot be: a gang never runs in part, so it ends whole
        deleted(
            ["w-0", "w-1"],
            GangReason.ALLOCATION_TOO_SMALL,
            "Slurm job 42 holds 0 free nodes () for 1 members, 0 of them distinct Kubernetes nodes;"
            " ending the gang and its Slurm job 42",
        ),
        id="allocation-too-small-after-a-partial-bind",
    ),
    pytest.param(observe(RUNNING_BOUND, [RUNNING_42]), [], id="all-bound"),
    pytest.param(
        observe([*RUNNING_BOUND, pod("w-2")], [RUNNING_42]),
        pending(
            ["w-2"],
            GangReason.ALREADY_RUNNING,
            "the gang runs as Slurm job 42 on 2 nodes; this pod joined after it started and waits until"
            " the gang has ended",
        ),
        id="late-member-waits-for-the-next-round",
    ),
    # --- a member fails or goes: the whole gang ends ------------------------------------------------
    pytest.param(
        observe([RUNNING_BOUND[0], pod("w-1", label=42, node="k8s-node-2", phase="Failed")], [RUNNING_42]),
        deleted(["w-0"], GangReason.MEMBER_FAILED, FAILED_W1),
        id="member-failed-others-deleted-job-kept-until-they-end",
    ),
    pytest.param(
        observe(
            [
                pod("w-0", label=42, node="k8s-node-1", phase="Running", deleting=True),
                pod("w-1", label=42, node="k8s-node-2", phase="Failed"),
            ],
            [RUNNING_42],
        ),
        [],
        id="ending-gang-waits-for-members-to-stop",
    ),
    pytest.param(
        observe(
            [
                pod("w-0", label=42, node="k8s-node-1", phase="Failed", deleting=True),
                pod("w-1", label=42, node="k8s-node-2", phase="Failed"),
            ],
            [RUNNING_42],
        ),
        [
            CancelJob(
                42,
                JobOutcome.FAILURE,
                "member w-0, w-1 failed: ending the gang and its Slurm job 42",
                exit_code=1,
            ),
            RecordGroupEvent(
                Reason.JOB_RELEASED,
                "member w-0, w-1 failed: ending the gang and its Slurm job 42",
                warning=True,
            ),
            RemoveMemberFinalizers(refs("w-0", "w-1")),
        ],
        id="ended-gang-released-with-failure",
    ),
    pytest.param(
        observe(
            [RUNNING_BOUND[0], pod("w-1", label=42, node="k8s-node-2", phase="Running", deleting=True)],
            [RUNNING_42],
        ),
        deleted(
            ["w-0"], GangReason.MEMBER_DELETED, "member w-1 was deleted: ending the gang and its Slurm job 42"
        ),
        id="member-deleted-ends-the-gang",
    ),
    pytest.param(
        observe([RUNNING_BOUND[0]], [RUNNING_42]),
        deleted(
            ["w-0"], GangReason.MEMBER_LOST, "1 of 2 members are gone: ending the gang and its Slurm job 42"
        ),
        id="member-vanished-ends-the-gang",
    ),
    pytest.param(
        observe(
            [RUNNING_BOUND[0], pod("w-1", label=42, node="k8s-node-2", phase="Failed")],
            [RUNNING_42],
            group(annotations={"scheduler.slinky.slurm.net/gang-failure-policy": "Continue"}),
        ),
        [],
        id="continue-policy-keeps-the-others",
    ),
    pytest.param(
        observe(
            [
                pod("w-0", label=42, node="k8s-node-1", phase="Succeeded"),
                pod("w-1", label=42, node="k8s-node-2", phase="Failed"),
            ],
            [RUNNING_42],
            group(annotations={"scheduler.slinky.slurm.net/gang-failure-policy": "Continue"}),
        ),
        [
            CancelJob(42, JobOutcome.FAILURE, ALL_ENDED, exit_code=1),
            RecordGroupEvent(Reason.JOB_RELEASED, ALL_ENDED, warning=True),
            RemoveMemberFinalizers(refs("w-0", "w-1")),
        ],
        id="continue-policy-ends-when-all-have",
    ),
    # --- the gang finishes ---------------------------------------------------------------------------
    pytest.param(
        observe([RUNNING_BOUND[0], pod("w-1", label=42, node="k8s-node-2", phase="Succeeded")], [RUNNING_42]),
        [],
        id="early-finisher-waits-for-the-rest",
    ),
    pytest.param(
        observe(
            [pod(f"w-{i}", label=42, node=f"k8s-node-{i + 1}", phase="Succeeded") for i in range(2)],
            [RUNNING_42],
        ),
        [
            CancelJob(42, JobOutcome.SUCCESS, ALL_ENDED, exit_code=0),
            RecordGroupEvent(Reason.JOB_RELEASED, ALL_ENDED),
            RemoveMemberFinalizers(refs("w-0", "w-1")),
        ],
        id="all-succeeded-job-ends-with-success",
    ),
    pytest.param(
        observe(
            [pod(f"w-{i}", label=42, node=f"k8s-node-{i + 1}", phase="Succeeded") for i in range(2)],
            [job(42, JobState.COMPLETED, nodes=("node1", "node2"))],
        ),
        [RemoveMemberFinalizers(refs("w-0", "w-1"))],
        id="job-already-ended-finalizers-off",
    ),
    pytest.param(
        observe(
            [
                pod(f"w-{i}", label=42, node=f"k8s-node-{i + 1}", phase="Succeeded", finalizer=False)
                for i in range(2)
            ]
            + [pod("w-2"), pod("w-3")],
            [job(42, JobState.COMPLETED, nodes=("node1", "node2"))],
        ),
        [submit(2)],
        id="next-round-after-a-finished-one",
    ),
    # --- the job ends under live members --------------------------------------------------------------
    pytest.param(
        observe(RUNNING_BOUND, [job(42, JobState.TIMEOUT, nodes=("node1", "node2"))]),
        deleted(
            ["w-0", "w-1"],
            Reason.JOB_TIMEOUT,
            "Slurm job 42 reached its time limit; deleting the gang's members",
        ),
        id="job-timeout-deletes-members",
    ),
    pytest.param(
        observe(RUNNING_BOUND, []),
        deleted(["w-0", "w-1"], Reason.JOB_VANISHED, "Slurm job 42 left slurmctld before its end was seen"),
        id="job-vanished-deletes-bound-members",
    ),
    pytest.param(
        observe([pod("w-0", label=42), pod("w-1", label=42)], [job(42, JobState.CANCELLED)]),
        deleted(
            ["w-0", "w-1"],
            Reason.JOB_CANCELLED,
            "Slurm job 42 was cancelled in Slurm (scancel); deleting the gang's members",
        ),
        id="pending-job-scancelled-deletes-members",
    ),
    pytest.param(
        observe([pod("w-0", label=42), pod("w-1", label=42)], [job(42, JobState.CANCELLED, digest=OLD)]),
        [submit(2)],
        id="superseded-job-gone-submit-new",
    ),
    pytest.param(
        observe([pod("w-0", label=41), pod("w-1", label=41)], []),
        [submit(2)],
        id="unbound-members-of-a-vanished-job-wait-for-the-next",
    ),
    pytest.param(
        observe(RUNNING_BOUND, [job(42, JobState.PREEMPTED)]),
        deleted(
            ["w-0", "w-1"], Reason.JOB_PREEMPTED, "Slurm job 42 was preempted; deleting the gang's members"
        ),
        id="preempted-job-evicts-started-members",
    ),
    pytest.param(
        observe(RUNNING_BOUND, [job(42, JobState.PENDING, nodes=(), reason="BeginTime")]),
        deleted(
            ["w-0", "w-1"],
            Reason.JOB_REQUEUED,
            "Slurm job 42 was requeued; deleting the members it had started",
        ),
        id="requeued-job-deletes-started-members",
    ),
    # --- the group object is gone ---------------------------------------------------------------------
    pytest.param(
        observe([pod("w-0"), pod("w-1", scheduled=(GangReason.GROUP_NOT_FOUND, NO_GROUP))], no_group=True),
        [
            SetMembersPending(refs("w-0"), GangReason.GROUP_NOT_FOUND, NO_GROUP),
            RecordPodEvent(ref("w-0"), GangReason.GROUP_NOT_FOUND, NO_GROUP, warning=True),
        ],
        id="members-wait-for-their-group",
    ),
    pytest.param(
        observe(RUNNING_BOUND, [RUNNING_42], no_group=True),
        [DeleteMembers(refs("w-0", "w-1"), GangReason.GROUP_DELETED, GROUP_GONE)],
        id="group-deleted-while-running-members-deleted-job-kept",
    ),
    pytest.param(
        observe(
            [pod(f"w-{i}", label=42, node=f"k8s-node-{i + 1}", phase="Failed") for i in range(2)],
            [RUNNING_42],
            no_group=True,
        ),
        [
            CancelJob(42, JobOutcome.FAILURE, GROUP_GONE, exit_code=1),
            RemoveMemberFinalizers(refs("w-0", "w-1")),
        ],
        id="group-deleted-members-ended-job-released",
    ),
    pytest.param(
        observe([pod("w-0", label=42), pod("w-1", label=42)], [job(42, JobState.PENDING)], no_group=True),
        [
            CancelJob(42, JobOutcome.CANCEL, GROUP_GONE),
            SetMembersPending(refs("w-0"), GangReason.GROUP_NOT_FOUND, NO_GROUP),
            RecordPodEvent(ref("w-0"), GangReason.GROUP_NOT_FOUND, NO_GROUP, warning=True),
            SetMembersPending(refs("w-1"), GangReason.GROUP_NOT_FOUND, NO_GROUP),
            RecordPodEvent(ref("w-1"), GangReason.GROUP_NOT_FOUND, NO_GROUP, warning=True),
        ],
        id="group-deleted-while-pending-job-cancelled-members-wait",
    ),
]


def without_status(actions: list[GangAction]) -> list[GangAction]:
    return [a for a in actions if not isinstance(a, SetGroupStatus | SetGroupCondition | LabelGroup)]


@pytest.mark.parametrize(("observed", "expected"), SCENARIOS)
def test_plan_gang(observed: GangObservation, expected: list[GangAction]) -> None:
    assert without_status(plan_gang(observed, CONFIG)) == expected


def status_actions(observed: GangObservation) -> list[GangAction]:
    return [
        a
        for a in plan_gang(observed, CONFIG)
        if isinstance(a, SetGroupStatus | SetGroupCondition | LabelGroup)
    ]


STARTED = NOW - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(
            observe([pod("w-0")]),
            [SetGroupStatus(GroupStatus(phase="Pending"))],
            id="pending-while-gathering",
        ),
        pytest.param(
            observe([pod("w-0")], gang=group(status=GroupStatus(phase="Pending"))),
            [],
            id="unchanged-not-written",
        ),
        pytest.param(
            observe([pod("w-0"), pod("w-1")]),
            [SetGroupStatus(GroupStatus(phase="Scheduling", schedule_start_time=NOW))],
            id="submit-starts-scheduling",
        ),
        pytest.param(
            observe(
                [pod("w-0", label=42), pod("w-1", label=42)],
                [job(42, JobState.PENDING)],
                group(status=GroupStatus(phase="Scheduling", schedule_start_time=STARTED)),
            ),
            [LabelGroup(42)],
            id="job-id-labelled-start-time-kept",
        ),
        pytest.param(
            observe(
                RUNNING_BOUND,
                [RUNNING_42],
                group(status=GroupStatus(phase="Scheduling", schedule_start_time=STARTED)),
            ),
            [
                LabelGroup(42),
                SetGroupStatus(GroupStatus(phase="Running", running=2, schedule_start_time=STARTED)),
            ],
            id="running",
        ),
        pytest.param(
            observe(
                [RUNNING_BOUND[0], pod("w-1", label=42, node="k8s-node-2", phase="Failed")], [RUNNING_42]
            ),
            [LabelGroup(42), SetGroupStatus(GroupStatus(phase="Failed", running=1, failed=1))],
            id="failed",
        ),
        pytest.param(
            observe(
                [pod(f"w-{i}", label=42, node=f"k8s-node-{i + 1}", phase="Succeeded") for i in range(2)],
                [job(42, JobState.COMPLETED)],
            ),
            [LabelGroup(42), SetGroupStatus(GroupStatus(phase="Finished", succeeded=2))],
            id="finished",
        ),
        pytest.param(
            # no pod of our scheduler and no job of ours: the group is left as it was (it may be another
            # scheduler's), so a finished group keeps its status and counts
            observe([], [], group(status=GroupStatus(phase="Finished", succeeded=2))),
            [],
            id="finished-stays-finished-when-its-pods-are-gone",
        ),
        pytest.param(
            observe([pod("w-0")], gang=group(kind=GangKind.WORKLOAD)),
            [SetGroupCondition("False", "Unschedulable", WAITING_1_OF_2)],
            id="workload-group-waiting",
        ),
        pytest.param(
            observe(
                [pod("w-0", label=42), pod("w-1", label=42)],
                [job(42, JobState.RUNNING, nodes=("node1", "node2"), kind=GangKind.WORKLOAD)],
                group(kind=GangKind.WORKLOAD, condition=("False", "Unschedulable", "m")),
            ),
            [LabelGroup(42), SetGroupCondition("True", "Scheduled", "every member is bound (Slurm job 42)")],
            id="workload-group-scheduled",
        ),
        pytest.param(
            observe(
                [pod("w-0", label=42, node="k8s-node-1", phase="Failed"), pod("w-1", label=42)],
                [job(42, JobState.RUNNING, nodes=("node1", "node2"), kind=GangKind.WORKLOAD)],
                group(
                    kind=GangKind.WORKLOAD,
                    condition=("True", "Scheduled", "every member is bound (Slurm job 42)"),
                ),
            ),
            [LabelGroup(42)],
            id="workload-condition-never-reverts",
        ),
        pytest.param(
            observe([pod("w-0")], gang=group(kind=GangKind.LWS)), [], id="lws-group-has-no-status-to-write"
        ),
    ],
)
def test_group_status(observed: GangObservation, expected: list[GangAction]) -> None:
    assert status_actions(observed) == expected


def test_lws_gang_binds_leader_to_the_first_node() -> None:
    def lws_pod(name: str, worker: int) -> PodInfo:
        raw: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": "ml",
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                "labels": {
                    "leaderworkerset.sigs.k8s.io/name": "llm",
                    "leaderworkerset.sigs.k8s.io/group-index": "0",
                    "leaderworkerset.sigs.k8s.io/worker-index": str(worker),
                    LABEL_SLURM_JOB_ID: "42",
                },
                "annotations": {"leaderworkerset.sigs.k8s.io/size": "2"},
                "finalizers": [FINALIZER],
            },
            "spec": {"schedulerName": "slurm-bridge-scheduler", "containers": []},
        }
        return PodInfo.from_api(raw)

    leader, worker = lws_pod("llm-0", 0), lws_pod("llm-0-1", 1)
    gang = GangInfo.from_lws_leader(leader)
    assert gang is not None
    members = [leader, worker]
    spec = gang_job_spec_for(gang, members, CONFIG)
    marker = GangMarker("c1", "ml", GangKind.LWS, "llm-0", leader.uid, gang_spec_digest(spec))
    running = Job(
        job_id=42, name="llm-0", state=JobState.RUNNING, nodes=("node2", "node3"), comment=marker.encode()
    )
    observed = GangObservation(
        key=gang.key,
        now=NOW,
        gang=gang,
        pods=[worker, leader],
        jobs=[running],
        slurm_to_kubernetes_nodes=NODES,
    )
    planned = plan_gang(observed, CONFIG)
    assert planned[0] == BindMembers(
        42,
        (
            MemberBinding(PodRef("llm-0", leader.uid), "k8s-node-2", "node2"),
            MemberBinding(PodRef("llm-0-1", worker.uid), "k8s-node-3", "node3"),
        ),
    )
    assert not [a for a in planned if isinstance(a, SetGroupStatus | SetGroupCondition | LabelGroup)]


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(
            observe([pod("w-0", age=timedelta(seconds=20))], gang=group(timeout=60)),
            NOW + timedelta(seconds=40),
            id="timeout-ahead",
        ),
        pytest.param(
            observe([pod("w-0", age=timedelta(seconds=90))], gang=group(timeout=60)),
            None,
            id="timeout-passed",
        ),
        pytest.param(observe([pod("w-0")]), None, id="no-timeout"),
        pytest.param(observe([pod("w-0"), pod("w-1")], gang=group(timeout=60)), None, id="enough-members"),
        pytest.param(observe([pod("w-0")], no_group=True), None, id="no-group"),
    ],
)
def test_gang_recheck_at(observed: GangObservation, expected: datetime | None) -> None:
    assert gang_recheck_at(observed, CONFIG) == expected


@pytest.mark.parametrize(
    ("jobs", "live", "held", "expected"),
    [
        pytest.param(
            [job(42, JobState.RUNNING), job(43, JobState.COMPLETED, uid=EARLIER_UID)],
            [],
            [],
            [
                CancelJob(
                    42,
                    JobOutcome.CANCEL,
                    f"orphan: gang ml/podgroup.scheduling.x-k8s.io/train (uid {GROUP_UID}) is gone",
                )
            ],
            id="gone-group-active-job-cancelled",
        ),
        pytest.param([job(42, JobState.RUNNING)], [GROUP_UID], [], [], id="live-group-kept"),
        pytest.param([job(42, JobState.RUNNING)], [], [42], [], id="job-a-live-pod-holds-kept"),
        pytest.param(
            [job(42, JobState.PENDING, submitted=NOW - timedelta(seconds=10))],
            [],
            [],
            [],
            id="young-job-spared",
        ),
        pytest.param([job(42, JobState.PENDING, submitted=None)], [], [], [], id="unknown-age-spared"),
        pytest.param(
            [job(42, JobState.RUNNING, cluster="c2")], [], [], [], id="other-clusters-job-untouched"
        ),
    ],
)
def test_gang_orphan_cleanup(
    jobs: list[Job], live: list[str], held: list[int], expected: list[CancelJob]
) -> None:
    assert plan_gang_orphan_cleanup(jobs, live, held, "c1", NOW) == expected


@pytest.mark.parametrize(
    ("label", "jobs"),
    [
        pytest.param(None, [], id="gathering"),
        pytest.param(42, [job(42, JobState.PENDING, members=64)], id="pending"),
        pytest.param(42, [job(42, JobState.CANCELLED, digest=OLD)], id="members-of-a-superseded-job"),
    ],
)
def test_planning_cost_grows_linearly_with_members(
    monkeypatch: pytest.MonkeyPatch, label: int | None, jobs: list[Job]
) -> None:
    calls: list[str] = []

    def counting(p: PodInfo, config: BridgeConfig) -> Any:
        calls.append(p.name)
        return job_spec_for(p, config)

    monkeypatch.setattr("bridge.gang_translate.job_spec_for", counting)
    members = [pod(f"w-{i}", label=label) for i in range(64)]
    plan_gang(observe(members, jobs), CONFIG)
    assert len(calls) <= 3 * (64 + 1)  # the gang translated at most three times, never once per member


def test_a_gang_bound_in_part_whose_other_nodes_left_kubernetes_is_ended_whole() -> None:
    """A bind cut short (the bridge killed between members) and the rest's node gone from Kubernetes:
    the gang would stay half started forever, so it is ended whole (a gang never runs in part)."""
    crew = [pod("w-0", node="k8s-node-1", label=42, phase="Running"), pod("w-1", label=42)]
    observed = observe(crew, [job(42, JobState.RUNNING, nodes=("node1", "node9"))])
    actions = without_status(plan_gang(observed, CONFIG))
    deletes = [a for a in actions if isinstance(a, DeleteMembers)]
    assert [ref.name for a in deletes for ref in a.pods] == ["w-0", "w-1"]
    assert deletes[0].reason is Reason.NODE_NOT_IN_KUBERNETES
    assert "no Kubernetes node: node9" in deletes[0].message
    assert not [a for a in actions if isinstance(a, SetMembersPending)]

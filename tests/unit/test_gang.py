from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.gang import (
    FailurePolicy,
    GangInfo,
    GangKey,
    GangKind,
    GroupStatus,
    OwnerRef,
    gang_key_for,
    gang_key_of,
    member_order,
    owner_of,
)
from bridge.objects import PodCondition, PodInfo

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
LWS = {"leaderworkerset.sigs.k8s.io/name": "llm", "leaderworkerset.sigs.k8s.io/group-index": "3"}
SIZE_4 = {"leaderworkerset.sigs.k8s.io/size": "4"}


def raw_pod(
    name: str = "w-0",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    scheduling_group: str | None = None,
    uid: str = UID,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulerName": "slurm-bridge-scheduler", "containers": []}
    if scheduling_group is not None:
        spec["schedulingGroup"] = {"podGroupName": scheduling_group}
    meta = {
        "name": name,
        "namespace": "ml",
        "uid": uid,
        "labels": labels or {},
        "annotations": annotations or {},
    }
    return {"metadata": meta, "spec": spec}


def key(kind: GangKind, name: str) -> GangKey:
    return GangKey(namespace="ml", kind=kind, name=name)


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(raw_pod(), None, id="plain-pod"),
        pytest.param(
            raw_pod(scheduling_group="train-0"), key(GangKind.WORKLOAD, "train-0"), id="workload-api"
        ),
        pytest.param(
            raw_pod(labels={"scheduling.x-k8s.io/pod-group": "nginx-pg"}),
            key(GangKind.COSCHEDULING, "nginx-pg"),
            id="coscheduling-label",
        ),
        pytest.param(raw_pod(labels=LWS, annotations=SIZE_4), key(GangKind.LWS, "llm-3"), id="lws-group"),
        pytest.param(
            raw_pod(labels=LWS, annotations={"leaderworkerset.sigs.k8s.io/size": "1"}),
            None,
            id="lws-group-of-one-is-a-single-pod",
        ),
        pytest.param(raw_pod(labels=LWS), None, id="lws-without-size-is-a-single-pod"),
        pytest.param(
            raw_pod(labels={"leaderworkerset.sigs.k8s.io/name": "llm"}, annotations=SIZE_4),
            None,
            id="lws-without-group-index",
        ),
        pytest.param(
            raw_pod(labels={**LWS, "leaderworkerset.sigs.k8s.io/group-index": "x"}, annotations=SIZE_4),
            None,
            id="lws-garbled-group-index",
        ),
        pytest.param(
            raw_pod(
                labels={**LWS, "scheduling.x-k8s.io/pod-group": "llm-3-abc"},
                annotations=SIZE_4,
                scheduling_group="g",
            ),
            key(GangKind.WORKLOAD, "g"),
            id="scheduling-group-beats-label-and-lws",
        ),
        pytest.param(
            raw_pod(labels={**LWS, "scheduling.x-k8s.io/pod-group": "llm-3-abc"}, annotations=SIZE_4),
            key(GangKind.COSCHEDULING, "llm-3-abc"),
            id="pod-group-label-beats-lws",
        ),
        pytest.param(
            raw_pod(labels={"jobset.sigs.k8s.io/jobset-name": "js"}), None, id="jobset-labels-form-no-gang"
        ),
        pytest.param(raw_pod(labels={"scheduling.x-k8s.io/pod-group": ""}), None, id="empty-label-ignored"),
    ],
)
def test_gang_membership_and_precedence(pod: dict[str, Any], expected: GangKey | None) -> None:
    assert gang_key_of(pod) == expected


def test_scheduling_group_is_passed_beside_pod_info() -> None:
    pod = PodInfo.from_api(raw_pod(labels={"scheduling.x-k8s.io/pod-group": "pg"}))
    assert gang_key_for(pod) == key(GangKind.COSCHEDULING, "pg")
    assert gang_key_for(pod, "train-0") == key(GangKind.WORKLOAD, "train-0")


COSCHEDULING_GROUP: dict[str, Any] = {
    "apiVersion": "scheduling.x-k8s.io/v1alpha1",
    "kind": "PodGroup",
    "metadata": {
        "name": "nginx-pg",
        "namespace": "slurm-bridge",
        "uid": UID,
        "creationTimestamp": "2026-05-01T12:00:00Z",
        "annotations": {"slinky.slurm.net/job-name": "pgReplicaset"},
        "labels": {"scheduler.slinky.slurm.net/slurm-jobid": "17"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "nginx-pg",
                "uid": UID,
                "controller": True,
            }
        ],
    },
    "spec": {"minMember": 2, "scheduleTimeoutSeconds": 60, "minResources": {"cpu": "6"}},
    "status": {
        "phase": "Running",
        "running": 2,
        "succeeded": 0,
        "failed": 0,
        "scheduleStartTime": "2026-05-01T12:00:05Z",
    },
}


def test_coscheduling_pod_group_is_parsed() -> None:
    gang = GangInfo.from_coscheduling_api(COSCHEDULING_GROUP)
    assert gang.key == GangKey(namespace="slurm-bridge", kind=GangKind.COSCHEDULING, name="nginx-pg")
    assert (gang.uid, gang.min_member, gang.schedule_timeout_seconds) == (UID, 2, 60)
    assert gang.min_resources == {"cpu": "6"}
    assert gang.annotations == {"slinky.slurm.net/job-name": "pgReplicaset"}
    assert gang.owner == OwnerRef(kind="ReplicaSet", api_group="apps", name="nginx-pg")
    assert gang.labelled_job_id == 17
    assert gang.all_or_nothing
    assert gang.status == GroupStatus(
        phase="Running",
        running=2,
        succeeded=0,
        failed=0,
        schedule_start_time=datetime(2026, 5, 1, 12, 0, 5, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("spec", "min_member", "timeout"),
    [
        pytest.param({}, 1, None, id="empty-spec"),
        pytest.param({"minMember": 0}, 1, None, id="zero-min-member-means-one"),
        pytest.param({"minMember": "3"}, 3, None, id="string-number"),
        pytest.param({"minMember": True, "scheduleTimeoutSeconds": 0}, 1, 0, id="bool-is-no-number"),
    ],
)
def test_coscheduling_defaults(spec: dict[str, Any], min_member: int, timeout: int | None) -> None:
    gang = GangInfo.from_coscheduling_api({"metadata": {"name": "g"}, "spec": spec})
    assert (gang.min_member, gang.schedule_timeout_seconds) == (min_member, timeout)
    assert gang.key.namespace == "default"
    assert gang.status == GroupStatus()


def workload_group(
    policy: dict[str, Any], conditions: list[dict[str, Any]] | None = None, *, alpha: bool = False
) -> dict[str, Any]:
    reference = {"workloadName": "train", "templateName": "workers"}
    spec: dict[str, Any] = {"schedulingPolicy": policy}
    if alpha:  # v1alpha2 named the reference differently
        spec["podGroupTemplateRef"] = {
            "workload": {"workloadName": "train", "podGroupTemplateName": "workers"}
        }
    else:
        spec["workloadRef"] = reference
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "train-workers", "namespace": "ml", "uid": UID},
        "spec": spec,
        "status": {"conditions": conditions or []},
    }


def test_workload_pod_group_is_parsed() -> None:
    condition = {
        "type": "PodGroupInitiallyScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "m",
    }
    gang = GangInfo.from_workload_api(workload_group({"gang": {"minCount": 4}}, [condition]))
    assert gang.key == key(GangKind.WORKLOAD, "train-workers")
    assert (gang.min_member, gang.all_or_nothing) == (4, True)
    assert gang.owner == OwnerRef(kind="Workload", api_group="scheduling.k8s.io", name="train")
    assert gang.scheduled_condition == PodCondition(
        type="PodGroupInitiallyScheduled", status="False", reason="Unschedulable", message="m"
    )


def test_workload_pod_group_of_v1alpha2_names_its_owner_too() -> None:
    gang = GangInfo.from_workload_api(workload_group({"gang": {"minCount": 2}}, alpha=True))
    assert gang.owner == OwnerRef(kind="Workload", api_group="scheduling.k8s.io", name="train")


def test_workload_basic_policy_is_no_gang() -> None:
    gang = GangInfo.from_workload_api(workload_group({"basic": {}}))
    assert not gang.all_or_nothing
    assert gang.scheduled_condition is None


def test_lws_group_from_its_leader() -> None:
    leader = PodInfo.from_api(
        raw_pod("llm-3", labels={**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "0"}, annotations=SIZE_4)
    )
    gang = GangInfo.from_lws_leader(leader)
    assert gang is not None
    assert gang.key == key(GangKind.LWS, "llm-3")
    assert (gang.uid, gang.min_member) == (UID, 4)
    assert gang.owner == OwnerRef(kind="LeaderWorkerSet", api_group="leaderworkerset.x-k8s.io", name="llm")


@pytest.mark.parametrize(
    ("labels", "annotations"),
    [
        pytest.param({**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "1"}, SIZE_4, id="a-worker"),
        pytest.param({**LWS, "leaderworkerset.sigs.k8s.io/worker-index": "0"}, {}, id="no-size"),
        pytest.param({}, SIZE_4, id="no-lws-labels"),
    ],
)
def test_lws_non_leaders_make_no_group(labels: dict[str, str], annotations: dict[str, str]) -> None:
    assert GangInfo.from_lws_leader(PodInfo.from_api(raw_pod(labels=labels, annotations=annotations))) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "ml/podgroup.scheduling.x-k8s.io/pg", key(GangKind.COSCHEDULING, "pg"), id="coscheduling"
        ),
        pytest.param("ml/podgroup.scheduling.k8s.io/pg", key(GangKind.WORKLOAD, "pg"), id="workload"),
        pytest.param("ml/group.leaderworkerset.x-k8s.io/llm-0", key(GangKind.LWS, "llm-0"), id="lws"),
    ],
)
def test_gang_key_round_trips(text: str, expected: GangKey) -> None:
    assert GangKey.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "ml/pg",
        "ml/podgroup/pg",
        "ml/podgroup.scheduling.x-k8s.io/pg/x",
        "/podgroup.scheduling.x-k8s.io/pg",
        "",
    ],
    ids=["two-parts", "unknown-kind", "four-parts", "empty-namespace", "empty"],
)
def test_gang_key_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a gang key"):
        GangKey.parse(text)


def pod_named(
    name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> PodInfo:
    return PodInfo.from_api(raw_pod(name, labels=labels, annotations=annotations))


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param(
            [pod_named("w-10"), pod_named("w-2"), pod_named("w-1")],
            ["w-1", "w-2", "w-10"],
            id="natural-names",
        ),
        pytest.param(
            [
                pod_named("llm-3-2", {"leaderworkerset.sigs.k8s.io/worker-index": "2"}),
                pod_named("llm-3", {"leaderworkerset.sigs.k8s.io/worker-index": "0"}),
                pod_named("llm-3-1", {"leaderworkerset.sigs.k8s.io/worker-index": "1"}),
            ],
            ["llm-3", "llm-3-1", "llm-3-2"],
            id="lws-leader-first",
        ),
        pytest.param(
            [
                pod_named("job-abcde", annotations={"batch.kubernetes.io/job-completion-index": "1"}),
                pod_named("job-zzzzz", annotations={"batch.kubernetes.io/job-completion-index": "0"}),
                pod_named("aaa"),
            ],
            ["job-zzzzz", "job-abcde", "aaa"],
            id="completion-index-then-unindexed",
        ),
    ],
)
def test_member_order(pods: list[PodInfo], expected: list[str]) -> None:
    assert [p.name for p in member_order(pods)] == expected


@pytest.mark.parametrize(
    ("group_owner", "labels", "expected"),
    [
        pytest.param(
            OwnerRef(kind="Workload", api_group="scheduling.k8s.io", name="w"),
            {"jobset.sigs.k8s.io/jobset-name": "js"},
            OwnerRef(kind="Workload", api_group="scheduling.k8s.io", name="w"),
            id="group-reference-first",
        ),
        pytest.param(
            None,
            {"jobset.sigs.k8s.io/jobset-name": "js"},
            OwnerRef(kind="JobSet", api_group="jobset.x-k8s.io", name="js"),
            id="jobset-label",
        ),
        pytest.param(
            None,
            {"leaderworkerset.sigs.k8s.io/name": "llm"},
            OwnerRef(kind="LeaderWorkerSet", api_group="leaderworkerset.x-k8s.io", name="llm"),
            id="lws-label",
        ),
        pytest.param(None, {}, None, id="none"),
    ],
)
def test_owner_of(group_owner: OwnerRef | None, labels: dict[str, str], expected: OwnerRef | None) -> None:
    gang = GangInfo(key=key(GangKind.COSCHEDULING, "pg"), owner=group_owner)
    assert owner_of(gang, [pod_named("w-0", labels)]) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, FailurePolicy.END_GANG, id="default"),
        pytest.param("EndGang", FailurePolicy.END_GANG, id="end-gang"),
        pytest.param(" continue ", FailurePolicy.CONTINUE, id="case-and-space"),
        pytest.param("sometimes", None, id="invalid"),
    ],
)
def test_failure_policy(value: str | None, expected: FailurePolicy | None) -> None:
    annotations = {} if value is None else {"scheduler.slinky.slurm.net/gang-failure-policy": value}
    gang = GangInfo(key=key(GangKind.COSCHEDULING, "pg"), annotations=annotations)
    assert gang.failure_policy is expected

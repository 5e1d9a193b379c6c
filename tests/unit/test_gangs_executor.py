"""The gang executor (controller/gangs.py) against in-memory fakes: what it writes, in what order."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import gang_key_of
from bridge.wellknown import ANNOTATION_SLURM_NODE, FINALIZER, LABEL_SLURM_JOB_ID
from controller.duties import Duties
from controller.gangs import GANG_INDEX, GangMetrics, GangReconciler
from controller.runtime import RetryLater
from kube_client import (
    COSCHEDULING_POD_GROUPS,
    WORKLOAD_POD_GROUPS,
    KubeObject,
    NotFound,
    PatchType,
    ResourceRef,
    serves,
)
from slurm_client import (
    CancelOutcome,
    InvalidRequest,
    Job,
    JobSpec,
    JobState,
    Partition,
    SlurmTransportError,
    SubmitResult,
)
from tests.fakes.slurm import FakeJobIndex

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
KEY = "ml/podgroup.scheduling.x-k8s.io/train"

CONFIG = BridgeConfig(cluster_id="c1", namespaces=("ml",))


def raw_pod(
    name: str, *, phase: str = "Pending", node: str | None = None, job_id: int | None = None
) -> KubeObject:
    labels = {"scheduling.x-k8s.io/pod-group": "train"}
    if job_id is not None:
        labels[LABEL_SLURM_JOB_ID] = str(job_id)
    pod: KubeObject = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "creationTimestamp": (NOW - timedelta(seconds=30)).isoformat(),
            "labels": labels,
            "annotations": {},
            "finalizers": [FINALIZER],
        },
        "spec": {
            "schedulerName": CONFIG.scheduler_name,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        },
        "status": {"phase": phase},
    }
    if node is not None:
        pod["spec"]["nodeName"] = node
        pod["metadata"]["annotations"][ANNOTATION_SLURM_NODE] = node
    return pod


def raw_group(min_member: int = 2) -> KubeObject:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": "train", "namespace": "ml", "uid": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        "spec": {"minMember": min_member},
    }


def raw_node(name: str) -> KubeObject:
    return {"metadata": {"name": name, "labels": {}}}


class FakeInformer:
    def __init__(self, objects: Iterable[KubeObject] = ()) -> None:
        self.cache = {
            f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".lstrip("/"): o for o in objects
        }
        self.has_synced = True

    def get(self, key: str) -> KubeObject | None:
        return self.cache.get(key)

    def keys(self) -> list[str]:
        return list(self.cache)

    def objects(self) -> list[KubeObject]:
        return list(self.cache.values())

    def by_index(self, index_name: str, value: str) -> list[KubeObject]:
        assert index_name == GANG_INDEX
        return [o for o in self.cache.values() if str(gang_key_of(o)) == value]


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.served: dict[str, list[str]] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        if method == "POST":  # an eviction
            self.calls.append(("evict", path.rsplit("/", 2)[-2]))
            return {}
        if path not in self.served:
            raise NotFound(404, "NotFound", path)
        return {"resources": [{"name": n} for n in self.served[path]]}

    async def get(self, ref: ResourceRef, name: str, *, namespace: str | None = None) -> KubeObject:
        raise NotFound(404, "NotFound", name)

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
    ) -> KubeObject:
        self.calls.append(("patch", ref.plural, name, subresource, copy.deepcopy(patch)))
        return {}

    async def bind_pod(
        self,
        namespace: str,
        name: str,
        node_name: str,
        *,
        uid: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self.calls.append(("bind", name, node_name, (annotations or {})[ANNOTATION_SLURM_NODE]))

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> bool:
        self.calls.append(("delete", name))
        return True

    async def set_pod_condition(
        self,
        namespace: str,
        name: str,
        *,
        condition_type: str,
        status: str,
        reason: str = "",
        message: str = "",
        current: Mapping[str, Any] | None = None,
    ) -> KubeObject | None:
        self.calls.append(("condition", name, condition_type, status, reason))
        return None

    async def remove_finalizer(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        *,
        namespace: str | None = None,
        current: Mapping[str, Any] | None = None,
    ) -> bool:
        self.calls.append(("unfinalize", name))
        return True

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


class FakeSlurm:
    def __init__(self, *, fail: Exception | None = None) -> None:
        self.submitted: list[JobSpec] = []
        self.cancelled: list[tuple[Any, ...]] = []
        self.exit_codes: list[int] = []
        self.fail = fail

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        if self.fail is not None:
            raise self.fail
        self.submitted.append(spec)
        return SubmitResult(job_id=100 + len(self.submitted))

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome:
        self.cancelled.append((job_id, signal) if signal is not None else (job_id,))
        return CancelOutcome.SIGNALLED

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome:
        self.cancelled.append((job_id, "USR1" if exit_code == 0 else "USR2"))
        self.exit_codes.append(exit_code)
        return CancelOutcome.SIGNALLED

    async def list_partitions(self) -> tuple[Partition, ...]:
        return (Partition(name="slurm-bridge", total_nodes=3, default=True),)


class FakeEvents:
    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []

    async def normal(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        self.said.append(("Normal", involved["kind"], reason))
        return None

    async def warning(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None:
        self.said.append(("Warning", involved["kind"], reason))
        return None


class Harness:
    def __init__(
        self,
        pods: list[KubeObject],
        groups: list[KubeObject] | None,
        *,
        slurm: FakeSlurm | None = None,
        components: frozenset[str] = frozenset({"scheduler", "controller"}),
        jobs: FakeJobIndex | None = None,
    ):
        self.kube = FakeKube()
        self.slurm = slurm or FakeSlurm()
        self.events = FakeEvents()
        self.pods = FakeInformer(pods)
        self.groups = FakeInformer(groups or [])
        self.jobs = jobs if jobs is not None else FakeJobIndex("c1")
        self.reconciler = GangReconciler(
            CONFIG,
            kube=self.kube,
            slurm=self.slurm,
            pods=self.pods,
            pod_groups=self.groups if groups is not None else None,
            workload_groups=None,
            nodes=FakeInformer([raw_node(f"node{i}") for i in (1, 2, 3)]),
            jobs=self.jobs,
            events=self.events,
            components=components,
            metrics=GangMetrics(None),
            now=lambda: NOW,
        )

    def slurm_says(self, *jobs: Job) -> None:
        """A poll that started after every submit: the provisional jobs give way to these."""
        self.jobs.jobs = list(jobs)

    def running(self, spec: JobSpec, job_id: int = 101, nodes: tuple[str, ...] = ("node1", "node2")) -> Job:
        return Job(job_id=job_id, name=spec.name, state=JobState.RUNNING, comment=spec.comment, nodes=nodes)


async def test_a_complete_gang_is_submitted_once_as_one_job() -> None:
    h = Harness([raw_pod("w-0"), raw_pod("w-1")], [raw_group()])
    await h.reconciler.reconcile(KEY)
    await h.reconciler.reconcile(KEY)  # the provisional job is seen: no second submit
    assert len(h.slurm.submitted) == 1
    spec = h.slurm.submitted[0]
    assert (spec.min_nodes, spec.max_nodes) == (2, 2)
    status = [c for c in h.kube.of("patch") if c[3] == "status"]
    assert status[0][4] == {
        "status": {
            "phase": "Scheduling",
            "running": 0,
            "succeeded": 0,
            "failed": 0,
            "scheduleStartTime": "2026-05-01T12:00:00Z",
        }
    }


async def test_a_running_job_binds_every_member_to_a_distinct_node_and_writes_running() -> None:
    h = Harness([raw_pod("w-0", job_id=101), raw_pod("w-1", job_id=101)], [raw_group()])
    await h.reconciler.reconcile(KEY)
    spec = h.slurm.submitted[0] if h.slurm.submitted else None
    assert spec is not None
    h.slurm_says(h.running(spec))
    h.kube.calls.clear()
    await h.reconciler.reconcile(KEY)
    assert h.kube.of("bind") == [("bind", "w-0", "node1", "node1"), ("bind", "w-1", "node2", "node2")]
    # the cache still shows them unbound and Pending, so the status says Running with 0 running pods
    h.pods.cache.update(
        {
            "ml/w-0": raw_pod("w-0", phase="Running", node="node1", job_id=101),
            "ml/w-1": raw_pod("w-1", phase="Running", node="node2", job_id=101),
        }
    )
    h.kube.calls.clear()
    await h.reconciler.reconcile(KEY)
    status = [c[4]["status"] for c in h.kube.of("patch") if c[3] == "status"]
    assert status == [{"phase": "Running", "running": 2, "succeeded": 0, "failed": 0}]
    assert not h.kube.of("bind")


async def test_a_failed_member_ends_the_gang() -> None:
    h = Harness([raw_pod("w-0"), raw_pod("w-1")], [raw_group()])
    await h.reconciler.reconcile(KEY)
    job = h.running(h.slurm.submitted[0])
    h.slurm_says(job)
    h.pods.cache.update(
        {
            "ml/w-0": raw_pod("w-0", phase="Failed", node="node1", job_id=101),
            "ml/w-1": raw_pod("w-1", phase="Running", node="node2", job_id=101),
        }
    )
    h.kube.calls.clear()
    await h.reconciler.reconcile(KEY)
    assert h.kube.of("delete") == [("delete", "w-1")]
    assert ("condition", "w-1", "DisruptionTarget", "True", "GangMemberFailed") in h.kube.calls
    assert h.slurm.cancelled == []  # w-1 may still run on its node: released at terminal
    h.pods.cache["ml/w-1"] = raw_pod("w-1", phase="Failed", node="node2", job_id=101)
    await h.reconciler.reconcile(KEY)
    assert h.slurm.cancelled == [(101, "USR2")]  # FAILURE, through the batch shell
    assert {c[1] for c in h.kube.of("unfinalize")} == {"w-0", "w-1"}
    assert ("Warning", "PodGroup", "GangMemberFailed") in h.events.said


@pytest.mark.parametrize(
    ("components", "submitted", "failed"),
    [
        # one process: every event once
        ({"scheduler", "controller"}, [("Normal", "PodGroup", "SlurmJobSubmitted")], ["GangMemberFailed"]),
        # apart: the scheduler says what it submitted, the controller what ended the gang
        ({"scheduler"}, [("Normal", "PodGroup", "SlurmJobSubmitted")], []),
        ({"controller"}, [], ["GangMemberFailed"]),
    ],
)
async def test_gang_events_are_split_by_reason_between_scheduler_and_controller(
    components: set[str], submitted: list[tuple[str, str, str]], failed: list[str]
) -> None:
    h = Harness([raw_pod("w-0"), raw_pod("w-1")], [raw_group()])
    await h.reconciler.reconcile(KEY)  # a one-process bridge submitted the job
    spec = h.slurm.submitted[0]
    h.slurm_says(Job(job_id=101, name=spec.name, state=JobState.PENDING, comment=spec.comment))
    apart = Harness(
        [raw_pod("w-0"), raw_pod("w-1")], [raw_group()], components=frozenset(components), jobs=h.jobs
    )
    await apart.reconciler.reconcile(KEY)  # the job is seen: "holds the places of 2 members"
    assert [e for e in apart.events.said if e[2] == "SlurmJobSubmitted"] == submitted
    h.slurm_says(h.running(spec))
    apart.pods.cache.update(
        {
            "ml/w-0": raw_pod("w-0", phase="Failed", node="node1", job_id=101),
            "ml/w-1": raw_pod("w-1", phase="Running", node="node2", job_id=101),
        }
    )
    apart.events.said.clear()
    await apart.reconciler.reconcile(KEY)
    assert [e[2] for e in apart.events.said if e[2].startswith("Gang")] == failed


@pytest.mark.parametrize(
    ("components", "reason", "records"),
    [
        ({"scheduler"}, "SlurmJobSubmitted", True),
        ({"controller"}, "SlurmJobSubmitted", False),
        ({"scheduler"}, "GangWaitingForMembers", True),
        ({"controller"}, "GangScheduleTimeout", False),
        ({"scheduler"}, "GangLargerThanPartition", True),
        ({"scheduler"}, "GangMemberFailed", False),
        ({"controller"}, "GangMemberFailed", True),
        ({"controller"}, "GangMemberDeleted", True),
        ({"controller"}, "GangMemberLost", True),
        ({"controller"}, "GangGroupDeleted", True),
        ({"controller"}, "GangAllocationTooSmall", True),
        ({"controller"}, "SlurmJobReleased", True),
        ({"scheduler"}, "SlurmJobReleased", False),
        ({"controller"}, "Scheduled", True),
        ({"scheduler", "controller"}, "GangMemberFailed", True),
        ({"scheduler", "controller"}, "GangWaitingForMembers", True),
        (set(), "GangWaitingForMembers", False),
    ],
)
def test_each_gang_event_reason_has_one_recorder(components: set[str], reason: str, records: bool) -> None:
    assert Duties.of(components).records(reason) is records


@pytest.mark.parametrize(
    ("pods", "expected_reason"),
    [
        ([raw_pod("w-0")], "GangWaitingForMembers"),
        ([raw_pod("w-0"), raw_pod("w-1"), raw_pod("w-2"), raw_pod("w-3")], "GangLargerThanPartition"),
    ],
    ids=["too-few-members", "larger-than-partition"],
)
async def test_nothing_is_submitted_for_a_gang_that_cannot_run(
    pods: list[KubeObject], expected_reason: str
) -> None:
    h = Harness(pods, [raw_group()])
    await h.reconciler.reconcile(KEY)
    assert h.slurm.submitted == []
    assert {c[4] for c in h.kube.of("condition")} == {expected_reason}


async def test_a_missing_group_api_leaves_the_members_waiting() -> None:
    h = Harness([raw_pod("w-0"), raw_pod("w-1")], None)
    result = await h.reconciler.reconcile(KEY)
    assert h.slurm.submitted == []
    assert {c[4] for c in h.kube.of("condition")} == {"GangGroupNotFound"}
    assert result.requeue_after is not None
    assert await h.reconciler.clean_orphans() == 0


async def test_an_ambiguous_submit_failure_holds_the_next_submit() -> None:
    h = Harness(
        [raw_pod("w-0"), raw_pod("w-1")],
        [raw_group()],
        slurm=FakeSlurm(fail=SlurmTransportError("reset", sent=True)),
    )
    with pytest.raises(RetryLater, match="cannot submit to Slurm: reset"):
        await h.reconciler.reconcile(KEY)
    assert {c[4] for c in h.kube.of("condition")} == {"SlurmUnavailable"}
    h.slurm.fail = None
    with pytest.raises(RetryLater):
        await h.reconciler.reconcile(KEY)
    assert h.slurm.submitted == []


async def test_a_gang_job_slurm_refuses_is_said_on_the_members_and_in_a_group_warning() -> None:
    h = Harness(
        [raw_pod("w-0"), raw_pod("w-1")],
        [raw_group()],
        slurm=FakeSlurm(fail=InvalidRequest("Invalid partition name specified", status=422)),
    )
    with pytest.raises(RetryLater, match="Slurm refused"):
        await h.reconciler.reconcile(KEY)
    assert {c[4] for c in h.kube.of("condition")} == {"InvalidSlurmJobOptions"}
    assert [(e[0], e[1].split("/")[0], e[2]) for e in h.events.said] == [
        ("Warning", "PodGroup", "InvalidSlurmJobOptions")
    ]


async def test_orphan_gang_jobs_are_cancelled_once_their_group_is_gone() -> None:
    h = Harness([raw_pod("w-0"), raw_pod("w-1")], [raw_group()])
    await h.reconciler.reconcile(KEY)
    spec = h.slurm.submitted[0]
    old = Job(
        job_id=101,
        name=spec.name,
        state=JobState.PENDING,
        comment=spec.comment,
        submit_time=NOW - timedelta(minutes=5),
    )
    h.slurm_says(old)
    assert await h.reconciler.clean_orphans() == 0
    h.groups.cache.clear()  # the group and its pods are gone
    h.pods.cache.clear()
    assert await h.reconciler.clean_orphans() == 1
    assert h.slurm.cancelled == [(101,)]


@pytest.mark.parametrize(
    ("served", "ref", "expected"),
    [
        (
            {"/apis/scheduling.x-k8s.io/v1alpha1": ["podgroups", "podgroups/status"]},
            COSCHEDULING_POD_GROUPS,
            True,
        ),
        ({}, COSCHEDULING_POD_GROUPS, False),
        ({"/apis/scheduling.k8s.io/v1beta1": ["workloads"]}, WORKLOAD_POD_GROUPS, False),
    ],
    ids=["served", "group-missing", "resource-missing"],
)
async def test_discovery_tells_whether_a_group_api_is_served(
    served: dict[str, list[str]], ref: ResourceRef, expected: bool
) -> None:
    kube = FakeKube()
    kube.served = served
    assert await serves(kube, ref) is expected

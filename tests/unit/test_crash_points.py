"""The test-only kill points (controller/crash_points.py): how BRIDGE_TEST_CRASH_AT is read, that an armed
point dies exactly on its nth reach and nowhere else, and that the executors reach each point between
the writes it names (what a kill -9 there leaves behind)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest

from bridge.config import ENV_PREFIX, environment_overrides
from controller.crash_points import (
    CRASH_VARIABLE,
    KILL_POINTS,
    KILLED_EXIT_CODE,
    NO_CRASH,
    CrashPoints,
    Scope,
    Step,
)
from controller.nodesets import NODESET_INDEX, NodeSetReconciler, nodeset_of_pod
from controller.pods import PodMetrics, PodReconciler
from slurm_client import JobState, Partition
from tests.fakes.kube import FakeCache, FakeEvents, FakeKube
from tests.fakes.slurm import FakeJobIndex, FakeSlurm
from tests.unit.test_nodesets_executor import DECLARED, OURS, node, nodeset, slurmd_pod
from tests.unit.test_pods_executor import BOTH, CONFIG, KEY, job, raw_pod


class Killed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def die(code: int) -> NoReturn:
    raise Killed(code)


def armed(point: str, nth: int = 1) -> CrashPoints:
    return CrashPoints(point, nth, die=die)


# --- reading the variable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "point", "nth"),
    [
        (None, None, 1),
        ("", None, 1),
        ("  ", None, 1),
        ("pod.after-submit", "pod.after-submit", 1),
        ("gang.after-bind:3", "gang.after-bind", 3),
        ("nodeset.after-drain:1", "nodeset.after-drain", 1),
    ],
    ids=["unset", "empty", "blank", "a point", "the nth reach", "an explicit first"],
)
def test_the_variable_arms_one_point(raw: str | None, point: str | None, nth: int) -> None:
    crash = CrashPoints.from_environment({} if raw is None else {CRASH_VARIABLE: raw})
    assert (crash.point, crash.nth) == (point, nth)


@pytest.mark.parametrize(
    "raw",
    ["pod.after-sumbit", "after-submit", "nodeset.after-submit", "pod.after-submit:0", "pod.after-submit:x"],
    ids=["a typo", "no scope", "a step of another scope", "a zero count", "not a number"],
)
def test_a_bad_value_refuses_to_start(raw: str) -> None:
    with pytest.raises(ValueError, match=CRASH_VARIABLE):
        CrashPoints.from_environment({CRASH_VARIABLE: raw})


def test_the_variable_is_not_read_as_a_configuration_override() -> None:
    assert not CRASH_VARIABLE.startswith(ENV_PREFIX)
    assert environment_overrides({CRASH_VARIABLE: "pod.after-submit"}) == {}


def test_there_are_at_least_twenty_named_points() -> None:
    assert len(KILL_POINTS) >= 20
    assert {"pod.before-submit", "gang.after-bind", "nodeset.after-pod-delete"} <= KILL_POINTS


# --- reaching -----------------------------------------------------------------------------------------


def test_disarmed_never_dies() -> None:
    crash = CrashPoints(die=die)
    for point in KILL_POINTS:
        scope, _, step = point.partition(".")
        crash.reach(Scope(scope), Step(step))
    NO_CRASH.reach(Scope.POD, Step.BEFORE_SUBMIT)


def test_armed_dies_on_the_nth_reach_of_its_point_only() -> None:
    crash = armed("gang.after-bind", 3)
    crash.reach(Scope.POD, Step.AFTER_BIND)  # same step, other scope
    crash.reach(Scope.GANG, Step.BEFORE_BIND)
    crash.reach(Scope.GANG, Step.AFTER_BIND)
    crash.reach(Scope.GANG, Step.AFTER_BIND)
    with pytest.raises(Killed) as killed:
        crash.reach(Scope.GANG, Step.AFTER_BIND)
    assert killed.value.code == KILLED_EXIT_CODE == 137


# --- where the executors reach them --------------------------------------------------------------------


@dataclass
class PodCase:
    id: str
    point: str
    pod: dict[str, Any]
    jobs: list[Any] = field(default_factory=list)
    kube: list[str] = field(default_factory=list)  # the kinds of Kubernetes writes done before dying
    submitted: int = 0
    cancelled: int = 0


POD_CASES = [
    PodCase(
        "before the submit: the finalizer only", "pod.before-submit", raw_pod(finalizer=False), kube=["patch"]
    ),
    PodCase(
        "after the submit: a job, a pod without its id",
        "pod.after-submit",
        raw_pod(finalizer=False),
        kube=["patch"],
        submitted=1,
    ),
    PodCase("before the first patch: nothing", "pod.before-prepare", raw_pod(finalizer=False)),
    PodCase(
        "after the first patch: the finalizer, no job",
        "pod.after-prepare",
        raw_pod(finalizer=False),
        kube=["patch"],
    ),
    PodCase(
        "before the bind: nothing written",
        "pod.before-bind",
        raw_pod(job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=True)],
    ),
    PodCase(
        "after the bind",
        "pod.after-bind",
        raw_pod(job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=True)],
        ["bind"],
    ),
    PodCase(
        "before ending the job of a finished pod",
        "pod.before-end-job",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=True)],
    ),
    PodCase(
        "after ending it: the finalizer still on",
        "pod.after-end-job",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.RUNNING, nodes=("node1",), batch=True)],
        cancelled=1,
    ),
    PodCase(
        "before the release of a pod whose job ended",
        "pod.before-release",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.COMPLETED, nodes=("node1",), batch=True)],
    ),
    PodCase(
        "after the release",
        "pod.after-release",
        raw_pod(phase="Succeeded", node="node1", job_id=7),
        [job(JobState.COMPLETED, nodes=("node1",), batch=True)],
        ["unfinalize"],
    ),
    PodCase(
        "before deleting the pod of a cancelled job",
        "pod.before-delete",
        raw_pod(phase="Running", node="node1", job_id=7),
        [job(JobState.CANCELLED, nodes=("node1",), batch=True)],
    ),
    PodCase(
        "between DisruptionTarget and the delete",
        "pod.after-disruption-condition",
        raw_pod(phase="Running", node="node1", job_id=7),
        [job(JobState.CANCELLED, nodes=("node1",), batch=True)],
        ["condition"],
    ),
    PodCase(
        "after the delete",
        "pod.after-delete",
        raw_pod(phase="Running", node="node1", job_id=7),
        [job(JobState.CANCELLED, nodes=("node1",), batch=True)],
        ["condition", "delete-pod"],
    ),
]


@pytest.mark.parametrize("case", POD_CASES, ids=[c.id for c in POD_CASES])
async def test_the_pod_executor_dies_between_the_writes_its_point_names(case: PodCase) -> None:
    kube, slurm = FakeKube(), FakeSlurm()
    reconciler = PodReconciler(
        CONFIG,
        kube=kube,
        slurm=slurm,
        pods=FakeCache([case.pod]),
        nodes=FakeCache([{"metadata": {"name": "node1", "labels": {}}}]),
        jobs=FakeJobIndex("c1", case.jobs),
        events=FakeEvents(),
        components=BOTH,
        metrics=PodMetrics(None),
        crash=armed(case.point),
    )
    with pytest.raises(Killed):
        await reconciler.reconcile(KEY)
    assert [c[0] for c in kube.calls if c[0] != "pending"] == case.kube
    assert len(slurm.submitted) == case.submitted
    assert len(slurm.cancelled) == case.cancelled


@pytest.mark.parametrize(
    ("point", "cancelled"),
    [("pod.before-orphan-cancel", []), ("pod.after-orphan-cancel", [(7, None)])],
    ids=["before", "after"],
)
async def test_the_orphan_sweep_dies_around_its_cancel(point: str, cancelled: list[tuple[int, None]]) -> None:
    from datetime import UTC, datetime, timedelta

    old = job(JobState.PENDING).model_copy(update={"submit_time": datetime.now(UTC) - timedelta(hours=1)})
    slurm = FakeSlurm()
    reconciler = PodReconciler(
        CONFIG,
        kube=FakeKube(),
        slurm=slurm,
        pods=FakeCache(),
        nodes=FakeCache(),
        jobs=FakeJobIndex("c1", [old]),
        events=FakeEvents(),
        components=BOTH,
        metrics=PodMetrics(None),
        crash=armed(point),
    )
    with pytest.raises(Killed):
        await reconciler.clean_orphans()
    assert slurm.cancelled == cancelled


@pytest.mark.parametrize(
    ("point", "replicas", "pods", "nodes", "deleted", "updates"),
    [
        ("nodeset.before-create", 1, [], [], [], []),
        ("nodeset.after-create", 1, [], [], ["ns-0"], []),
        ("nodeset.before-drain", 1, [0, 1], [node(0), node(1)], [], []),
        ("nodeset.after-drain", 1, [0, 1], [node(0), node(1)], [], [("ns-1", "DRAIN")]),
        ("nodeset.before-pod-delete", 1, [0, 1], [node(0), node(1, drain=OURS)], [], []),
        ("nodeset.after-pod-delete", 1, [0, 1], [node(0), node(1, drain=OURS)], ["ns-1"], []),
        ("nodeset.before-resume", 2, [0, 1], [node(0), node(1, drain=OURS)], [], []),
        ("nodeset.after-resume", 2, [0, 1], [node(0), node(1, drain=OURS)], [], [("ns-1", "RESUME")]),
        ("nodeset.before-retire", 1, [0], [node(0), node(1, drain=OURS)], [], []),
        ("nodeset.after-retire", 1, [0], [node(0), node(1, drain=OURS)], [], [("ns-1", "FUTURE")]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_the_nodeset_executor_dies_between_its_writes(
    point: str,
    replicas: int,
    pods: list[int],
    nodes: list[Any],
    deleted: list[str],
    updates: list[tuple[str, str]],
) -> None:
    slurm = FakeSlurm(partitions=[Partition(name="nodeset", nodes=DECLARED)], nodes=nodes)
    kube = FakeKube()
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=slurm,
        nodesets=FakeCache([nodeset(replicas)]),
        pods=FakeCache([slurmd_pod(i) for i in pods], indexes={NODESET_INDEX: nodeset_of_pod}),
        events=FakeEvents(),
        crash=armed(point),
    )
    with pytest.raises(Killed):
        await reconciler.reconcile("ops/ns")
    assert [c[2] for c in kube.calls if c[0] in ("create", "delete")] == deleted
    assert slurm.node_updates == updates
    assert not [c for c in kube.calls if c[0] == "patch"]  # no status written after the kill

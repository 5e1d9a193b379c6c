"""The NodeSet executor (controller/nodesets.py) against the in-memory fakes: for a NodeSet, its slurmd pods
and Slurm's view of its nodes, what it writes to Kubernetes and Slurm and what it leaves alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.wellknown import ANNOTATION_PARTITION, LABEL_APP_INSTANCE, LABEL_APP_NAME, SLURMD_APP
from controller.nodeset_plan import drain_reason
from controller.nodesets import (
    DEFAULT_DRAIN_GRACE_SECONDS,
    NODESET_INDEX,
    NodeSetReconciler,
    drain_hook,
    nodeset_of_pod,
    pod_for,
)
from controller.ports import SeenSlurmNodes
from kube_client import KubeObject
from slurm_client import (
    Job,
    JobList,
    JobState,
    Node,
    NodeState,
    Partition,
    SlurmApiError,
    SlurmTransportError,
)
from tests.fakes.kube import FakeCache, FakeEvents, FakeKube
from tests.fakes.slurm import FakeSlurm

NODESET_UID = "5a6e3f3c-5a2d-4b8f-9d0a-6c9d3a1f2b11"
KEY = "ops/ns"
DECLARED = tuple(f"ns-{i}" for i in range(4))
OURS = drain_reason("ops", "ns")


def nodeset(replicas: int) -> KubeObject:
    return {
        "apiVersion": "slinky.slurm.net/v1beta1",
        "kind": "NodeSet",
        "metadata": {
            "name": "ns",
            "namespace": "ops",
            "uid": NODESET_UID,
            "generation": 3,
            "annotations": {ANNOTATION_PARTITION: "nodeset"},
        },
        "spec": {"replicas": replicas},
    }


def slurmd_pod(i: int, *, owner: str = NODESET_UID) -> KubeObject:
    return {
        "kind": "Pod",
        "metadata": {
            "name": f"ns-{i}",
            "namespace": "ops",
            "uid": f"uid-{i}",
            "labels": {LABEL_APP_NAME: SLURMD_APP, LABEL_APP_INSTANCE: "ns"},
            "ownerReferences": [{"uid": owner, "controller": True, "kind": "NodeSet", "name": "ns"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def node(i: int, state: NodeState = NodeState.IDLE, *, drain: str | None = None, cpus: int = 0) -> Node:
    flags = frozenset({"DRAIN"}) if drain is not None else frozenset()
    return Node(
        name=f"ns-{i}", state=state, state_flags=flags, reason=drain, cpus_total=4, cpus_allocated=cpus
    )


@dataclass
class Case:
    id: str
    replicas: int
    pods: list[int]
    nodes: list[Node]
    kube: list[tuple[Any, ...]] = field(default_factory=list)  # pod creates/deletes, in order
    slurm: list[tuple[str, str | None]] = field(default_factory=list)  # node updates, in order
    condition: tuple[str, str] = ("True", "Scaled")
    events: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    partition: bool = True
    slurm_down: bool = False
    refuse_update: bool = False
    foreign_pod: bool = False


CASES = [
    Case(
        "scale out: the lowest free ordinals",
        2,
        [],
        [],
        kube=[("create", "pods", "ns-0"), ("create", "pods", "ns-1")],
        condition=("False", "ScalingOut"),
        events=["CreatedPod", "CreatedPod"],
    ),
    Case("steady: nothing to do", 1, [0], [node(0)]),
    Case(
        "scale in: drain the idle node first, delete nothing yet",
        1,
        [0, 1],
        [node(0, NodeState.ALLOCATED, cpus=4), node(1)],
        slurm=[("ns-1", "DRAIN")],
        condition=("False", "Draining"),
        events=["Draining"],
    ),
    Case(
        "scale in: a drained idle node loses its pod, then returns to FUTURE",
        1,
        [0, 1],
        [node(0), node(1, drain=OURS)],
        kube=[("delete", "pods", "ns-1", "uid-1")],
        condition=("False", "ScalingIn"),
        events=["DeletedPod"],
    ),
    Case(
        "scale in waits on a running job: nothing deleted, the job named",
        1,
        [0, 1],
        [node(0), node(1, NodeState.ALLOCATED, drain=OURS, cpus=4)],
        jobs=[Job(job_id=42, name="j", state=JobState.RUNNING, nodes=("ns-1",))],
        condition=("False", "Draining"),
    ),
    Case(
        "Slurm unreachable: nothing created or deleted",
        0,
        [0],
        [node(0)],
        slurm_down=True,
        condition=("False", "SlurmUnavailable"),
        events=["SlurmUnavailable"],
    ),
    Case(
        "unknown partition: nothing created or deleted",
        0,
        [0],
        [node(0)],
        partition=False,
        condition=("False", "UnknownPartition"),
        events=["UnknownPartition"],
    ),
    Case(
        "a refused drain stops the plan: nothing deleted",
        0,
        [0],
        [node(0)],
        refuse_update=True,
        condition=("False", "DrainRefused"),
        events=["DrainRefused"],
    ),
    Case(
        "a node someone else drained is left alone",
        0,
        [0],
        [node(0, drain="maintenance by ops")],
        condition=("False", "DrainedByOthers"),
        events=["DrainedByOthers"],
    ),
    Case(
        "a node of another partition named like the set is never drained: only its own pod goes",
        0,
        [7],
        [node(7)],
        kube=[("delete", "pods", "ns-7", "uid-7")],
        condition=("False", "ScalingIn"),
        events=["DeletedPod"],
    ),
    Case(
        "a job still completing on an unlisted node keeps its pod",
        0,
        [0],
        [],
        jobs=[
            Job(
                job_id=9,
                name="j",
                state=JobState.COMPLETED,
                state_flags=frozenset({"COMPLETING"}),
                nodes=("ns-0",),
            )
        ],
        condition=("False", "Draining"),
    ),
    Case(
        "a pod another owner controls is neither counted nor deleted",
        0,
        [],
        [],
        foreign_pod=True,
    ),
]


class CountedReads(FakeSlurm):
    """Slurm whose reads are counted: with a fresh shared view, a pass that changes nothing reads none;
    one that acts reads Slurm once more before acting (writes always go through)."""

    reads = 0

    async def get_partition(self, name: str) -> Partition:
        self.reads += 1
        return await super().get_partition(name)

    async def list_nodes(self) -> tuple[Node, ...]:
        self.reads += 1
        return await super().list_nodes()

    async def list_jobs(self) -> JobList:
        self.reads += 1
        return await super().list_jobs()


@dataclass
class Seen:
    """The shared view of Slurm (slurm_bridge/shared_view.py) as the NodeSet controller reads it."""

    nodes: SeenSlurmNodes | None
    jobs: tuple[Job, ...] | None

    def slurm_nodes_seen(self) -> SeenSlurmNodes | None:
        return self.nodes

    def slurm_jobs_seen(self) -> tuple[Job, ...] | None:
        return self.jobs


# The shared view has no failed read to report: a Slurm-down case runs only reading Slurm itself.
SHARED_OR_NOT = [
    pytest.param(case, shared, id=f"{case.id}-{'shared-view' if shared else 'reads-slurm'}")
    for case in CASES
    for shared in (False, True)
    if not (shared and case.slurm_down)
]


@pytest.mark.parametrize(("case", "shared"), SHARED_OR_NOT)
async def test_nodeset_executor(case: Case, shared: bool) -> None:
    pods = [slurmd_pod(i) for i in case.pods]
    if case.foreign_pod:
        pods.append(slurmd_pod(5, owner="someone-else"))
    partitions = [Partition(name="nodeset", nodes=DECLARED)] if case.partition else []
    slurm = CountedReads(partitions=partitions, nodes=case.nodes, jobs=case.jobs)
    seen = Seen(SeenSlurmNodes(tuple(case.nodes), tuple(partitions), read_at=100.0), tuple(case.jobs))
    if case.slurm_down:
        slurm.fail = SlurmTransportError("connection refused", sent=False)
    if case.refuse_update:
        slurm.fail_update = SlurmApiError("Invalid node state specified", status=500)
    kube, events = FakeKube(), FakeEvents()
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=slurm,
        nodesets=FakeCache([nodeset(case.replicas)]),
        pods=FakeCache(pods, indexes={NODESET_INDEX: nodeset_of_pod}),
        events=events,
        seen=seen if shared else None,
        monotonic=lambda: 101.0,
    )
    await reconciler.reconcile(KEY)
    assert [c for c in kube.calls if c[0] in ("create", "delete")] == case.kube
    assert slurm.node_updates == case.slurm
    status = [c[4]["status"] for c in kube.calls if c[0] == "patch" and c[3] == "status"]
    assert len(status) == 1
    (condition,) = status[0]["conditions"]
    assert (condition["status"], condition["reason"]) == case.condition
    assert condition["observedGeneration"] == 3
    assert status[0]["replicas"] == len(case.pods)
    assert events.reasons() == case.events
    if shared:
        acted = bool(case.kube or case.slurm or case.refuse_update)  # a refused drain was tried
        assert (slurm.reads > 0) is acted, f"{slurm.reads} reads of Slurm; acted: {acted}"


async def test_a_stale_shared_view_never_drains_a_node_an_admin_drained_meanwhile() -> None:
    """The shared view still shows ns-1 idle; Slurm already has it drained by an admin: scale-in must
    not take it (nor re-reason it)."""
    idle = [Node(name=f"ns-{i}", state=NodeState.IDLE, cpus_total=4) for i in range(2)]
    admin_drained = Node(
        name="ns-1", state=NodeState.IDLE, state_flags=frozenset({"DRAIN"}), reason="bad-dimm", cpus_total=4
    )
    partitions = [Partition(name="nodeset", nodes=DECLARED)]
    slurm = CountedReads(partitions=partitions, nodes=[idle[0], admin_drained], jobs=[])
    seen = Seen(SeenSlurmNodes(tuple(idle), tuple(partitions), read_at=100.0), ())
    kube = FakeKube()
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=slurm,
        nodesets=FakeCache([nodeset(1)]),
        pods=FakeCache([slurmd_pod(0), slurmd_pod(1)], indexes={NODESET_INDEX: nodeset_of_pod}),
        events=FakeEvents(),
        seen=seen,
        monotonic=lambda: 101.0,
    )
    await reconciler.reconcile(KEY)
    assert [u for u in slurm.node_updates if u[0] == "ns-1"] == []
    assert slurm.node_updates == [("ns-0", "DRAIN")]


async def test_a_gone_nodeset_writes_nothing() -> None:
    kube = FakeKube()
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=FakeSlurm(),
        nodesets=FakeCache(),
        pods=FakeCache(indexes={NODESET_INDEX: nodeset_of_pod}),
        events=FakeEvents(),
    )
    await reconciler.reconcile(KEY)
    assert kube.calls == []


async def test_an_unchanged_status_is_not_written_again() -> None:
    slurm = FakeSlurm(partitions=[Partition(name="nodeset", nodes=DECLARED)], nodes=[node(0)])
    kube = FakeKube()
    cache = FakeCache([nodeset(1)])
    reconciler = NodeSetReconciler(
        kube=kube,
        slurm=slurm,
        nodesets=cache,
        pods=FakeCache([slurmd_pod(0)], indexes={NODESET_INDEX: nodeset_of_pod}),
        events=FakeEvents(),
    )
    await reconciler.reconcile(KEY)
    written = kube.calls[-1][4]["status"]
    cache.put({**nodeset(1), "status": written})
    kube.calls.clear()
    await reconciler.reconcile(KEY)
    assert kube.calls == []


# --- the slurmd pod drains its own node before it stops ----------------------------------------------

OWN_HOOK = {"exec": {"command": ["/bin/true"]}}


@pytest.mark.parametrize(
    ("template_spec", "hooked", "grace"),
    [
        pytest.param({}, "slurmd", DEFAULT_DRAIN_GRACE_SECONDS, id="default-container"),
        pytest.param(
            {"containers": [{"name": "log"}, {"name": "slurmd"}], "terminationGracePeriodSeconds": 60},
            "slurmd",
            60,
            id="slurmd-by-name-and-the-templates-grace",
        ),
        pytest.param({"containers": [{"name": "main"}]}, "main", DEFAULT_DRAIN_GRACE_SECONDS, id="first"),
    ],
)
def test_slurmd_pod_drains_its_node_before_it_stops(
    template_spec: dict[str, Any], hooked: str, grace: int
) -> None:
    obj = nodeset(1)
    obj["spec"]["template"] = {"spec": template_spec}
    spec = pod_for(obj, 2)["spec"]
    assert spec["terminationGracePeriodSeconds"] == grace
    (container,) = [c for c in spec["containers"] if c.get("name", "slurmd") == hooked]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == drain_hook(drain_reason("ops", "ns"))
    others = [c for c in spec["containers"] if c is not container]
    assert all("lifecycle" not in c for c in others)


def test_a_templates_own_prestop_is_kept() -> None:
    obj = nodeset(1)
    obj["spec"]["template"] = {
        "spec": {"containers": [{"name": "slurmd", "lifecycle": {"preStop": OWN_HOOK}}]}
    }
    assert pod_for(obj, 0)["spec"]["containers"][0]["lifecycle"]["preStop"] == OWN_HOOK
    assert "lifecycle" not in (nodeset(1)["spec"].get("template") or {})  # the template is not changed


def test_drain_hook_drains_then_waits_for_the_nodes_jobs() -> None:
    shell, flag, script = drain_hook("slurm-bridge scale-in of nodeset ops/ns")
    assert (shell, flag) == ("/bin/sh", "-c")
    asks = script.index('squeue -h -w "$node"')
    drain = script.index('state=drain reason="slurm-bridge scale-in of nodeset ops/ns"')
    assert asks < drain < script.index("while busy")


@pytest.mark.parametrize(
    ("read_at", "now", "update_first", "reads_slurm"),
    [
        (100.0, 101.0, False, False),
        (100.0, 200.0, False, True),
        (None, 101.0, False, True),
        (100.0, 101.0, True, True),
    ],
    ids=["fresh-view-used", "stale-view-reader-stuck", "no-view-yet", "view-older-than-our-drain"],
)
async def test_the_shared_view_is_used_only_when_fresh_and_newer_than_our_last_node_update(
    read_at: float | None, now: float, update_first: bool, reads_slurm: bool
) -> None:
    partitions = [Partition(name="nodeset", nodes=DECLARED)]
    slurm = FakeSlurm(partitions=partitions, nodes=[node(0)])
    reads: list[str] = []
    listing = slurm.list_nodes

    async def counted_list_nodes() -> tuple[Node, ...]:
        reads.append("nodes")
        return await listing()

    slurm.list_nodes = counted_list_nodes  # type: ignore[method-assign]
    view = SeenSlurmNodes((node(0),), tuple(partitions), read_at=read_at) if read_at is not None else None
    reconciler = NodeSetReconciler(
        kube=FakeKube(),
        slurm=slurm,
        nodesets=FakeCache([nodeset(1)]),
        pods=FakeCache([slurmd_pod(0)], indexes={NODESET_INDEX: nodeset_of_pod}),
        events=FakeEvents(),
        seen=Seen(view, ()),
        seen_max_age=10.0,
        monotonic=lambda: now,
    )
    if update_first:  # a drain sent at `now`, after the view was read
        reconciler._node_written_at = now
    await reconciler.reconcile(KEY)
    assert bool(reads) is reads_slurm

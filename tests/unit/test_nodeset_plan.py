"""plan_nodeset: a table of situations (pods, Slurm's nodes) and the actions and condition they call for."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.nodeset_plan import (
    CreateSlurmdPod,
    DeleteSlurmdPod,
    DrainNode,
    MemberPod,
    NodeSetView,
    ResumeNode,
    RetireNode,
    SlurmView,
    Why,
    drain_reason,
    ordinal_of,
    plan_nodeset,
    selector_of,
)
from slurm_client import Node, NodeState

OUR_REASON = drain_reason("ops", "ns")
DECLARED = tuple(f"ns-{i}" for i in range(4))


def pod(i: int, *, ready: bool = True, terminating: bool = False) -> MemberPod:
    return MemberPod(name=f"ns-{i}", ordinal=i, uid=f"uid-{i}", ready=ready, terminating=terminating)


def node(
    i: int,
    state: NodeState = NodeState.IDLE,
    *,
    drain: bool = False,
    reason: str | None = None,
    cpus: int = 0,
) -> Node:
    return Node(
        name=f"ns-{i}",
        state=state,
        state_flags=frozenset({"DRAIN"}) if drain else frozenset(),
        reason=reason,
        cpus_total=4,
        cpus_allocated=cpus,
    )


def ours(i: int, state: NodeState = NodeState.IDLE, cpus: int = 0) -> Node:
    return node(i, state, drain=True, reason=OUR_REASON, cpus=cpus)


@dataclass
class Case:
    id: str
    replicas: int
    pods: list[MemberPod]
    nodes: list[Node]
    actions: list[object]
    reason: str
    scaled: bool = False
    partition: tuple[str, ...] | None = DECLARED
    jobs_on: dict[str, tuple[int, ...]] = field(default_factory=dict)
    message_has: str = ""
    jobs_known: bool = True  # the executor reads the job list whenever a member's node is unlisted


CASES = [
    Case("empty set, nothing wanted", 0, [], [], [], Why.SCALED, scaled=True),
    Case(
        "scale out from zero: lowest ordinals",
        2,
        [],
        [],
        [CreateSlurmdPod(0), CreateSlurmdPod(1)],
        Why.SCALING_OUT,
    ),
    Case(
        "scale out fills the gap first",
        3,
        [pod(0), pod(2)],
        [node(0), node(2)],
        [CreateSlurmdPod(1)],
        Why.SCALING_OUT,
    ),
    Case(
        "a terminating pod's name is not reused yet",
        2,
        [pod(0), pod(1, terminating=True)],
        [node(0)],
        [CreateSlurmdPod(2)],
        Why.SCALING_OUT,
    ),
    Case(
        "a member deleted by someone else while a job runs there: drain it",
        2,
        [pod(0), pod(1, terminating=True)],
        [node(0), node(1, NodeState.ALLOCATED, cpus=4)],
        [CreateSlurmdPod(2), DrainNode("ns-1", OUR_REASON)],
        Why.SCALING_OUT,
        message_has="ns-1 is being deleted: draining its node",
    ),
    Case(
        "a deleted member whose node is already drained or idle: nothing more to do",
        2,
        [pod(0), pod(1, terminating=True), pod(2, terminating=True)],
        [node(0), ours(1, NodeState.ALLOCATED, cpus=4), node(2)],
        [CreateSlurmdPod(3)],
        Why.SCALING_OUT,
    ),
    Case(
        "a deleted member on a DOWN node: its jobs are Slurm's to end",
        1,
        [pod(0, terminating=True)],
        [node(0, NodeState.DOWN, cpus=4)],
        [CreateSlurmdPod(1)],
        Why.SCALING_OUT,
    ),
    Case("steady", 2, [pod(0), pod(1)], [node(0), node(1)], [], Why.SCALED, scaled=True),
    Case(
        "beyond the declared nodes: create what exists, say the rest",
        6,
        [pod(0)],
        [node(0)],
        [CreateSlurmdPod(1), CreateSlurmdPod(2), CreateSlurmdPod(3)],
        Why.NOT_ENOUGH_DECLARED_NODES,
        message_has="2 not created",
    ),
    Case(
        "scale-in prefers idle over allocated, whatever the ordinal",
        2,
        [pod(0), pod(1), pod(2)],
        [node(0), node(1, NodeState.ALLOCATED, cpus=4), node(2, NodeState.MIXED, cpus=1)],
        [DrainNode("ns-0", OUR_REASON)],
        Why.DRAINING,
    ),
    Case(
        "scale-in of idle nodes: highest ordinal first",
        1,
        [pod(0), pod(1), pod(2)],
        [node(0), node(1), node(2)],
        [DrainNode("ns-2", OUR_REASON), DrainNode("ns-1", OUR_REASON)],
        Why.DRAINING,
    ),
    Case(
        "a pod whose slurmd never registered goes at once",
        1,
        [pod(0), pod(1, ready=False)],
        [node(0)],
        [DeleteSlurmdPod("ns-1", "uid-1")],
        Why.SCALING_IN,
    ),
    Case(
        "an unlisted node with a job on it keeps its pod (never delete on missing data)",
        1,
        [pod(0), pod(1)],
        [node(0)],
        [],
        Why.DRAINING,
        jobs_on={"ns-1": (42,)},
        message_has="job 42 running",
    ),
    Case(
        "an unlisted node whose jobs are not known keeps its pod",
        1,
        [pod(0), pod(1)],
        [node(0)],
        [],
        Why.DRAINING,
        jobs_known=False,
        message_has="Slurm does not list the node",
    ),
    Case(
        "a drained node with a job keeps its pod and names the job",
        1,
        [pod(0), pod(1)],
        [node(0), ours(1, NodeState.ALLOCATED, cpus=4)],
        [],
        Why.DRAINING,
        jobs_on={"ns-1": (42,)},
        message_has="draining ns-1: job 42 running",
    ),
    Case(
        "a drained node with no job: its pod is deleted",
        1,
        [pod(0), pod(1)],
        [node(0), ours(1)],
        [DeleteSlurmdPod("ns-1", "uid-1")],
        Why.SCALING_IN,
    ),
    Case(
        "wanted again while draining: resumed, not recreated",
        2,
        [pod(0), pod(1)],
        [node(0), ours(1, NodeState.ALLOCATED, cpus=2)],
        [ResumeNode("ns-1")],
        Why.SCALING_OUT,
    ),
    Case(
        "a node someone else drained is never resumed nor picked",
        1,
        [pod(0), pod(1)],
        [node(0, drain=True, reason="bad DIMM"), node(1)],
        [DrainNode("ns-1", OUR_REASON)],
        Why.DRAINING,
    ),
    Case(
        "Slurm's suffix on our reason keeps it ours",
        0,
        [pod(0)],
        [node(0, drain=True, reason=OUR_REASON + " : Not responding")],
        [DeleteSlurmdPod("ns-0", "uid-0")],
        Why.SCALING_IN,
    ),
    Case(
        "another NodeSet's drain (same prefix) is not ours",
        0,
        [pod(0)],
        [node(0, drain=True, reason=drain_reason("ops", "ns2"))],
        [],
        Why.FOREIGN_DRAIN,
    ),
    Case(
        "only foreign-drained nodes left: said, nothing done",
        0,
        [pod(0)],
        [node(0, drain=True, reason="bad DIMM")],
        [],
        Why.FOREIGN_DRAIN,
        message_has="ns-0 drained by someone else",
    ),
    Case(
        "our drained node without a pod returns to FUTURE",
        0,
        [],
        [ours(3, NodeState.DOWN)],
        [RetireNode("ns-3")],
        Why.SCALING_IN,
    ),
    Case(
        "our drained node without a pod, wanted again: resumed and recreated",
        1,
        [],
        [ours(0, NodeState.DOWN)],
        [ResumeNode("ns-0"), CreateSlurmdPod(0)],
        Why.SCALING_OUT,
    ),
    Case(
        "unknown partition: nothing at all",
        3,
        [],
        [],
        [],
        Why.UNKNOWN_PARTITION,
        partition=None,
    ),
    Case(
        "nodes of other names in the partition are not ours",
        2,
        [],
        [],
        [CreateSlurmdPod(0)],
        Why.NOT_ENOUGH_DECLARED_NODES,
        partition=("ns-0", "ns-x", "nsa-1", "ns-01", "gpu-3"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_nodeset(case: Case) -> None:
    view = NodeSetView(namespace="ops", name="ns", replicas=case.replicas, partition="nodeset")
    slurm = SlurmView(
        partition_nodes=case.partition,
        nodes={n.name: n for n in case.nodes},
        jobs_on=case.jobs_on,
        jobs_known=case.jobs_known,
    )
    plan = plan_nodeset(view, case.pods, slurm)
    assert list(plan.actions) == case.actions
    assert plan.reason == case.reason
    assert plan.scaled is case.scaled
    assert case.message_has in plan.message


def test_slurm_unreachable_never_fails_open() -> None:
    view = NodeSetView(namespace="ops", name="ns", replicas=0, partition="nodeset")
    plan = plan_nodeset(view, [pod(0), pod(1)], None)
    assert plan.actions == ()
    assert plan.reason == Why.SLURM_UNAVAILABLE
    assert plan.status.replicas == 2
    assert plan.waiting


def test_status_counts_slurm_states() -> None:
    view = NodeSetView(namespace="ops", name="ns", replicas=4, partition="nodeset", generation=7)
    nodes = [node(0), node(1, NodeState.ALLOCATED, cpus=4), node(2, NodeState.DOWN), ours(3, cpus=1)]
    pods = [pod(0), pod(1), pod(2, ready=False), pod(3)]
    plan = plan_nodeset(view, pods, SlurmView(DECLARED, {n.name: n for n in nodes}))
    status = plan.status.as_status(selector_of("ns"), 7)
    assert status["replicas"] == 4
    assert status["readyReplicas"] == 3
    assert (status["slurmIdle"], status["slurmAllocated"], status["slurmDown"], status["slurmDrain"]) == (
        1,
        2,
        1,
        1,
    )
    assert status["selector"] == "app.kubernetes.io/name=slurmd,app.kubernetes.io/instance=ns"
    assert status["observedGeneration"] == 7


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [("ns-0", 0), ("ns-12", 12), ("ns-01", None), ("ns-", None), ("nsx-1", None), ("ns-1-2", None)],
)
def test_ordinal_of(name: str, ordinal: int | None) -> None:
    assert ordinal_of("ns", name) == ordinal

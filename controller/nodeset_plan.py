"""Pure decisions of the NodeSet controller: which slurmd pods to create, drain, resume or delete.

A NodeSet (slinky.slurm.net/v1beta1) is a set of slurmd pods named ``<nodeset>-<ordinal>``; each pod's
hostname is its Slurm node name, declared ahead in slurm.conf (State=FUTURE) in the NodeSet's
partition. `plan_nodeset` compares the wanted replicas with the pods and with Slurm's view of their
nodes and returns actions plus the status to write; it remembers nothing between calls.

Rules (Slurm is the source of truth for what a node is doing):
- Scale-out first resumes nodes WE drained for a scale-in that has not finished (their pod still
  exists), then creates pods for the lowest free declared ordinals. A replica count beyond the declared
  nodes creates what it can and says so.
- Scale-in picks victims by Slurm's view, not pod age: nodes that never registered or are DOWN first,
  then IDLE, then MIXED, then ALLOCATED; the highest ordinal breaks ties. A victim is drained with a
  reason that marks it as ours (`DRAIN_REASON_PREFIX`); its pod is deleted only when Slurm reports the
  node drained with nothing allocated. A node that never registered (FUTURE) cannot hold a job: its pod
  goes at once.
- Once a scaled-in pod is gone, its node is returned to FUTURE, so `sinfo` no longer lists it.
- Never fail-open: when Slurm cannot be asked (`slurm is None`) nothing is created, drained or deleted.
- A node someone else drained is never resumed and never picked for scale-in.
- A member deleted by anyone but us is drained while jobs run on its node (its preStop waits for them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridge.wellknown import (
    DRAIN_REASON_PREFIX,
    LABEL_APP_INSTANCE,
    LABEL_APP_NAME,
    SLURMD_APP,
)
from slurm_client import Node, NodeState

# The NodeSet condition CONDITION_SCALED takes these reasons.


class Why:
    SCALED = "Scaled"
    SCALING_OUT = "ScalingOut"
    SCALING_IN = "ScalingIn"
    DRAINING = "Draining"
    SLURM_UNAVAILABLE = "SlurmUnavailable"
    UNKNOWN_PARTITION = "UnknownPartition"
    NOT_ENOUGH_DECLARED_NODES = "NotEnoughDeclaredNodes"
    FOREIGN_DRAIN = "DrainedByOthers"
    DRAIN_REFUSED = "DrainRefused"  # set by the executor when Slurm refuses a drain or resume


def drain_reason(namespace: str, name: str) -> str:
    return f"{DRAIN_REASON_PREFIX} of nodeset {namespace}/{name}"


def selector_of(name: str) -> str:
    return f"{LABEL_APP_NAME}={SLURMD_APP},{LABEL_APP_INSTANCE}={name}"


# --- Inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberPod:
    name: str
    ordinal: int
    uid: str
    ready: bool = False
    terminating: bool = False


@dataclass(frozen=True)
class SlurmView:
    """What Slurm says: the partition's configured node names (None: no such partition) and the
    registered nodes (FUTURE nodes are absent from Slurm's node list) with the jobs on each."""

    partition_nodes: tuple[str, ...] | None
    nodes: Mapping[str, Node]
    jobs_on: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # True when jobs_on comes from a job list read for this view. A pod whose node Slurm does not list
    # is deleted only then, and only with no job on that node name: never on missing data.
    jobs_known: bool = False


def no_job_seen_on(slurm: SlurmView, node: str) -> bool:
    return slurm.jobs_known and not slurm.jobs_on.get(node)


@dataclass(frozen=True)
class NodeSetView:
    namespace: str
    name: str
    replicas: int
    partition: str
    generation: int = 0


# --- Actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateSlurmdPod:
    ordinal: int


@dataclass(frozen=True)
class DrainNode:
    node: str
    reason: str


@dataclass(frozen=True)
class ResumeNode:
    node: str


@dataclass(frozen=True)
class DeleteSlurmdPod:
    name: str
    uid: str


@dataclass(frozen=True)
class RetireNode:
    """Return a scaled-in node to FUTURE: gone from sinfo until a pod registers it again."""

    node: str


NodeSetAction = CreateSlurmdPod | DrainNode | ResumeNode | DeleteSlurmdPod | RetireNode


@dataclass(frozen=True)
class NodeSetStatus:
    replicas: int
    desired: int
    ready: int
    idle: int = 0
    allocated: int = 0
    down: int = 0
    drain: int = 0

    def as_status(self, selector: str, generation: int) -> dict[str, object]:
        return {
            "replicas": self.replicas,
            "desired": self.desired,
            "readyReplicas": self.ready,
            "availableReplicas": self.ready,
            "unavailableReplicas": max(0, self.desired - self.ready),
            "slurmIdle": self.idle,
            "slurmAllocated": self.allocated,
            "slurmDown": self.down,
            "slurmDrain": self.drain,
            "selector": selector,
            "observedGeneration": generation,
        }


@dataclass(frozen=True)
class NodeSetPlan:
    actions: tuple[NodeSetAction, ...]
    status: NodeSetStatus
    scaled: bool  # condition Scaled: True when pods and Slurm agree with spec.replicas
    reason: str
    message: str
    waiting: bool  # something will change without an event we watch (a drain): look again soon


# --- Deciding -----------------------------------------------------------------------------------------


def ordinal_of(nodeset: str, node_or_pod: str) -> int | None:
    m = re.fullmatch(re.escape(nodeset) + r"-(0|[1-9][0-9]*)", node_or_pod)
    return int(m.group(1)) if m else None


def ours(node: Node | None, reason: str) -> bool:
    """Drained by this NodeSet's scale-in (`reason` is its drain reason; Slurm may append to it, e.g.
    " : Not responding")."""
    said = (node.reason or "") if node is not None else ""
    return node is not None and node.drained and (said == reason or said.startswith(reason + " "))


def busy(node: Node | None) -> bool:
    if node is None:
        return False
    return (
        node.state in (NodeState.ALLOCATED, NodeState.MIXED)
        or node.cpus_allocated > 0
        or "COMPLETING" in node.state_flags
    )


def _removal_rank(node: Node | None) -> int:
    """Cheapest to remove first: never registered or DOWN, then IDLE, MIXED, ALLOCATED."""
    if node is None or node.state in (NodeState.FUTURE, NodeState.DOWN, NodeState.UNKNOWN):
        return 0
    if not busy(node):
        return 1
    return 2 if node.state is NodeState.MIXED else 3


def _count(status_pods: Sequence[MemberPod], nodes: Mapping[str, Node], desired: int) -> NodeSetStatus:
    idle = allocated = down = drain = 0
    for pod in status_pods:
        node = nodes.get(pod.name)
        if node is None:
            continue
        if node.drained:
            drain += 1
        if node.state is NodeState.DOWN:
            down += 1
        elif busy(node):
            allocated += 1
        elif node.state is NodeState.IDLE:
            idle += 1
    return NodeSetStatus(
        replicas=len(status_pods),
        desired=desired,
        ready=sum(1 for p in status_pods if p.ready),
        idle=idle,
        allocated=allocated,
        down=down,
        drain=drain,
    )


def _describe(action: NodeSetAction) -> str:
    match action:
        case CreateSlurmdPod(ordinal=o):
            return f"creating pod {o}"
        case ResumeNode(node=n):
            return f"resuming {n}"
        case DrainNode(node=n):
            return f"draining {n}"
        case DeleteSlurmdPod(name=n):
            return f"deleting pod {n}"
        case RetireNode(node=n):
            return f"returning {n} to FUTURE"


def plan_nodeset(nodeset: NodeSetView, pods: Sequence[MemberPod], slurm: SlurmView | None) -> NodeSetPlan:
    live = sorted((p for p in pods if not p.terminating), key=lambda p: p.ordinal)
    if slurm is None:
        return NodeSetPlan(
            (),
            _count(live, {}, nodeset.replicas),
            False,
            Why.SLURM_UNAVAILABLE,
            "cannot ask Slurm about the set's nodes; nothing is created or deleted until it answers",
            waiting=True,
        )
    nodes = slurm.nodes
    status = _count(live, nodes, nodeset.replicas)
    if slurm.partition_nodes is None:
        return NodeSetPlan(
            (),
            status,
            False,
            Why.UNKNOWN_PARTITION,
            f"Slurm has no partition {nodeset.partition!r}; nothing is created or deleted",
            waiting=False,
        )
    declared = sorted(o for n in slurm.partition_nodes if (o := ordinal_of(nodeset.name, n)) is not None)
    mine = drain_reason(nodeset.namespace, nodeset.name)
    actions: list[NodeSetAction] = []
    notes: list[tuple[str, str]] = []  # (reason, message) of what is still in the way
    leaving = [p for p in live if ours(nodes.get(p.name), mine)]
    staying = [p for p in live if p not in leaving]
    want = nodeset.replicas

    if len(staying) < want:
        need = want - len(staying)
        for pod in sorted(leaving, key=lambda p: p.ordinal)[:need]:
            actions.append(ResumeNode(pod.name))
            leaving.remove(pod)
            need -= 1
        taken = {p.ordinal for p in pods}  # a terminating pod's name is not free yet
        free = [o for o in declared if o not in taken]
        for ordinal in free[:need]:
            node = nodes.get(f"{nodeset.name}-{ordinal}")
            if ours(node, mine):  # a retire that did not happen: undo our drain before slurmd registers
                actions.append(ResumeNode(f"{nodeset.name}-{ordinal}"))
            actions.append(CreateSlurmdPod(ordinal))
        short = need - len(free[:need])
        if short > 0:
            notes.append(
                (
                    Why.NOT_ENOUGH_DECLARED_NODES,
                    f"{want} replicas wanted but partition {nodeset.partition!r} declares only "
                    f"{len(declared)} nodes named {nodeset.name}-N: {short} not created",
                )
            )
        elif need > 0:
            notes.append((Why.SCALING_OUT, f"creating {need} slurmd pod(s)"))
    elif len(staying) > want:
        candidates = [p for p in staying if not (nodes.get(p.name) and nodes[p.name].drained)]
        foreign = [p.name for p in staying if p not in candidates]
        candidates.sort(key=lambda p: (_removal_rank(nodes.get(p.name)), -p.ordinal))
        excess = len(staying) - want
        for pod in candidates[:excess]:
            node = nodes.get(pod.name)
            if node is None and no_job_seen_on(slurm, pod.name):  # never registered, no job there
                actions.append(DeleteSlurmdPod(pod.name, pod.uid))
            elif node is None:
                leaving.append(pod)  # unlisted and not known to be free: waits below, deletes nothing
            else:
                actions.append(DrainNode(pod.name, mine))
                leaving.append(pod)
        if len(candidates) < excess:
            notes.append(
                (
                    Why.FOREIGN_DRAIN,
                    f"{', '.join(foreign)} drained by someone else: not scaled in by the bridge",
                )
            )

    for pod in sorted(leaving, key=lambda p: p.ordinal):
        node = nodes.get(pod.name)
        drained_now = any(isinstance(a, DrainNode) and a.node == pod.name for a in actions)
        deletable = no_job_seen_on(slurm, pod.name) if node is None else node.drained and not busy(node)
        if not drained_now and deletable:
            actions.append(DeleteSlurmdPod(pod.name, pod.uid))
            continue
        jobs = slurm.jobs_on.get(pod.name, ())
        if jobs:
            doing = f"job{'s' if len(jobs) > 1 else ''} {', '.join(map(str, jobs))} running"
        elif node is None:
            doing = "Slurm does not list the node; waiting until no job is seen on it"
        else:
            doing = "waiting for Slurm to report it drained"
        notes.append((Why.DRAINING, f"draining {pod.name}: {doing}"))

    # A member deleted by someone else (`kubectl delete`, an eviction, the NodeSet's own deletion) runs
    # its preStop drain (controller/nodesets.py drain_hook). The drain is repeated here with the
    # operator identity, in case the image cannot, so no new job lands on a node whose slurmd is going.
    for pod in sorted((p for p in pods if p.terminating), key=lambda p: p.ordinal):
        node = nodes.get(pod.name)
        if node is not None and busy(node) and not node.drained and node.state is not NodeState.DOWN:
            actions.append(DrainNode(pod.name, mine))
            notes.append(
                (Why.DRAINING, f"{pod.name} is being deleted: draining its node so its jobs end first")
            )

    # Nodes we drained whose pod is gone go back to FUTURE.
    for node_name, node in sorted(nodes.items()):
        node_ordinal = ordinal_of(nodeset.name, node_name)
        if (
            node_ordinal is None
            or not ours(node, mine)
            or busy(node)
            or any(p.name == node_name for p in pods)
        ):
            continue
        if not any(isinstance(a, CreateSlurmdPod) and a.ordinal == node_ordinal for a in actions):
            actions.append(RetireNode(node_name))

    if notes:
        reason, _ = notes[0]
        message = "; ".join(m for _, m in notes)
        return NodeSetPlan(tuple(actions), status, False, reason, message, waiting=True)
    if actions:
        growing = all(isinstance(a, CreateSlurmdPod | ResumeNode) for a in actions)
        reason = Why.SCALING_OUT if growing else Why.SCALING_IN
        said = "; ".join(_describe(a) for a in actions)
        return NodeSetPlan(tuple(actions), status, False, reason, said, waiting=True)
    return NodeSetPlan(
        (), status, True, Why.SCALED, f"{len(live)} of {want} slurmd pods; Slurm agrees", waiting=False
    )

"""NodeSet controller: applies controller/nodeset_plan.py's decisions to pods, Slurm nodes and status.

reconcile("namespace/name") reads the NodeSet and its pods from informer caches and the set's nodes
from Slurm (an operator identity: drain and resume need one), plans, and applies the actions in order.
A refused drain or resume stops the pass before anything is deleted; the refusal is said in the
NodeSet's condition and an event. Node state changes in Slurm are not watched: the set is looked at
again every `resync_seconds` (sooner while a drain is in progress).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.wellknown import (
    ANNOTATION_PARTITION,
    CONDITION_SCALED,
    LABEL_APP_INSTANCE,
    LABEL_APP_NAME,
    SLURMD_APP,
)
from controller.crash_points import NO_CRASH, CrashPoints, Scope, Step
from controller.nodeset_plan import (
    CreateSlurmdPod,
    DeleteSlurmdPod,
    DrainNode,
    MemberPod,
    NodeSetAction,
    NodeSetPlan,
    NodeSetView,
    ResumeNode,
    RetireNode,
    SlurmView,
    Why,
    busy,
    drain_reason,
    ordinal_of,
    plan_nodeset,
    selector_of,
)
from controller.ports import Events, NodeSetSlurm, NodeSetWriter, ObjectCache, SeenSlurmNodes, SlurmSeen
from controller.runtime import Result
from kube_client import (
    NODESETS,
    PODS,
    AlreadyExists,
    KubeObject,
    upsert_condition,
    utc_now_rfc3339,
)
from slurm_client import Job, Node, NodeUpdate, PartitionNotFound, SlurmError

log = logging.getLogger(__name__)

DEFAULT_SLURMD_IMAGE = "ghcr.io/slinkyproject/slurmd:25.11-ubuntu24.04"
# How long a deleted slurmd pod's preStop may wait for the jobs on its node (template may set its own).
DEFAULT_DRAIN_GRACE_SECONDS = 3600
# Pods indexed by "namespace/nodeset" so a reconcile never scans every slurmd pod.
NODESET_INDEX = "nodeset"
WAITING_REQUEUE_SECONDS = 2.0


def nodeset_of_pod(pod: KubeObject) -> list[str]:
    """Index function: the NodeSet key a slurmd pod belongs to (by its labels)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_APP_NAME) != SLURMD_APP or not labels.get(LABEL_APP_INSTANCE):
        return []
    return [f"{meta.get('namespace')}/{labels[LABEL_APP_INSTANCE]}"]


@dataclass
class _Outcome:
    refused: str | None = None  # Slurm refused a drain/resume/retire: what it said


class NodeSetReconciler:
    def __init__(
        self,
        *,
        kube: NodeSetWriter,
        slurm: NodeSetSlurm,
        nodesets: ObjectCache,
        pods: ObjectCache,
        events: Events,
        resync_seconds: float = 15.0,
        seen: SlurmSeen | None = None,
        seen_max_age: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._kube = kube
        self._slurm = slurm
        # The shared view of Slurm (in `run`): used when it began after our last node update, so a drain
        # or resume just sent is never judged by a view from before it; else Slurm is asked directly.
        self._seen = seen
        self._seen_max_age = seen_max_age
        self._monotonic = monotonic
        self._node_written_at = float("-inf")
        self._nodesets = nodesets
        self._pods = pods
        self._events = events
        self._resync = resync_seconds
        self._crash = crash

    async def reconcile(self, key: str) -> Result:
        obj = self._nodesets.get(key)
        if obj is None:
            return Result()  # gone; its pods are garbage-collected through their owner reference
        view = _view_of(obj)
        members = self._members(obj)
        slurm = await self._slurm_view(view, members, shared=True)
        plan = plan_nodeset(view, members, slurm)
        if plan.actions and self._seen is not None:
            # The shared view may be seconds old (an admin's drain, a slurmd just registered): it may
            # say "nothing to do", but every drain, resume, retire or delete is decided on a fresh read.
            slurm = await self._slurm_view(view, members, shared=False)
            plan = plan_nodeset(view, members, slurm)
        outcome = await self._apply(obj, view, plan.actions)
        await self._write_status(obj, view, plan, outcome)
        if plan.waiting or outcome.refused:
            return Result(requeue_after=WAITING_REQUEUE_SECONDS if not outcome.refused else self._resync)
        return Result(requeue_after=self._resync)

    # --- reading ---------------------------------------------------------------------------------------

    def _members(self, nodeset: KubeObject) -> list[MemberPod]:
        meta = nodeset["metadata"]
        uid = meta.get("uid")
        members = []
        for pod in self._pods.by_index(NODESET_INDEX, f"{meta['namespace']}/{meta['name']}"):
            pmeta = pod.get("metadata") or {}
            owners = pmeta.get("ownerReferences") or []
            if not any(o.get("uid") == uid and o.get("controller") for o in owners):
                continue  # not ours to count or delete
            ordinal = ordinal_of(meta["name"], pmeta.get("name") or "")
            if ordinal is None:
                continue
            members.append(
                MemberPod(
                    name=pmeta["name"],
                    ordinal=ordinal,
                    uid=pmeta.get("uid") or "",
                    ready=_ready(pod),
                    terminating=pmeta.get("deletionTimestamp") is not None,
                )
            )
        return members

    async def _slurm_view(
        self, view: NodeSetView, members: Sequence[MemberPod], *, shared: bool
    ) -> SlurmView | None:
        try:
            seen = self._fresh_nodes_seen() if shared else None
            partition_nodes: tuple[str, ...] | None
            if seen is not None:
                found = next((p for p in seen.partitions if p.name == view.partition), None)
                partition_nodes = found.nodes if found is not None else None
                all_nodes: Sequence[Node] = seen.nodes
            else:
                try:
                    partition_nodes = (await self._slurm.get_partition(view.partition)).nodes
                except PartitionNotFound:
                    partition_nodes = None
                all_nodes = await self._slurm.list_nodes()
            # Only nodes of the set's own partition: a NodeSet named like other nodes never touches them.
            members_of_partition = set(partition_nodes or ())
            nodes = {
                n.name: n
                for n in all_nodes
                if ordinal_of(view.name, n.name) is not None and n.name in members_of_partition
            }
            jobs_on: dict[str, tuple[int, ...]] = {}
            unlisted = any(m.name not in nodes for m in members)
            jobs_known = False
            if unlisted or any(n.drained and busy(n) for n in nodes.values()):
                # only while a drain waits on jobs (to name them), or a member's node is not listed
                running: dict[str, list[int]] = {}
                for job in await self._jobs(shared):
                    if not job.state.is_finished or "COMPLETING" in job.state_flags:
                        for node in job.nodes:
                            running.setdefault(node, []).append(job.job_id)
                jobs_on = {n: tuple(sorted(ids)) for n, ids in running.items()}
                jobs_known = True
        except SlurmError as error:
            log.warning("nodeset %s/%s: cannot read Slurm: %s", view.namespace, view.name, error)
            return None
        return SlurmView(partition_nodes=partition_nodes, nodes=nodes, jobs_on=jobs_on, jobs_known=jobs_known)

    def _fresh_nodes_seen(self) -> SeenSlurmNodes | None:
        seen = self._seen.slurm_nodes_seen() if self._seen is not None else None
        if seen is None or seen.read_at <= self._node_written_at:
            return None
        if self._monotonic() - seen.read_at > self._seen_max_age:
            return None  # the shared reader is stuck: ask Slurm rather than act on old news
        return seen

    async def _jobs(self, shared: bool) -> Sequence[Job]:
        jobs = self._seen.slurm_jobs_seen() if self._seen is not None and shared else None
        return jobs if jobs is not None else (await self._slurm.list_jobs()).jobs

    # --- acting ----------------------------------------------------------------------------------------

    async def _apply(self, obj: KubeObject, view: NodeSetView, actions: Sequence[NodeSetAction]) -> _Outcome:
        for action in actions:
            match action:
                case CreateSlurmdPod(ordinal=ordinal):
                    name = f"{view.name}-{ordinal}"
                    self._reach(Step.BEFORE_CREATE)
                    try:
                        await self._kube.create(PODS, pod_for(obj, ordinal), namespace=view.namespace)
                    except AlreadyExists:
                        continue  # a create whose answer was lost; the informer will show it
                    self._reach(Step.AFTER_CREATE)
                    await self._events.normal(obj, "CreatedPod", f"created slurmd pod {name}")
                case DeleteSlurmdPod(name=name, uid=uid):
                    self._reach(Step.BEFORE_POD_DELETE)
                    await self._kube.delete(PODS, name, namespace=view.namespace, uid=uid)
                    self._reach(Step.AFTER_POD_DELETE)
                    await self._events.normal(
                        obj, "DeletedPod", f"deleted slurmd pod {name}: its Slurm node has no job"
                    )
                case DrainNode() | ResumeNode() | RetireNode():
                    refused = await self._slurm_node_action(obj, action)
                    if refused is not None:
                        return _Outcome(refused=refused)  # nothing after it: never delete past a refusal
        return _Outcome()

    async def _slurm_node_action(
        self, obj: KubeObject, action: DrainNode | ResumeNode | RetireNode
    ) -> str | None:
        match action:
            case DrainNode(node=node, reason=reason):
                verb, update, event = "drain", NodeUpdate(state="DRAIN", reason=reason), "Draining"
                said = f"draining Slurm node {node} for scale-in"
                before, after = Step.BEFORE_DRAIN, Step.AFTER_DRAIN
            case ResumeNode(node=node):
                verb, update, event = "resume", NodeUpdate(state="RESUME"), "Resumed"
                said = f"resumed Slurm node {node}: wanted again"
                before, after = Step.BEFORE_RESUME, Step.AFTER_RESUME
            case RetireNode(node=node):
                verb, update, event = "retire", NodeUpdate(state="FUTURE"), "Retired"
                said = f"returned Slurm node {node} to FUTURE: its pod is gone"
                before, after = Step.BEFORE_RETIRE, Step.AFTER_RETIRE
        self._reach(before)
        try:
            await self._slurm.update_node(node, update)
        except SlurmError as error:
            self._node_written_at = self._monotonic()  # it may have been applied all the same
            message = f"Slurm refused to {verb} node {node}: {error}"
            await self._events.warning(obj, Why.DRAIN_REFUSED, message)
            return message
        self._node_written_at = self._monotonic()
        self._reach(after)
        await self._events.normal(obj, event, said)
        return None

    def _reach(self, step: Step) -> None:
        self._crash.reach(Scope.NODESET, step)

    async def _write_status(
        self, obj: KubeObject, view: NodeSetView, plan: NodeSetPlan, outcome: _Outcome
    ) -> None:
        scaled, reason, message = plan.scaled, plan.reason, plan.message
        if outcome.refused is not None:
            scaled, reason, message = False, Why.DRAIN_REFUSED, outcome.refused + "; nothing deleted"
        old_status = obj.get("status") or {}
        upsert = upsert_condition(
            old_status.get("conditions"),
            CONDITION_SCALED,
            "True" if scaled else "False",
            reason,
            message,
            now=utc_now_rfc3339(),
            extra={"observedGeneration": view.generation},
        )
        changed = upsert.changed
        condition = upsert.condition
        status = plan.status.as_status(selector_of(view.name), view.generation)
        status["conditions"] = [condition]
        if not changed and all(old_status.get(k) == v for k, v in status.items() if k != "conditions"):
            return
        await self._kube.patch(
            NODESETS, view.name, {"status": status}, namespace=view.namespace, subresource="status"
        )
        if changed and not scaled and reason in _WARN_REASONS:
            await self._events.warning(obj, reason, message)


_WARN_REASONS = frozenset(
    {Why.SLURM_UNAVAILABLE, Why.UNKNOWN_PARTITION, Why.NOT_ENOUGH_DECLARED_NODES, Why.FOREIGN_DRAIN}
)


def _view_of(obj: KubeObject) -> NodeSetView:
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    return NodeSetView(
        namespace=meta["namespace"],
        name=meta["name"],
        replicas=int(replicas) if isinstance(replicas, int) and replicas >= 0 else 1,
        partition=(meta.get("annotations") or {}).get(ANNOTATION_PARTITION) or meta["name"],
        generation=int(meta.get("generation") or 0),
    )


def _ready(pod: KubeObject) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def drain_hook(reason: str) -> list[str]:
    """The slurmd container's preStop command: when jobs run on this pod's own Slurm node, drain it and
    wait until none runs there (an idle node is left as it is: nothing to protect). The kubelet runs it
    on ANY deletion (scale-in, `kubectl delete`, an eviction, the NodeSet's deletion) before it stops
    slurmd, so running jobs end as Slurm ends them; the pod's terminationGracePeriodSeconds bounds the
    wait."""
    script = (
        'node="${SLURMD_NODENAME:-$(hostname)}"; '
        'busy() { [ -n "$(squeue -h -w "$node" -o %i 2>/dev/null)" ]; }; '
        f'if busy; then scontrol update nodename="$node" state=drain reason="{reason}" || true; '
        "while busy; do sleep 2; done; fi"
    )
    return ["/bin/sh", "-c", script]


def _drain_before_stop(pod_spec: dict[str, Any], reason: str) -> None:
    """Give the slurmd container (named `slurmd`, else the first) the drain hook unless the template has a
    preStop of its own, and a grace period long enough for jobs to end unless the template sets one."""
    containers: list[dict[str, Any]] = pod_spec["containers"]
    slurmd = next((c for c in containers if c.get("name") == SLURMD_APP), containers[0])
    lifecycle: dict[str, Any] = slurmd.setdefault("lifecycle", {})
    lifecycle.setdefault("preStop", {"exec": {"command": drain_hook(reason)}})
    pod_spec.setdefault("terminationGracePeriodSeconds", DEFAULT_DRAIN_GRACE_SECONDS)


def pod_for(nodeset: KubeObject, ordinal: int) -> KubeObject:
    """The slurmd pod `<nodeset>-<ordinal>` from the set's template; its hostname is the Slurm node name."""
    meta = nodeset["metadata"]
    spec: Mapping[str, Any] = nodeset.get("spec") or {}
    template: Mapping[str, Any] = spec.get("template") or {}
    tmeta: Mapping[str, Any] = template.get("metadata") or {}
    name = f"{meta['name']}-{ordinal}"
    pod_spec: dict[str, Any] = copy.deepcopy(dict(template.get("spec") or {}))
    pod_spec["hostname"] = name
    if not pod_spec.get("containers"):
        image = (spec.get("slurmd") or {}).get("image") or DEFAULT_SLURMD_IMAGE
        pod_spec["containers"] = [{"name": "slurmd", "image": image}]
    _drain_before_stop(pod_spec, drain_reason(meta["namespace"], meta["name"]))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                **(tmeta.get("labels") or {}),
                LABEL_APP_NAME: SLURMD_APP,
                LABEL_APP_INSTANCE: meta["name"],
            },
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": NODESETS.api_version,
                    "kind": "NodeSet",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }

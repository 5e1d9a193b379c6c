"""Event routing: which work-queue keys a watch event or a Slurm job change wakes.

Pods of a gang are planned with their gang, never alone: a member's events wake its gang key, and the
pod reconciler hands a member it meets to the gang queue. Which gang a pod belongs to is decided by
bridge.gang.planned_gang_key (pure); this module only wires informers and the job cache to the queues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.gang import GangKey, GangKind, planned_gang_key
from controller.gangs import GANG_INDEX
from controller.ports import ObjectCache
from controller.runtime import WorkQueue
from controller.slurm_jobs import SlurmJobCache
from kube_client import Informer, KubeObject, split_key


class EventRouter:
    def __init__(
        self, pod_queue: WorkQueue, gang_queue: WorkQueue, workload_groups: ObjectCache | None
    ) -> None:
        self._pods = pod_queue
        self._gangs = gang_queue
        self._workload_groups = workload_groups

    # -- what the reconcilers and the job cache call

    def to_pod(self, key: str) -> None:
        self._pods.add(key)

    def to_gang(self, key: str) -> None:
        self._gangs.add(key)

    def gang_of(self, pod: KubeObject) -> str | None:
        """The gang key `pod` is planned under; None for single pods and basic-policy groups."""
        groups = self._workload_groups
        return planned_gang_key(pod, groups.get if groups is not None else lambda _key: None)

    # -- wiring

    def watch(
        self,
        *,
        pods: Informer,
        nodes: Informer,
        pod_groups: Informer | None,
        workload_groups: Informer | None,
        jobs: SlurmJobCache,
        node_name_label: str | None,
    ) -> None:
        pods.add_handler(self.to_pod)
        pods.add_handler(_ignore, predicate=self._member_changed)
        pods.add_index(GANG_INDEX, lambda pod: [gang] if (gang := self.gang_of(pod)) is not None else [])
        if pod_groups is not None:
            pod_groups.add_handler(self._group_changed(GangKind.COSCHEDULING))
        if workload_groups is not None:
            workload_groups.add_handler(self._group_changed(GangKind.WORKLOAD))

        def waiting_to_bind(pod_key: str) -> bool:
            pod = pods.get(pod_key)
            return pod is not None and not (pod.get("spec") or {}).get("nodeName")

        def node_changed(old: KubeObject | None, new: KubeObject | None) -> bool:
            work = work_for_node_change(
                old,
                new,
                node_name_label=node_name_label,
                keys_on_node=jobs.keys_on_node,
                waiting_to_bind=waiting_to_bind,
            )
            for key in sorted(work.pods):
                self.to_pod(key)
            for key in sorted(work.gangs):
                self.to_gang(key)
            return False

        nodes.add_handler(_ignore, predicate=node_changed)

    def _member_changed(self, old: KubeObject | None, new: KubeObject | None) -> bool:
        # Every change of a member (its disappearance included) wakes its gang.
        for pod in (old, new):
            if pod is not None and (gang := self.gang_of(pod)) is not None:
                self.to_gang(gang)
        return False

    def _group_changed(self, kind: GangKind) -> Callable[[str], None]:
        return lambda key: self.to_gang(gang_key_for_group(key, kind))


def gang_key_for_group(group_key: str, kind: GangKind) -> str:
    """The gang key of a group object's informer key ("namespace/name")."""
    namespace, name = split_key(group_key)
    return str(GangKey(namespace=namespace or "default", kind=kind, name=name))


# -- Node events: which work one Node change wakes (pure)


@dataclass(frozen=True)
class NodeWork:
    """The pod and gang keys a Node change wakes."""

    pods: frozenset[str] = frozenset()
    gangs: frozenset[str] = frozenset()


NO_WORK = NodeWork()


def bind_inputs(node: KubeObject) -> tuple[object, ...]:
    """What the bind logic (and a reader of the node's health) can see of a Node: its name, labels,
    taints, unschedulable and the Ready condition's status. Heartbeats change none of these (they
    touch resourceVersion, managedFields, condition heartbeat times, leases), so they wake nothing."""
    meta: Mapping[str, Any] = node.get("metadata") or {}
    spec: Mapping[str, Any] = node.get("spec") or {}
    conditions = (node.get("status") or {}).get("conditions") or ()
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    taints = tuple(
        sorted(
            (str(t.get("key")), str(t.get("value")), str(t.get("effect"))) for t in spec.get("taints") or ()
        )
    )
    labels = tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))
    return (meta.get("name"), labels, taints, bool(spec.get("unschedulable")), ready)


def slurm_node_of(node: KubeObject, node_name_label: str | None) -> str | None:
    """The Slurm node a Kubernetes Node stands for (as bridge.objects.NodeInfo.slurm_node_name)."""
    meta: Mapping[str, Any] = node.get("metadata") or {}
    if node_name_label is None:
        return str(meta.get("name") or "") or None
    return str((meta.get("labels") or {}).get(node_name_label) or "") or None


def work_for_node_change(
    old: KubeObject | None,
    new: KubeObject | None,
    *,
    node_name_label: str | None,
    keys_on_node: Callable[[str], tuple[Iterable[str], Iterable[str]]],
    waiting_to_bind: Callable[[str], bool],
) -> NodeWork:
    """The work one Node event wakes: nothing when nothing the bind reads changed; otherwise the pods
    waiting to bind whose Slurm job was allocated that node (under its old or new Slurm name), and the
    gangs whose job was. `keys_on_node(slurm_node)` gives (pod keys, gang keys) of unfinished jobs there.
    """
    if old is not None and new is not None and bind_inputs(old) == bind_inputs(new):
        return NO_WORK
    slurm_nodes = {
        name for obj in (old, new) if obj is not None if (name := slurm_node_of(obj, node_name_label))
    }
    pods: set[str] = set()
    gangs: set[str] = set()
    for slurm_node in slurm_nodes:
        pod_keys, gang_keys = keys_on_node(slurm_node)
        pods.update(key for key in pod_keys if waiting_to_bind(key))
        gangs.update(gang_keys)
    if not pods and not gangs:
        return NO_WORK
    return NodeWork(pods=frozenset(pods), gangs=frozenset(gangs))


def _ignore(_key: str) -> None:
    pass

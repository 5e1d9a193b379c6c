"""Event routing: which work-queue keys a watch event or a Slurm job change wakes.

Pods of a gang are planned with their gang, never alone: a member's events wake its gang key, and the
pod reconciler hands a member it meets to the gang queue. Which gang a pod belongs to is decided by
bridge.gang.planned_gang_key (pure); this module only wires informers and the job cache to the queues.
"""

from __future__ import annotations

from collections.abc import Callable

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
    ) -> None:
        pods.add_handler(self.to_pod)
        pods.add_handler(_ignore, predicate=self._member_changed)
        pods.add_index(GANG_INDEX, lambda pod: [gang] if (gang := self.gang_of(pod)) is not None else [])
        if pod_groups is not None:
            pod_groups.add_handler(self._group_changed(GangKind.COSCHEDULING))
        if workload_groups is not None:
            workload_groups.add_handler(self._group_changed(GangKind.WORKLOAD))

        def node_changed(_key: str) -> None:
            # a node appearing or changing labels can make a waiting bind possible
            for key in jobs.pod_keys():
                self.to_pod(key)
            for key in jobs.gang_keys():
                self.to_gang(key)

        nodes.add_handler(node_changed)

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


def _ignore(_key: str) -> None:
    pass

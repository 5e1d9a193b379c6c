"""The parts of Kubernetes objects the bridge reads, parsed from raw API JSON (camelCase dicts).

Parsing is lenient about absent fields (a manifest on disk has no uid or status) and keeps
resource quantities as the strings Kubernetes uses; bridge/translate.py interprets them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from bridge import wellknown
from bridge.numbers import ascii_int


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContainerResources(_Frozen):
    name: str
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    # An init container with restartPolicy Always keeps running beside the app containers.
    sidecar: bool = False

    @classmethod
    def from_api(cls, container: Mapping[str, Any]) -> ContainerResources:
        resources = container.get("resources") or {}
        return cls(
            name=str(container.get("name") or ""),
            requests=_string_map(resources.get("requests")),
            limits=_string_map(resources.get("limits")),
            sidecar=container.get("restartPolicy") == "Always",
        )


class PodCondition(_Frozen):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class PodInfo(_Frozen):
    namespace: str
    name: str
    uid: str = ""
    generate_name: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    finalizers: tuple[str, ...] = ()
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    scheduler_name: str | None = None
    # spec.schedulingGroup.podGroupName: the Workload-API PodGroup the pod belongs to (bridge/gang.py).
    scheduling_group: str | None = None
    node_name: str | None = None
    active_deadline_seconds: int | None = None
    containers: tuple[ContainerResources, ...] = ()
    init_containers: tuple[ContainerResources, ...] = ()
    overhead: dict[str, str] = {}
    # Pod-level resources (spec.resources): override the container sum for cpu and memory.
    pod_requests: dict[str, str] = {}
    pod_limits: dict[str, str] = {}
    phase: str | None = None
    conditions: tuple[PodCondition, ...] = ()
    # The exit code of the first container (init containers first) that terminated with a non-zero
    # code; None when none did. A batch placeholder records it as the Slurm job's exit code.
    failed_exit_code: int | None = None

    @classmethod
    def from_api(cls, pod: Mapping[str, Any]) -> PodInfo:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        pod_resources = spec.get("resources") or {}
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generate_name=str(meta.get("generateName") or ""),
            labels=_string_map(meta.get("labels")),
            annotations=_string_map(meta.get("annotations")),
            finalizers=tuple(meta.get("finalizers") or ()),
            creation_timestamp=meta.get("creationTimestamp"),
            deletion_timestamp=meta.get("deletionTimestamp"),
            scheduler_name=spec.get("schedulerName"),
            scheduling_group=(spec.get("schedulingGroup") or {}).get("podGroupName") or None,
            node_name=spec.get("nodeName") or None,
            active_deadline_seconds=spec.get("activeDeadlineSeconds"),
            containers=tuple(ContainerResources.from_api(c) for c in spec.get("containers") or ()),
            init_containers=tuple(ContainerResources.from_api(c) for c in spec.get("initContainers") or ()),
            overhead=_string_map(spec.get("overhead")),
            pod_requests=_string_map(pod_resources.get("requests")),
            pod_limits=_string_map(pod_resources.get("limits")),
            phase=status.get("phase"),
            failed_exit_code=first_failed_exit_code(status),
            conditions=tuple(
                PodCondition(
                    type=str(c.get("type")),
                    status=str(c.get("status")),
                    reason=c.get("reason"),
                    message=c.get("message"),
                )
                for c in status.get("conditions") or ()
            ),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_terminal(self) -> bool:
        return self.phase in wellknown.TERMINAL_PHASES

    @property
    def is_deleting(self) -> bool:
        return self.deletion_timestamp is not None

    @property
    def is_bound(self) -> bool:
        return bool(self.node_name)

    @property
    def has_finalizer(self) -> bool:
        return wellknown.FINALIZER in self.finalizers

    @property
    def labelled_job_id(self) -> int | None:
        """The Slurm job id the bridge recorded on the pod, if any (ignores a garbled label)."""
        value = self.labels.get(wellknown.LABEL_SLURM_JOB_ID, "")
        return ascii_int(value)

    def condition(self, condition_type: str) -> PodCondition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


class NodeInfo(_Frozen):
    name: str
    labels: dict[str, str] = {}
    unschedulable: bool = False

    @classmethod
    def from_api(cls, node: Mapping[str, Any]) -> NodeInfo:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        return cls(
            name=str(meta.get("name") or ""),
            labels=_string_map(meta.get("labels")),
            unschedulable=bool(spec.get("unschedulable")),
        )

    def slurm_node_name(self, node_name_label: str | None) -> str | None:
        """The Slurm node this Kubernetes node is; None when the mapping label is missing."""
        if node_name_label is None:
            return self.name
        return self.labels.get(node_name_label) or None


def slurm_to_kubernetes_nodes(nodes: Iterable[NodeInfo], node_name_label: str | None) -> dict[str, str]:
    """Map Slurm node name -> Kubernetes node name, for nodes that exist on the Kubernetes side."""
    mapping: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        slurm_name = node.slurm_node_name(node_name_label)
        if slurm_name is not None:
            mapping.setdefault(slurm_name, node.name)
    return mapping


def _string_map(value: Any) -> dict[str, str]:
    # YAML manifests may give `cpu: 2` or a label value as a number; the API always returns strings.
    return {str(k): str(v) for k, v in (value or {}).items()}


def first_failed_exit_code(status: Mapping[str, Any]) -> int | None:
    """The first non-zero `terminated.exitCode` in a pod status (init containers, then containers)."""
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or ():
            terminated = ((container or {}).get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            if isinstance(code, int) and not isinstance(code, bool) and code != 0:
                return code
    return None

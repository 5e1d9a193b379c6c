"""What each reconciler needs from the world, as narrow protocols.

The real implementations are kube_client.KubeClient / Informer / EventRecorder, slurm_client.SlurmClient
and controller.slurm_jobs.SlurmJobCache; tests hand in the in-memory fakes of tests/fakes/. A reconciler
types its collaborators with these, never with the concrete classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kube_client import KubeObject, PatchType, ResourceRef
from slurm_client import CancelOutcome, Job, JobList, JobSpec, Node, NodeUpdate, Partition, SubmitResult

# --- Kubernetes -----------------------------------------------------------------------------------------


class ObjectCache(Protocol):
    """The read side of an informer: a synced local copy, never a call to the API server."""

    @property
    def has_synced(self) -> bool: ...

    def get(self, key: str) -> KubeObject | None: ...

    def objects(self) -> list[KubeObject]: ...

    def by_index(self, index_name: str, value: str) -> list[KubeObject]: ...


class ObjectReader(Protocol):
    async def get(self, ref: ResourceRef, name: str, *, namespace: str | None = None) -> KubeObject: ...


class ObjectWriter(Protocol):
    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
    ) -> KubeObject: ...


class PodWriter(ObjectReader, ObjectWriter, Protocol):
    """What the pod and gang executors write: patches, bindings, conditions, deletes, finalizers."""

    async def bind_pod(
        self,
        namespace: str,
        name: str,
        node_name: str,
        *,
        uid: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None: ...

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
    ) -> KubeObject | None: ...

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> bool: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any: ...

    async def remove_finalizer(
        self,
        ref: ResourceRef,
        name: str,
        finalizer: str,
        *,
        namespace: str | None = None,
        current: Mapping[str, Any] | None = None,
    ) -> bool: ...


class NodeSetWriter(ObjectWriter, Protocol):
    """What the NodeSet executor writes: slurmd pods and the NodeSet's status."""

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject: ...

    async def delete(
        self, ref: ResourceRef, name: str, *, namespace: str | None = None, uid: str | None = None
    ) -> KubeObject | None: ...


class Events(Protocol):
    async def normal(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None: ...

    async def warning(self, involved: Mapping[str, Any], reason: str, message: str) -> KubeObject | None: ...


# --- Slurm ------------------------------------------------------------------------------------------------


class JobSubmitter(Protocol):
    async def submit_job(self, spec: JobSpec) -> SubmitResult: ...

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome: ...

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome: ...


class GangSlurm(JobSubmitter, Protocol):
    async def list_partitions(self) -> tuple[Partition, ...]: ...


class NodeSetSlurm(Protocol):
    """The NodeSet controller's Slurm operator: reads nodes and jobs, drains and resumes nodes."""

    async def get_partition(self, name: str) -> Partition: ...

    async def list_nodes(self) -> tuple[Node, ...]: ...

    async def list_jobs(self) -> JobList: ...

    async def update_node(self, name: str, update: NodeUpdate) -> None: ...


@dataclass(frozen=True)
class SeenSlurmNodes:
    """Slurm's nodes and partitions as one read found them (the exporter's last snapshot, in `run`)."""

    nodes: tuple[Node, ...]
    partitions: tuple[Partition, ...]
    read_at: float  # monotonic time the read began: the data is at least this new


class SlurmSeen(Protocol):
    """What the process's one reader of Slurm last saw, so a reconcile reads no list of its own."""

    def slurm_nodes_seen(self) -> SeenSlurmNodes | None:
        """The latest nodes and partitions; None when nobody reads them."""
        ...

    def slurm_jobs_seen(self) -> Sequence[Job] | None:
        """Every job of the latest applied poll (all users); None before the first."""
        ...


class JobIndex(Protocol):
    """The bridge's view of Slurm's jobs (controller/slurm_jobs.py): read by key, written on submit."""

    @property
    def synced(self) -> bool: ...

    @property
    def settled(self) -> bool: ...

    def jobs_for(self, pod_key: str) -> list[Job]: ...

    def jobs_for_gang(self, gang_key: str) -> list[Job]: ...

    def owned_jobs(self) -> list[Job]: ...

    def owned_gang_jobs(self) -> list[Job]: ...

    def record_submitted(self, job_id: int, spec: JobSpec) -> None: ...

    def record_ended(self, job_id: int) -> None: ...

    def submit_outcome_unknown(self) -> None: ...

    def absence_confirmed(self, job_id: int) -> bool: ...

    def poke(self) -> None: ...

    def count_orphan_cancel_failure(self) -> None: ...

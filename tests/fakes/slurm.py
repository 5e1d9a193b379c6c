"""In-memory stand-ins for the Slurm side of controller/ports.py: slurmrestd and the bridge's job index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.gang_marker import decode_gang_marker
from bridge.marker import decode_marker
from slurm_client import (
    CancelOutcome,
    Job,
    JobList,
    JobSpec,
    JobState,
    Node,
    NodeUpdate,
    Partition,
    PartitionNotFound,
    SubmitResult,
)


class FakeSlurm:
    """Submits get ids 101, 102, ...; `fail` makes the next calls raise; every call is recorded."""

    def __init__(
        self,
        *,
        partitions: Iterable[Partition] = (),
        nodes: Iterable[Node] = (),
        jobs: Iterable[Job] = (),
    ) -> None:
        self.submitted: list[JobSpec] = []
        self.cancelled: list[tuple[int, str | int | None]] = []
        self.node_updates: list[tuple[str, str | None]] = []
        self.partitions = {p.name: p for p in partitions}
        self.nodes = list(nodes)
        self.jobs = list(jobs)
        self.fail: Exception | None = None
        self.fail_cancel: Exception | None = None
        self.fail_update: Exception | None = None

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        if self.fail is not None:
            raise self.fail
        self.submitted.append(spec)
        return SubmitResult(job_id=100 + len(self.submitted))

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome:
        if self.fail_cancel is not None:
            raise self.fail_cancel
        self.cancelled.append((job_id, signal))
        return CancelOutcome.SIGNALLED

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome:
        """Recorded as the signal the placeholder gets: USR1 for 0, USR2 (with the code) otherwise."""
        if self.fail_cancel is not None:
            raise self.fail_cancel
        self.cancelled.append((job_id, "USR1" if exit_code == 0 else f"USR2 exit={exit_code}"))
        return CancelOutcome.SIGNALLED

    async def list_partitions(self) -> tuple[Partition, ...]:
        if self.fail is not None:
            raise self.fail
        return tuple(self.partitions.values())

    async def get_partition(self, name: str) -> Partition:
        if self.fail is not None:
            raise self.fail
        if name not in self.partitions:
            raise PartitionNotFound(f"no partition {name}", status=404)
        return self.partitions[name]

    async def list_nodes(self) -> tuple[Node, ...]:
        if self.fail is not None:
            raise self.fail
        return tuple(self.nodes)

    async def list_jobs(self) -> JobList:
        return JobList(jobs=tuple(self.jobs), next_update_time=0)

    async def update_node(self, name: str, update: NodeUpdate) -> None:
        if self.fail_update is not None:
            raise self.fail_update
        self.node_updates.append((name, update.state))


class FakeJobIndex:
    """The job index as the planners see it: jobs by the pod or gang their marker names."""

    def __init__(self, cluster_id: str, jobs: Iterable[Job] = ()) -> None:
        self.cluster_id = cluster_id
        self.jobs = list(jobs)
        self.synced = True
        self.settled = True
        self.pokes = 0
        self.ended: list[int] = []
        self.polled_since_absence = True  # False: a labelled job this index has not polled since
        self.orphan_cancel_failures = 0

    def jobs_for(self, pod_key: str) -> list[Job]:
        return [
            j for j in self.jobs if (m := decode_marker(j.comment, self.cluster_id)) and _pod(m) == pod_key
        ]

    def jobs_for_gang(self, gang_key: str) -> list[Job]:
        return [
            j
            for j in self.jobs
            if (m := decode_gang_marker(j.comment, self.cluster_id)) and str(m.gang_key) == gang_key
        ]

    def owned_jobs(self) -> list[Job]:
        return [j for j in self.jobs if decode_marker(j.comment, self.cluster_id) is not None]

    def owned_gang_jobs(self) -> list[Job]:
        return [j for j in self.jobs if decode_gang_marker(j.comment, self.cluster_id) is not None]

    def record_submitted(self, job_id: int, spec: JobSpec) -> None:
        self.jobs.append(Job(job_id=job_id, name=spec.name, state=JobState.PENDING, comment=spec.comment))

    def record_ended(self, job_id: int) -> None:
        self.ended.append(job_id)

    def submit_outcome_unknown(self) -> None:
        self.settled = False

    def absence_confirmed(self, job_id: int) -> bool:
        return self.polled_since_absence

    def poke(self) -> None:
        self.pokes += 1

    def count_orphan_cancel_failure(self) -> None:
        self.orphan_cancel_failures += 1


def _pod(marker: Any) -> str:
    return f"{marker.namespace}/{marker.pod_name}"

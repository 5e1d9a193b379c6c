"""One reader of Slurm per process: what `slurm-bridge run` hands the exporter and the NodeSet controller.

The workload controller's job index (controller/slurm_jobs.py) is the one reader of Slurm's job list;
the exporter's poller is the one reader of nodes, partitions and diag. Each side reads the other's
latest answer instead of asking slurmrestd again. The parts are attached as they are built (the
exporter serves /metrics before the controllers have synced), so every read may answer None: the
exporter then waits, the NodeSet controller reads Slurm itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from controller.ports import SeenSlurmNodes
from controller.slurm_jobs import SlurmJobCache
from exporter import PollerStatus
from slurm_client import Job


class StatusSource(Protocol):
    """What is read of the exporter's poller (exporter.SnapshotPoller fits)."""

    @property
    def status(self) -> PollerStatus: ...


class SharedSlurmView:
    """Is an exporter.JobFeed and a controller.ports.SlurmSeen."""

    def __init__(self) -> None:
        self._jobs: SlurmJobCache | None = None
        self._exporter: StatusSource | None = None

    def attach_jobs(self, jobs: SlurmJobCache) -> None:
        self._jobs = jobs

    def attach_exporter(self, poller: StatusSource) -> None:
        self._exporter = poller

    # exporter.JobFeed
    def shared_jobs(self) -> tuple[Job, ...] | None:
        return self._jobs.shared_jobs() if self._jobs is not None else None

    # controller.ports.SlurmSeen
    def slurm_jobs_seen(self) -> Sequence[Job] | None:
        return self.shared_jobs()

    def slurm_nodes_seen(self) -> SeenSlurmNodes | None:
        if self._exporter is None:
            return None
        snapshot = self._exporter.status.snapshot
        if snapshot is None:
            return None
        return SeenSlurmNodes(
            nodes=snapshot.nodes, partitions=snapshot.partitions, read_at=snapshot.taken_monotonic
        )

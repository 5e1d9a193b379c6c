"""One reader of Slurm in `run`: the exporter takes the job index's list, the NodeSet controller both."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.slurm_jobs import SlurmJobCache
from exporter import PollerStatus, Snapshot
from slurm_bridge.shared_view import SharedSlurmView
from slurm_client import Diag, Job, JobList, JobState, Node, NodeState, Partition

JOB = Job(job_id=1, name="j", state=JobState.RUNNING, nodes=("n1",))
NODE = Node(name="n1", state=NodeState.MIXED, cpus_total=4)
PARTITION = Partition(name="p", nodes=("n1",))


class NoSlurm:
    async def list_jobs(self, *, update_time: object = None) -> JobList:
        raise AssertionError("not polled in this test")

    async def get_job(self, job_id: int) -> Job:
        raise AssertionError("not looked up in this test")


@dataclass
class Poller:
    status: PollerStatus


def snapshot() -> Snapshot:
    return Snapshot(
        jobs=(),
        nodes=(NODE,),
        partitions=(PARTITION,),
        diag=Diag(),
        taken_at=1_800_000_000.0,
        taken_monotonic=42.0,
    )


@pytest.mark.parametrize(
    ("polled", "exporter", "jobs", "nodes"),
    [
        (False, None, None, None),
        (True, None, (JOB,), None),
        (True, PollerStatus(), (JOB,), None),
        (True, PollerStatus(snapshot=snapshot()), (JOB,), ((NODE,), (PARTITION,), 42.0)),
    ],
    ids=["nothing-yet", "jobs-only", "exporter-not-refreshed", "both"],
)
def test_shared_view_answers_what_its_readers_last_saw(
    polled: bool,
    exporter: PollerStatus | None,
    jobs: tuple[Job, ...] | None,
    nodes: tuple[object, ...] | None,
) -> None:
    view = SharedSlurmView()
    cache = SlurmJobCache(NoSlurm(), "c1", owner=None, poll_interval=10, on_change=lambda _k: None)
    view.attach_jobs(cache)
    if polled:
        cache._replace([JOB], poll_started=0.0)
    if exporter is not None:
        view.attach_exporter(Poller(exporter))
    assert view.shared_jobs() == jobs
    assert view.slurm_jobs_seen() == jobs
    seen = view.slurm_nodes_seen()
    assert (None if seen is None else (seen.nodes, seen.partitions, seen.read_at)) == nodes

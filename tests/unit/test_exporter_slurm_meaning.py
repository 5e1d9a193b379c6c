"""Where our exporter and slurmctld 26.05's own metrics disagreed side by side on the testbed
(tests/testbed/test_exporter_native.py), the exporter follows Slurm:

- slurm_partition_nodes_cpus_idle is the partition's configured CPUs minus the allocated ones: FUTURE
  nodes (which slurmrestd does not list) count as idle;
- the plain job count is every job slurmctld lists cluster-wide and per user/account (finished ones
  included), but only jobs not yet finished per partition.

And the demand: in a partition short of nodes, only the first pending job says Resources; the jobs behind
it say ReqNodeNotAvail "May be reserved for other job" (seen on the testbed's all-FUTURE `nodeset`), and
count as demanded nodes too."""

from __future__ import annotations

from exporter import CollectorOptions, snapshot_families
from slurm_client import Diag, Job, JobState, Node, NodeState, Partition
from tests.unit.test_exporter_collector import job, samples, snapshot


def idle(
    partitions: tuple[Partition, ...], nodes: tuple[Node, ...] = (), running: int = 0
) -> dict[str, float]:
    jobs = [job(1, JobState.RUNNING, partition="p", nodes=("n0",), cpus=running)] if running else []
    families = snapshot_families(snapshot(jobs, nodes, partitions, Diag()))
    return {
        dict(labels)["partition"]: value
        for (name, labels), value in samples(families).items()
        if name == "slurm_partition_nodes_cpus_idle"
    }


def test_a_partition_of_future_nodes_only_is_all_idle() -> None:
    # the testbed's `nodeset`: ns-[0-7], 4 CPUs each, all FUTURE; Slurm serves 32
    nodeset = Partition(
        name="nodeset", nodes=tuple(f"ns-{i}" for i in range(8)), total_nodes=8, total_cpus=32
    )
    assert idle((nodeset,)) == {"nodeset": 32}


def test_allocated_cpus_are_taken_off_the_configured_total() -> None:
    part = Partition(name="p", nodes=("n0", "f0"), total_nodes=2, total_cpus=8)
    n0 = Node(
        name="n0", state=NodeState.MIXED, state_flags=frozenset(), cpus_total=4, cpus_allocated=3,
        memory_total_mb=1024, partitions=("p",),
    )  # fmt: skip
    assert idle((part,), (n0,), running=3) == {"p": 5}


def test_without_a_configured_total_the_listed_nodes_count() -> None:
    part = Partition(name="p", nodes=("n0",), total_nodes=1, total_cpus=0)
    n0 = Node(
        name="n0", state=NodeState.MIXED, state_flags=frozenset(), cpus_total=4, cpus_allocated=1,
        memory_total_mb=1024, partitions=("p",),
    )  # fmt: skip
    assert idle((part,), (n0,)) == {"p": 3}


def test_plain_job_counts_are_every_listed_job_except_per_partition() -> None:
    jobs = [
        job(1, JobState.PENDING, partition="p", state_reason="JobHeldUser", user_name="ann", account="a"),
        job(2, JobState.COMPLETED, partition="p", user_name="ann", account="a"),
        job(3, JobState.CANCELLED, partition="p", user_name="bob", account="a"),
    ]
    part = Partition(name="p", nodes=(), total_nodes=0, total_cpus=0)
    table = samples(snapshot_families(snapshot(jobs, (), (part,)), CollectorOptions(per_user_metrics=True)))
    assert table[("slurm_jobs", frozenset())] == 3
    assert table[("slurm_partition_jobs", frozenset({("partition", "p")}))] == 1
    assert table[("slurm_user_jobs", frozenset({("username", "ann")}))] == 2
    assert table[("slurm_user_jobs", frozenset({("username", "bob")}))] == 1
    assert table[("slurm_account_jobs", frozenset({("account", "a")}))] == 3
    assert table[("slurm_jobs_finished", frozenset())] == 2


def demanded(*jobs: Job) -> float:
    part = Partition(name="p", nodes=(), total_nodes=0, total_cpus=0)
    table = samples(snapshot_families(snapshot(jobs, (), (part,))))
    return table[("slurm_partition_nodes_demanded", frozenset({("partition", "p")}))]


def test_jobs_waiting_behind_the_first_for_nodes_are_demand() -> None:
    first = job(
        1, JobState.PENDING, partition="p", state_reason="Resources", node_count=2,
        state_description="Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority "
        "partitions",
    )  # fmt: skip
    behind = [
        job(i, JobState.PENDING, partition="p", state_reason="ReqNodeNotAvail", node_count=2,
            state_description="ReqNodeNotAvail, May be reserved for other job")
        for i in (2, 3)
    ]  # fmt: skip
    assert demanded(first, *behind) == 6


def test_req_node_not_avail_for_named_nodes_is_not_demand() -> None:
    named = job(
        1, JobState.PENDING, partition="p", state_reason="ReqNodeNotAvail", node_count=1,
        state_description="ReqNodeNotAvail, UnavailableNodes:n1",
    )  # fmt: skip
    assert demanded(named) == 0

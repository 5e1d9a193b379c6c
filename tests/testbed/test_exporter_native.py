"""Our exporter beside Slurm 26.05's own metrics (slurmctld with MetricsType=metrics/openmetrics).

testbed/slurm.sh turns the openmetrics plugin on for 26.05: slurmctld serves /metrics/jobs,
/metrics/nodes, /metrics/partitions, /metrics/scheduler and /metrics/jobs-users-accts on its port (17200).
This test reads both sides of the same cluster and compares every metric they share (same name): the label
sets and the values. To hold the state still it submits held jobs (they never start) and compares only
series whose Slurm value did not move while our exporter refreshed. Differences that are known and
documented in docs/metrics.md are listed in KNOWN_DIFFERENCES and reported, everything else must match.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import CollectorOptions, Exporter
from slurm_client import JwtKeyAuth, SlurmClient
from tests.testbed_env import REPO, SlurmCluster

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.slurm_version("26.05"),
]

SLURMCTLD_METRICS = "http://127.0.0.1:17200/metrics"
ENDPOINTS = ("jobs", "nodes", "partitions", "scheduler", "jobs-users-accts")
Key = tuple[str, frozenset[tuple[str, str]]]

# Values that move on their own (slurmctld's threads, cycle times, counters since the last reset): compared
# for presence and labels only.
VOLATILE = re.compile(r"^slurm_(server_thread_cnt|agent_queue_size|sdiag_.*|schedule_cycle_.*|sched_.*|bf_.*"
                      r"|backfilled_jobs)$")  # fmt: skip
# Shared names whose values differ for a documented reason (docs/metrics.md, "Compared with slurmctld").
FUTURE_FLAGS = "Slurm counts the flags of FUTURE nodes, which slurmrestd does not list"
GPU_TRES = "Slurm counts GPUs as TRES gres/gpu: 0 unless AccountingStorageTRES has gres/gpu"
KNOWN_DIFFERENCES = {
    "slurm_node_memory_bytes": "Slurm serves MiB under the _bytes name; ours bytes",
    "slurm_node_memory_alloc_bytes": "Slurm serves MiB under the _bytes name; ours bytes",
    "slurm_node_gpus": GPU_TRES,
    "slurm_node_gpus_alloc": GPU_TRES,
    "slurm_partition_gpus": GPU_TRES,
    "slurm_nodes_powering_up": "Slurm 26.05 fills it from the powering-down count",
    "slurm_partition_jobs_wait_part_node_limit": "Slurm's exceeded the partition's pending jobs (5 of 4)",
    # flags of FUTURE nodes: slurmrestd does not list FUTURE nodes, so their flags are invisible to us; a
    # node a NodeSet started and stopped again is FUTURE+NOT_RESPONDING in Slurm
    "slurm_nodes_noresp": FUTURE_FLAGS,
    "slurm_partition_nodes_no_resp": FUTURE_FLAGS,
}


def parse(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # an empty label value is no label (Prometheus drops it; Slurm leaves such labels out)
            labels = frozenset((k, v) for k, v in sample.labels.items() if v != "")
            out[(sample.name, labels)] = sample.value
    return out


def names(samples: dict[Key, float]) -> set[str]:
    return {name for name, _ in samples}


def slurm_native() -> dict[Key, float]:
    out: dict[Key, float] = {}
    for endpoint in ENDPOINTS:
        r = httpx.get(f"{SLURMCTLD_METRICS}/{endpoint}", timeout=10.0)
        r.raise_for_status()
        out.update(parse(r.text))
    return out


def documented_as_same() -> set[str]:
    """Our metrics docs/metrics.md lists as Slurm's own ("same" in the Slurm 26.05 column)."""
    rows = re.findall(r"^\| `(slurm_[a-z_]+)` \| same", (REPO / "docs" / "metrics.md").read_text(), re.M)
    return set(rows)


@pytest.fixture
def held_jobs(slurm_cluster: SlurmCluster) -> Iterator[list[str]]:
    name = f"native-cmp-{uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    try:
        for partition, nodes in ((slurm_cluster.partition, 1), (slurm_cluster.partition, 2), ("nodeset", 3)):
            out = slurm_cluster.cli(
                "sbatch", "--parsable", "--hold", "-p", partition, "-N", str(nodes), "-J", name, "-t", "5",
                "--chdir=/tmp", "-o", "/dev/null", "--wrap", "sleep 60",
            )  # fmt: skip
            ids.append(out.strip().split(";")[0])
        yield ids
    finally:
        if ids:
            slurm_cluster.cli("scancel", *ids, check=False)


async def test_exporter_matches_slurm_native_metrics(
    slurm_cluster: SlurmCluster, held_jobs: list[str]
) -> None:
    try:
        native = slurm_native()
    except httpx.HTTPError as e:
        pytest.fail(f"slurmctld 26.05 serves no metrics at {SLURMCTLD_METRICS} ({e})", pytrace=False)
    if not native:
        pytest.fail(
            "slurmctld 26.05 serves empty metrics: slurm.conf lacks MetricsType=metrics/openmetrics "
            "(testbed/slurm.sh writes it; restart: slurm.sh down 26.05 && testbed/up.sh)",
            pytrace=False,
        )

    registry = CollectorRegistry()
    options = CollectorOptions(per_user_metrics=True)  # Slurm's /metrics/jobs-users-accts
    auth = JwtKeyAuth(slurm_cluster.user, slurm_cluster.jwt_key_file)
    async with (
        SlurmClient(slurm_cluster.url, auth=auth) as slurm,
        Exporter(slurm, registry=registry, interval=1.0, options=options) as exporter,
    ):
        for attempt in range(1, 7):  # noqa: B007 (reported after the loop)
            before = slurm_native()
            assert await exporter.poller.refresh(), exporter.poller.status.last_error
            ours = parse(generate_latest(registry).decode())
            after = slurm_native()
            # every held job seen on both sides
            held_ours = ours.get(("slurm_jobs_hold", frozenset()), 0)
            held_theirs = after.get(("slurm_jobs_hold", frozenset()), 0)
            shared = sorted(names(ours) & names(after))
            moving = {k for k in after if before.get(k) != after[k]}
            mismatches: list[str] = []
            label_diffs: list[str] = []
            differences: list[str] = []
            for name in shared:
                our_keys = {k for k in ours if k[0] == name}
                their_keys = {k for k in after if k[0] == name}
                # Slurm lists FUTURE nodes per node; slurmrestd's node list does not return them
                extra = {k for k in their_keys - our_keys if not dict(k[1]).get("node", "").startswith("ns-")}
                if our_keys - their_keys or extra:
                    label_diffs.append(
                        f"{name}: ours only {sorted(our_keys - their_keys)}, Slurm only {sorted(extra)}"
                    )
                if VOLATILE.match(name):
                    continue
                for key in sorted(our_keys & their_keys):
                    if key in moving or ours[key] == after[key]:
                        continue
                    line = f"{name}{dict(key[1])}: ours {ours[key]:g}, Slurm {after[key]:g}"
                    (differences if name in KNOWN_DIFFERENCES else mismatches).append(line)
            if held_ours >= 3 and held_theirs >= 3 and not mismatches and not label_diffs:
                break
            await asyncio.sleep(1.0)

    documented = documented_as_same()
    missing_in_slurm = sorted(documented - names(native) - names(after))
    ours_only = sorted(names(ours) - names(after))
    report = [
        f"shared names: {len(shared)} (ours {len(names(ours))}, Slurm's {len(names(after))}); "
        f"attempts {attempt}",
        f"ours only: {', '.join(ours_only)}",
        "known differences: " + ("; ".join(differences) or "none seen"),
        "mismatches: " + ("; ".join(mismatches) or "none"),
        "label differences: "
        + ("; ".join(label_diffs) or "none (Slurm also lists FUTURE nodes ns-* per node)"),
    ]
    print("\n".join(report))
    assert held_ours >= 3 and held_theirs >= 3, (held_ours, held_theirs)
    assert not missing_in_slurm, f"docs/metrics.md says Slurm serves these, it does not: {missing_in_slurm}"
    assert not label_diffs, "\n".join(label_diffs)
    assert not mismatches, "\n".join(mismatches)

"""`python -m tools.bench_exporter`: what a refresh and a scrape cost.

1. Synthetic (pure, no server, no Slurm): a snapshot of 10,000 jobs and 1,000 nodes; the time to turn
   it into metric families (once per new snapshot) and the time of a scrape served from the cache
   (`generate_latest` of a registry holding the collector), plus the exposition's size.
2. Live, against the testbed's default cluster (read from .testbed/env) with whatever jobs exist: a
   refresh that lists every job, a refresh answered "not modified", and a scrape.
3. The process's RSS.

Targets: a scrape from cache <= 50 ms, a refresh <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from exporter._collector import CollectorOptions, SlurmCollector, snapshot_families
from exporter._poller import SnapshotPoller
from exporter._snapshot import PollerStatus, Snapshot
from exporter.main import metrics_page, start_metrics_server
from slurm_client import Diag, Job, JobState, Node, NodeState, Partition, SlurmClient

DEFAULT_ENV = Path(__file__).resolve().parent.parent / ".testbed" / "env"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PENDING_REASONS = (
    "Resources",
    "Priority",
    "None",
    "JobHeldUser",
    "Dependency",
    "BeginTime",
    "QOSMaxJobsPerUserLimit",
)
SCRAPE_TARGET_MS = 50.0
REFRESH_TARGET_S = 1.0


def synthetic_snapshot(jobs: int, nodes: int, partitions: int, seed: int = 7) -> Snapshot:
    """A busy cluster: nodes split over partitions, 40 % running, 50 % pending, 10 % finished."""
    rng = random.Random(seed)
    node_names = [f"node{i:05d}" for i in range(nodes)]
    per_part = max(1, nodes // partitions)
    part_names = [f"part{p}" for p in range(partitions)]
    node_list = []
    for i, name in enumerate(node_names):
        state = rng.choice((NodeState.ALLOCATED, NodeState.MIXED, NodeState.IDLE, NodeState.ALLOCATED))
        flags = frozenset({"DRAIN"}) if i % 97 == 0 else frozenset()
        gpus = 4 if i % 4 == 0 else 0
        node_list.append(
            Node(
                name=name,
                state=state,
                state_flags=flags,
                cpus_total=64,
                cpus_allocated=64
                if state is NodeState.ALLOCATED
                else (16 if state is NodeState.MIXED else 0),
                memory_total_mb=256_000,
                memory_allocated_mb=128_000 if state is not NodeState.IDLE else 0,
                gres={"gpu": gpus} if gpus else {},
                gres_used={"gpu": gpus // 2} if gpus else {},
                partitions=(part_names[min(i // per_part, partitions - 1)],),
            )
        )
    part_list = [
        Partition(
            name=name,
            nodes=tuple(node_names[p * per_part : (p + 1) * per_part if p < partitions - 1 else nodes]),
            total_nodes=len(node_names[p * per_part : (p + 1) * per_part if p < partitions - 1 else nodes]),
            total_cpus=64 * per_part,
        )
        for p, name in enumerate(part_names)
    ]
    job_list = []
    for job_id in range(1, jobs + 1):
        roll = rng.random()
        partition = rng.randrange(partitions)
        members = part_list[partition].nodes
        user = f"user{rng.randrange(200)}"
        account = f"acct{rng.randrange(20)}"
        if roll < 0.4:
            count = rng.randint(1, 4)
            start = rng.randrange(max(1, len(members) - count))
            job = Job(
                job_id=job_id,
                name=f"job{job_id}",
                state=JobState.RUNNING,
                partition=part_names[partition],
                nodes=tuple(members[start : start + count]),
                node_count=count,
                cpus=count * 16,
                user_name=user,
                account=account,
            )
        elif roll < 0.9:
            job = Job(
                job_id=job_id,
                name=f"job{job_id}",
                state=JobState.PENDING,
                state_reason=rng.choice(PENDING_REASONS),
                partition=part_names[partition],
                node_count=rng.randint(1, 8),
                user_name=user,
                account=account,
            )
        else:
            job = Job(
                job_id=job_id,
                name=f"job{job_id}",
                state=rng.choice((JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)),
                partition=part_names[partition],
                user_name=user,
                account=account,
            )
        job_list.append(job)
    diag = Diag(
        server_thread_count=3, schedule_cycle_last_us=1200, schedule_cycle_mean_us=900, bf_cycle_last_us=5000
    )
    return Snapshot(
        jobs=tuple(job_list),
        nodes=tuple(node_list),
        partitions=tuple(part_list),
        diag=diag,
        taken_at=time.time(),
        taken_monotonic=time.monotonic(),
    )


def median_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, max) milliseconds of `repeat` calls."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, max(seconds) * 1000


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER TARGET"


def http_get_ms(url: str, repeat: int) -> tuple[float, float, int]:
    """(median, max) milliseconds of GET `url` over one keep-alive connection, and the body size."""
    with httpx.Client() as http:
        size = len(http.get(url).content)
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            http.get(url).raise_for_status()
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, max(seconds) * 1000, size


def bench_scrapes(
    label: str, status: Callable[[], PollerStatus], options: CollectorOptions, repeat: int
) -> None:
    """The ways a scrape can be served, for one snapshot."""
    registry = CollectorRegistry()
    collector = SlurmCollector(status, stale_after=3600.0, options=options)
    registry.register(collector)
    page = metrics_page(registry, collector)
    snapshot = status().snapshot
    assert snapshot is not None

    def build() -> None:
        snapshot_families(snapshot, options)

    def warm() -> None:  # a new snapshot: families and their rendering are built
        SlurmCollector(status, stale_after=3600.0, options=options).warm(render=True)

    def registry_scrape() -> None:
        generate_latest(registry)

    build_med, build_max = median_ms(build, repeat)
    warm_med, warm_max = median_ms(warm, repeat)
    page()
    page_med, page_max = median_ms(page, repeat)
    registry_med, registry_max = median_ms(registry_scrape, repeat)
    server, thread = start_metrics_server("127.0.0.1", 0, page)
    try:
        http_med, http_max, size = http_get_ms(f"http://127.0.0.1:{server.server_address[1]}/metrics", repeat)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    series = sum(1 for line in page().splitlines() if line and not line.startswith(b"#"))
    ok = http_med <= SCRAPE_TARGET_MS
    print(f"  [{label}] {series:,} series, {size / 1024:.0f} KiB")
    print(f"    families from a new snapshot:        {build_med:6.1f} ms median ({build_max:.1f} max)")
    print(
        f"    families + rendering of a new snapshot (worker thread after a refresh, not on the scrape "
        f"path): {warm_med:.1f} ms median ({warm_max:.1f} max)"
    )
    print(f"    scrape from cache, page only:        {page_med:6.2f} ms median ({page_max:.2f} max)")
    print(
        f"    scrape from cache, HTTP GET /metrics: {http_med:5.2f} ms median ({http_max:.2f} max) "
        f"[target <= {SCRAPE_TARGET_MS:.0f} ms: {verdict(ok)}]"
    )
    print(
        f"    shared-registry scrape (generate_latest of the registry, when the runner serves it): "
        f"{registry_med:.1f} ms median ({registry_max:.1f} max)"
    )


def bench_synthetic(jobs: int, nodes: int, partitions: int, repeat: int) -> None:
    snapshot = synthetic_snapshot(jobs, nodes, partitions)
    status = PollerStatus(snapshot=snapshot, last_ok=True, last_duration=0.0)
    print(f"synthetic snapshot: {jobs:,} jobs, {nodes:,} nodes, {partitions} partitions")
    bench_scrapes("default", lambda: status, CollectorOptions(), repeat)
    bench_scrapes("per-user metrics on", lambda: status, CollectorOptions(per_user_metrics=True), repeat)


def read_env_file(path: Path) -> dict[str, str]:
    script = 'set -a; . "$1"; set +a; env -0'
    done = subprocess.run(
        ["bash", "-c", script, "bench", str(path)], check=True, capture_output=True, env={}, timeout=30
    )
    return dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)


async def bench_live(env: dict[str, str], version: str, repeat: int) -> None:
    client = SlurmClient.from_env(version, env=env)
    host = urlparse(client.base_url).hostname
    if host not in LOOPBACK:
        await client.aclose()
        raise SystemExit(f"refusing to bench a non-loopback slurmrestd: {client.base_url}")
    async with client:
        print(f"live: Slurm {version} at {client.base_url} (REST {client.api_version})")
        full = SnapshotPoller(client, interval=1.0, full_relist_interval=0.0)  # every refresh lists all
        polling = SnapshotPoller(client, interval=1.0)
        timings: dict[str, list[float]] = {"full": [], "polled": []}
        for poller, key in ((full, "full"), (polling, "polled")):
            for _ in range(repeat):
                started = time.perf_counter()
                ok = await poller.refresh()
                timings[key].append(time.perf_counter() - started)
                if not ok:
                    raise SystemExit(f"refresh failed: {poller.status.last_error}")
        snapshot = polling.status.snapshot
        assert snapshot is not None
        jobs = len(snapshot.jobs)
        answers = dict(polling.status.job_polls)
        for key, label in (
            ("full", "refresh listing all jobs"),
            ("polled", "refresh with update_time polling"),
        ):
            med = statistics.median(timings[key])
            print(
                f"  {label}: {med * 1000:.1f} ms median ({max(timings[key]) * 1000:.1f} max) over "
                f"{repeat} [target <= {REFRESH_TARGET_S:.0f} s: {verdict(med <= REFRESH_TARGET_S)}]"
            )
        print(f"  jobs in the queue: {jobs}; job poll answers: {answers}")
        bench_scrapes("live snapshot", lambda: polling.status, CollectorOptions(), repeat)


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size in MiB."""
    current = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_exporter", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--env-file", type=Path, default=Path(os.environ.get("TESTBED_ENV", DEFAULT_ENV)))
    parser.add_argument("--slurm-version", help="testbed cluster (default: the env file's SLURM_VERSION)")
    parser.add_argument("--no-live", action="store_true", help="only the synthetic part")
    args = parser.parse_args(argv)

    bench_synthetic(args.jobs, args.nodes, args.partitions, args.repeat)
    current, peak = rss_mib()
    print(f"RSS after the synthetic part: {current:.0f} MiB (peak {peak:.0f} MiB)")
    if not args.no_live:
        if not args.env_file.exists():
            print(f"{args.env_file} does not exist: bring the testbed up (make testbed-up)", file=sys.stderr)
            return 2
        env = read_env_file(args.env_file)
        version = args.slurm_version or env.get("SLURM_VERSION", "26.05")
        asyncio.run(bench_live(env, version, args.repeat))
        current, peak = rss_mib()
        print(f"RSS at the end: {current:.0f} MiB (peak {peak:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

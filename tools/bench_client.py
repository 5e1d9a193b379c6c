"""`python -m tools.bench_client`: the client's cost over bare httpx, on the live testbed.

Measured in one run against the default testbed cluster (read from .testbed/env):

* listing all jobs with 2,000 jobs in the queue (held jobs are submitted to get there), as jobs
  listed per second, through `SlurmClient.list_jobs()` and through a bare `httpx` GET + JSON decode
  of the same URL;
* submitting held jobs one at a time from one keep-alive connection, through
  `SlurmClient.submit_job()` and through a bare `httpx` POST of the same JSON body.

The two sides alternate in rounds so that both see the same queue. Every job the bench submitted
is cancelled at the end, whatever happens. Loops are bounded, and only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from slurm_client import JobSpec, JwtKeyAuth, SlurmClient, StaticTokenAuth
from slurm_client._versions import adapter_for  # the bench builds the same request body by hand

DEFAULT_ENV = Path(__file__).resolve().parent.parent / ".testbed" / "env"
SLEEPER = "#!/bin/sh\nsleep 600\n"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def read_env_file(path: Path) -> dict[str, str]:
    """Variables of a shell-sourceable env file (it may refer to its own variables)."""
    script = 'set -a; . "$1"; set +a; env -0'
    done = subprocess.run(
        ["bash", "-c", script, "bench", str(path)], check=True, capture_output=True, env={}, timeout=30
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Operations per second over the whole run (mean: pauses and GC count)."""
        total = sum(self.seconds)
        return len(self.seconds) / total if total else 0.0

    @property
    def median_rate(self) -> float:
        """Operations per second at the median operation (robust to a noisy, shared machine)."""
        return 1 / statistics.median(self.seconds) if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1000 if self.seconds else 0.0


def ratios(ours: Timings, bare: Timings) -> str:
    return f"ratio {ours.rate / bare.rate:.2f} (mean), {ours.median_rate / bare.median_rate:.2f} (median)"


async def timed(timings: Timings, call: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await call()
    timings.seconds.append(time.perf_counter() - started)


class Bench:
    def __init__(self, env: dict[str, str], slurm_version: str, jobs_wanted: int, submits: int, lists: int):
        suffix = "_" + slurm_version.replace(".", "_")
        self.url = env[f"SLURMRESTD_URL{suffix}"]
        host = urlparse(self.url).hostname or ""
        if host not in LOOPBACK:
            raise SystemExit(f"refusing to benchmark a non-loopback slurmrestd: {self.url}")
        self.user = env.get(f"SLURM_USER{suffix}") or "slurm"
        key = env.get(f"SLURM_JWT_KEY{suffix}")
        token = env.get(f"SLURM_JWT{suffix}")
        if key:
            self.auth: JwtKeyAuth | StaticTokenAuth = JwtKeyAuth(self.user, key)
        elif token:
            self.auth = StaticTokenAuth(self.user, token)
        else:
            raise SystemExit(f"no SLURM_JWT_KEY{suffix} or SLURM_JWT{suffix} in the env file")
        self.slurm_version = slurm_version
        self.partition = env.get("SLURM_PARTITION", "slurm-bridge")
        self.jobs_wanted = jobs_wanted
        self.submits = submits
        self.lists = lists
        self.run_tag = f"slc-bench-{uuid.uuid4().hex[:6]}"
        self.submitted: list[int] = []

    def spec(self) -> JobSpec:
        return JobSpec(name=self.run_tag, partition=self.partition, hold=True, script=SLEEPER)

    def raw_headers(self) -> dict[str, str]:
        token = self.auth.current_token().reveal()
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token, "Accept": "application/json"}

    async def fill_queue(self, client: SlurmClient) -> int:
        present = len((await client.list_jobs()).jobs)
        missing = max(0, self.jobs_wanted - present)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(missing):
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                result = await client.submit_job(self.spec())
                self.submitted.append(result.job_id)

        await asyncio.gather(*(worker() for _ in range(8)))
        return present + missing

    async def run(self) -> None:
        async with (
            SlurmClient(self.url, auth=self.auth, max_connections=8) as client,
            httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(60.0)) as raw,
        ):
            version = client.api_version
            adapter = adapter_for(version)
            print(f"slurm_client bench: {self.url} (Slurm {self.slurm_version}, REST API {version})")
            try:
                started = time.perf_counter()
                in_queue = await self.fill_queue(client)
                print(
                    f"queue: {in_queue} jobs ({len(self.submitted)} held jobs submitted in "
                    f"{time.perf_counter() - started:.1f} s)"
                )
                await self.bench_list(client, raw, adapter.list_jobs(None).path, in_queue)
                await self.bench_submit(client, raw, adapter.submit_job(self.spec()).path, version)
            finally:
                await self.cleanup(client)

    async def bench_list(self, client: SlurmClient, raw: httpx.AsyncClient, path: str, in_queue: int) -> None:
        ours, bare = Timings(), Timings()
        counts: list[int] = []

        async def list_with_client() -> None:
            counts.append(len((await client.list_jobs()).jobs))

        async def list_with_httpx() -> None:
            response = await raw.get(path, headers=self.raw_headers())
            response.raise_for_status()
            counts.append(len(response.json()["jobs"]))

        await list_with_client()  # warm both connections
        await list_with_httpx()
        for _ in range(self.lists):
            await timed(ours, list_with_client)
            await timed(bare, list_with_httpx)
        jobs = statistics.median(counts)
        print(
            f"list all jobs ({jobs:.0f} jobs, {self.lists} lists each): "
            f"client {ours.rate * jobs:,.0f} jobs/s ({ours.p50_ms:.0f} ms/list) | "
            f"bare httpx {bare.rate * jobs:,.0f} jobs/s ({bare.p50_ms:.0f} ms/list) | " + ratios(ours, bare)
        )

    async def bench_submit(
        self, client: SlurmClient, raw: httpx.AsyncClient, path: str, version: str
    ) -> None:
        ours, bare = Timings(), Timings()
        body = adapter_for(version).submit_job(self.spec()).body

        async def submit_with_client() -> None:
            self.submitted.append((await client.submit_job(self.spec())).job_id)

        async def submit_with_httpx() -> None:
            response = await raw.post(path, json=body, headers=self.raw_headers())
            response.raise_for_status()
            self.submitted.append(int(response.json()["job_id"]))

        rounds, per_round = max(1, self.submits // 25), min(25, self.submits)
        for _ in range(rounds):
            for _ in range(per_round):
                await timed(ours, submit_with_client)
            for _ in range(per_round):
                await timed(bare, submit_with_httpx)
        print(
            f"submit held job ({len(ours.seconds)} each, one connection): "
            f"client {ours.rate:,.0f}/s (p50 {ours.p50_ms:.1f} ms) | "
            f"bare httpx {bare.rate:,.0f}/s (p50 {bare.p50_ms:.1f} ms) | " + ratios(ours, bare)
        )

    async def cleanup(self, client: SlurmClient) -> None:
        started = time.perf_counter()
        pending = list(self.submitted)
        failures = 0

        async def worker() -> None:
            nonlocal failures
            while pending:
                job_id = pending.pop()
                try:
                    await client.cancel_job(job_id)
                except Exception:  # keep cancelling the rest; report the count
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(8)))
        print(
            f"cleanup: cancelled {len(self.submitted) - failures} bench jobs in "
            f"{time.perf_counter() - started:.1f} s" + (f" ({failures} failed)" if failures else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_client", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--env-file", type=Path, default=Path(os.environ.get("TESTBED_ENV", DEFAULT_ENV)))
    parser.add_argument(
        "--slurm-version", help="testbed cluster to use (default: the env file's SLURM_VERSION)"
    )
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the queue while listing (max 5000)")
    parser.add_argument("--submits", type=int, default=200, help="submits per side (max 1000)")
    parser.add_argument("--lists", type=int, default=10, help="full listings per side (max 100)")
    args = parser.parse_args(argv)
    if not args.env_file.exists():
        print(
            f"{args.env_file} does not exist: bring the testbed up first (make testbed-up)", file=sys.stderr
        )
        return 2
    env = read_env_file(args.env_file)
    slurm_version = args.slurm_version or env.get("SLURM_VERSION") or "26.05"
    per_version = args.env_file.parent / f"slurm-{slurm_version}.env"
    if f"SLURMRESTD_URL_{slurm_version.replace('.', '_')}" not in env and per_version.exists():
        env.update(read_env_file(per_version))
    bench = Bench(
        env,
        slurm_version,
        jobs_wanted=min(max(args.jobs, 1), 5000),
        submits=min(max(args.submits, 1), 1000),
        lists=min(max(args.lists, 1), 100),
    )
    asyncio.run(bench.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

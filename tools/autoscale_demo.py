"""`make demo-autoscale`: Slurm's queue scales a NodeSet of real slurmd pods, through the real chain.

exporter (slurm_partition_nodes_demanded) -> Prometheus -> prometheus-adapter -> aggregated External
metrics API -> kube-controller-manager's HPA (deploy/monitoring/hpa-nodeset.yaml) -> NodeSet `ns` ->
the bridge's NodeSet controller -> slurmd pods -> Slurm nodes ns-N in partition `nodeset`.

The scenario submits a burst of one-node jobs to the empty partition (one of them long), samples demand,
replicas and Slurm's node states every SAMPLE_SECONDS until the set is back to 0, and writes a CSV and a
PNG plot. tests/testbed/test_autoscale_e2e.py runs the same scenario and checks it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HPA_MANIFEST = REPO / "deploy" / "monitoring" / "hpa-nodeset.yaml"
NAMESPACE = "slurm-bridge-system"
NODESET = "ns"
PARTITION = "nodeset"
SAMPLE_SECONDS = 2.0


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the jobs were submitted
    demand: float | None  # slurm_partition_nodes_demanded as Prometheus has it (None: no series)
    spec_replicas: int  # what the HPA asks for
    replicas: int  # slurmd pods (NodeSet status)
    idle: int  # Slurm nodes of the partition, by state
    allocated: int
    draining: int
    jobs_pending: int
    jobs_running: int


@dataclass(frozen=True)
class Scenario:
    short_jobs: int = 3
    short_seconds: int = 30
    long_seconds: int = 75  # one more job, still running when the short ones end: kept through scale-in
    timeout: float = 360.0


class DemoTestbed:
    """kubectl, the Slurm CLIs and Prometheus of the local testbed, from .testbed/env."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.prometheus = env.get("PROMETHEUS_URL", "http://127.0.0.1:17490")

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.run("kubectl", *args, check=check)

    def nodeset(self) -> dict[str, object]:
        found: dict[str, object] = json.loads(
            self.kubectl("-n", NAMESPACE, "get", "nodeset", NODESET, "-o", "json")
        )
        return found

    def demand(self) -> float | None:
        query = f'max(slurm_partition_nodes_demanded{{partition="{PARTITION}"}})'
        url = f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                result = json.load(answer)["data"]["result"]
        except (OSError, ValueError, KeyError):
            return None
        return float(result[0]["value"][1]) if result else None

    def sample(self, t: float) -> Sample:
        ns = self.nodeset()
        spec = ns.get("spec") or {}
        status = ns.get("status") or {}
        assert isinstance(spec, dict)
        assert isinstance(status, dict)
        states = self.run("sinfo", "-h", "-N", "-p", PARTITION, "-o", "%T").split()
        jobs = self.run("squeue", "-h", "-p", PARTITION, "-o", "%T").split()
        return Sample(
            t=round(t, 1),
            demand=self.demand(),
            spec_replicas=int(spec.get("replicas") or 0),
            replicas=int(status.get("replicas") or 0),
            idle=sum(1 for s in states if s == "idle"),
            allocated=sum(1 for s in states if s in ("allocated", "mixed")),
            draining=sum(1 for s in states if "drain" in s or s == "drng"),
            jobs_pending=jobs.count("PENDING"),
            jobs_running=jobs.count("RUNNING"),
        )

    def submit(self, seconds: int, name: str) -> str:
        out = self.run(
            "sbatch",
            "--parsable",
            "-p",
            PARTITION,
            "-N1",
            "--exclusive",
            "-J",
            name,
            "--wrap",
            f"sleep {seconds}",
        )
        return out.strip().split(";")[0]

    def job_states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """State of each job squeue still knows (finished jobs stay MinJobAge seconds)."""
        out = self.run("squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T", check=False)
        return dict(line.split("|", 1) for line in out.split() if "|" in line)


@dataclass
class Outcome:
    samples: list[Sample]
    jobs: dict[str, str]  # job id -> name
    last_state: dict[str, str]  # job id -> last state squeue showed


def run_scenario(
    bed: DemoTestbed, scenario: Scenario = Scenario(), *, on_sample: Callable[[Sample], None] | None = None
) -> Outcome:
    """Apply the HPA, submit the jobs, sample until the set is empty again."""
    bed.kubectl("apply", "-f", str(HPA_MANIFEST))
    # Kubernetes 1.37's HPA scales from zero only a target it scaled to zero itself (condition
    # ScaledToZero); a target someone else left at 0 counts as switched off. Hand it a set of 1.
    bed.kubectl("-n", NAMESPACE, "scale", f"nodeset/{NODESET}", "--replicas=1")
    jobs = {bed.submit(scenario.long_seconds, "autoscale-long"): "long"}
    for i in range(scenario.short_jobs):
        jobs[bed.submit(scenario.short_seconds, f"autoscale-short-{i}")] = f"short-{i}"
    t0 = time.monotonic()
    samples: list[Sample] = []
    last_state: dict[str, str] = {}
    while time.monotonic() - t0 < scenario.timeout:
        last_state.update(bed.job_states(list(jobs)))
        sample = bed.sample(time.monotonic() - t0)
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        grew = any(s.replicas > 0 for s in samples)
        queue_empty = sample.jobs_pending == 0 and sample.jobs_running == 0
        if grew and queue_empty and sample.spec_replicas == 0 and sample.replicas == 0:
            break
        time.sleep(SAMPLE_SECONDS)
    return Outcome(samples, jobs, last_state)


def write_csv(samples: Sequence[Sample], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        for sample in samples:
            writer.writerow(asdict(sample))


def plot(samples: Sequence[Sample], path: Path) -> None:
    import matplotlib  # the demo's extra (pip install '.[demo]'), not a runtime dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.plot(
        t,
        [s.demand if s.demand is not None else float("nan") for s in samples],
        label="nodes demanded (Prometheus)",
        lw=2,
    )
    ax.step(t, [s.spec_replicas for s in samples], where="post", label="NodeSet spec.replicas (HPA)", lw=2)
    ax.step(t, [s.replicas for s in samples], where="post", label="slurmd pods", ls="--")
    ax.step(t, [s.allocated for s in samples], where="post", label="Slurm nodes allocated", ls=":")
    ax.step(t, [s.idle for s in samples], where="post", label="Slurm nodes idle", ls=":")
    ax.set_xlabel("seconds since the jobs were submitted")
    ax.set_ylabel("nodes")
    ax.set_title("Slurm queue -> exporter -> Prometheus -> adapter -> HPA -> NodeSet -> slurmd")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    from tools.demo import TESTBED, testbed_environment

    env = testbed_environment()
    bed = DemoTestbed(env)
    out_dir = Path(os.environ.get("DEMO_OUT", REPO / "docs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (TESTBED / "demo-autoscale-bridge.log").open("w")
    bridge = subprocess.Popen(
        [sys.executable, "-m", "slurm_bridge.cli", "run", "--config", str(TESTBED / "bridge.yaml")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    print(f"bridge running (log: {log.name}); HPA {HPA_MANIFEST.relative_to(REPO)}", flush=True)
    print(
        f"{'t/s':>6} {'demand':>6} {'spec':>4} {'pods':>4} {'idle':>4} {'alloc':>5} {'drain':>5} "
        f"{'pend':>4} {'run':>4}"
    )

    def show(s: Sample) -> None:
        demand = "-" if s.demand is None else f"{s.demand:g}"
        print(
            f"{s.t:6.1f} {demand:>6} {s.spec_replicas:4d} {s.replicas:4d} {s.idle:4d} {s.allocated:5d} "
            f"{s.draining:5d} {s.jobs_pending:4d} {s.jobs_running:4d}",
            flush=True,
        )

    try:
        outcome = run_scenario(bed, on_sample=show)
    finally:
        bed.kubectl("delete", "-f", str(HPA_MANIFEST), "--ignore-not-found", check=False)
        bed.kubectl("-n", NAMESPACE, "scale", f"nodeset/{NODESET}", "--replicas=0", check=False)
        deadline = time.monotonic() + 60  # let the bridge drain and remove what is left
        while time.monotonic() < deadline and bed.sample(0).replicas:
            time.sleep(1)
        bridge.terminate()
        bridge.wait(timeout=20)
    for job_id, name in outcome.jobs.items():
        print(f"job {job_id} ({name}): {outcome.last_state.get(job_id, '?')}")
    write_csv(outcome.samples, out_dir / "autoscale.csv")
    plot(outcome.samples, out_dir / "autoscale.png")
    print(f"wrote {out_dir / 'autoscale.png'} and {out_dir / 'autoscale.csv'}")


if __name__ == "__main__":
    main()

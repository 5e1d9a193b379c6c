"""`make bench-bridge`: what the bridge adds to Slurm, measured beside the raw rates of the same run.

One table (figure, raw, bridge, ratio, target, met?), printed and written as JSON (and a PNG when
matplotlib, from the `demo` extra, is installed), so runs can be compared:

- latency, paired: each round a bare REST submit (timed until Slurm says RUNNING) and a pod created
  through the bridge (timed until bound) start at the same instant, so both face the same phase of
  Slurm's 1 s scheduling timer; the bridge's added latency is the difference, p50 and p99, and how
  many rounds it cost one more tick; and job start (Slurm's `start_time`, whole seconds) → pod bound;
- a burst of pods through the bridge against a bare script doing the same slurmrestd submits and binds;
- wide bursts (1,000 pods; 200 gangs of 4) on a partition made for the run with room for every job
  at once, and deleting the 1,000, each against a bare script doing the same submits, label patches,
  binds and cancels;
- the bridge's RSS, its CPU while nothing changes, and how its job polls were answered.

The bridge runs with a scheduler name, namespace, Lease and cluster id of its own (`bench-speed`), so
it never touches another bridge's pods or jobs on a shared testbed. Bounded loops, loopback only.
Figures from a small shared machine are noisy: compare runs, not single numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from slurm_client import expand_hostlist
from tools.demo import TESTBED, testbed_environment

NS = "bench-speed"
SCHEDULER = "slurm-bridge-bench-speed"
JOB_ID_LABEL = "scheduler.slinky.slurm.net/slurm-jobid"
POLL = 0.02  # seconds between looks, on both sides
COLLECTION_TIMEOUT = 300  # deleting 1,000 pods in one call took longer than 30 s on 2 cores


# --- the table (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: str
    raw: float | None  # the same figure without the bridge (None: no raw counterpart)
    bridge: float | None  # None: not measured in this run
    unit: str
    target: str
    met: bool | None  # None: not measured


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1); with few values p99 is the maximum."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figures:
    raw_to_running: list[float]  # Slurm's own submit -> RUNNING, per round
    pod_to_bound: list[float]  # pod created -> bound through the bridge, per round
    start_to_bound: list[float]  # job start_time (whole seconds) -> bound seen
    burst_pods: int
    burst_bridge_seconds: float | None  # all bound
    burst_raw_seconds: float | None  # the bare script's submits + RUNNING + binds
    rss_mib: float | None
    idle_cpu_share: float | None  # of one core
    polls: dict[str, float]
    rates: tuple[Rate, ...] = ()  # the wide bursts and the mass delete


@dataclass(frozen=True)
class Rate:
    """One thing done `count` times, by the bare script and by the bridge, in the same run."""

    figure: str
    count: int
    raw_seconds: float | None
    bridge_seconds: float | None


def table(f: Figures) -> list[Row]:
    rows: list[Row] = []
    if f.raw_to_running and f.pod_to_bound:
        added = [pod - raw for pod, raw in zip(f.pod_to_bound, f.raw_to_running, strict=True)]
        for name, share, limit in (("p50", 0.5, 0.05), ("p99", 0.99, 0.3)):
            extra = percentile(added, share)
            rows.append(
                Row(
                    f"added latency {name}: {extra:+.3f} s (pod created->bound minus Slurm submit->RUNNING, "
                    f"paired rounds; {len(added)} rounds)",
                    percentile(f.raw_to_running, share),
                    percentile(f.pod_to_bound, share),
                    "s",
                    f"added <= {limit} s",
                    extra <= limit,
                )
            )
        slipped = sum(1 for extra in added if extra > 0.5)
        rows.append(
            Row(
                "rounds where the bridge's job started one Slurm tick (1 s) after the raw one",
                None,
                float(slipped),
                f"of {len(added)}",
                "",
                None,
            )
        )
    if f.start_to_bound:
        worst = percentile(f.start_to_bound, 0.99)
        rows.append(
            Row(
                "job start->pod bound p99 (start_time: 1 s steps)", None, worst, "s", "<= 0.2 s", worst <= 0.2
            )
        )
    if f.burst_bridge_seconds is not None and f.burst_raw_seconds is not None:
        raw_rate = f.burst_pods / f.burst_raw_seconds
        bridge_rate = f.burst_pods / f.burst_bridge_seconds
        rows.append(
            Row(
                f"burst of {f.burst_pods} pods: all bound, pods/s",
                raw_rate,
                bridge_rate,
                "1/s",
                ">= 0.95 x bare script",
                bridge_rate >= 0.95 * raw_rate,
            )
        )
    for rate in f.rates:
        if rate.raw_seconds and rate.bridge_seconds:
            raw_rate, bridge_rate = rate.count / rate.raw_seconds, rate.count / rate.bridge_seconds
            rows.append(
                Row(
                    rate.figure,
                    raw_rate,
                    bridge_rate,
                    "1/s",
                    ">= 0.95 x bare script",
                    bridge_rate >= 0.95 * raw_rate,
                )
            )
    rows.append(
        Row(
            "bridge RSS",
            None,
            f.rss_mib,
            "MiB",
            "<= 200 MiB",
            None if f.rss_mib is None else f.rss_mib <= 200,
        )
    )
    idle = f.idle_cpu_share
    rows.append(
        Row(
            "bridge CPU, nothing changing",
            None,
            idle,
            "core",
            "<= 0.02",
            None if idle is None else idle <= 0.02,
        )
    )
    for answer in ("changed", "repeated", "not_modified"):
        if answer in f.polls:
            rows.append(Row(f"job polls answered {answer}", None, f.polls[answer], "", "", None))
    return rows


def ratio(row: Row) -> float | None:
    if row.raw is None or row.bridge is None or row.raw == 0:
        return None
    return row.bridge / row.raw


def render(rows: Sequence[Row]) -> str:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"

    header = ("figure", "raw", "bridge", "ratio", "unit", "target", "met?")
    lines = [header] + [
        (
            r.figure,
            num(r.raw),
            num(r.bridge),
            num(ratio(r)),
            r.unit,
            r.target,
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def poll_answers(metrics_text: str) -> dict[str, float]:
    """`slurm_bridge_job_polls_total` by answer, from a /metrics page."""
    found: dict[str, float] = {}
    for answer, value in re.findall(
        r'^slurm_bridge_job_polls_total\{answer="([a-z_]+)"\} (\S+)$', metrics_text, re.M
    ):
        found[answer] = float(value)
    return found


# --- talking to the testbed --------------------------------------------------------------------------


def wait(what: str, probe: Callable[[], bool], timeout: float = 120, every: float = POLL) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        time.sleep(every)


@contextmanager
def kube_http(kubeconfig: Path) -> Iterator[httpx.Client]:
    """A bare httpx client with the kubeconfig's client certificate (the "raw" side)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, key in (
            ("ca", "certificate-authority-data"),
            ("crt", "client-certificate-data"),
            ("key", "client-key-data"),
        ):
            path = Path(tmp) / name
            path.write_bytes(base64.b64decode(cluster.get(key) or user[key]))
            files[name] = str(path)
        context = ssl.create_default_context(cafile=files["ca"])
        context.load_cert_chain(files["crt"], files["key"])
        with httpx.Client(base_url=cluster["server"], verify=context, timeout=30) as client:
            yield client


def pod_body(
    name: str,
    scheduler: str = SCHEDULER,
    *,
    memory_mib: int = 32,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    limits = {"cpu": "100m", "memory": f"{memory_mib}Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "pause", "resources": {"limits": limits}}],
        },
    }


class Slurm:
    """The bare script's slurmrestd calls: submit, read one job, cancel."""

    def __init__(self, env: dict[str, str]) -> None:
        headers = {"X-SLURM-USER-NAME": "slurm", "X-SLURM-USER-TOKEN": env["SLURM_JWT"]}
        self.http = httpx.Client(base_url=env["SLURMRESTD_URL"], headers=headers, timeout=30)
        paths = self.http.get("/openapi/v3").json()["paths"]
        self.api = max(
            (p.split("/")[2] for p in paths if p.endswith("/job/submit")),
            key=lambda v: int(v.rsplit(".", 1)[1]),
        )

    def submit(
        self, name: str, *, partition: str = "slurm-bridge", memory_mib: int = 32, nodes: int = 1
    ) -> int:
        job: dict[str, Any] = {
            "name": name,
            "partition": partition,
            "current_working_directory": "/tmp",
            # What the bridge asks for a pod of 100m CPU and 32Mi under the testbed's config (see
            # `slurm-bridge explain`): 1 task of 1 CPU, 32 MB, the 60-minute default time limit. A
            # shorter limit would let Slurm's backfill start the raw job sooner than the bridge's.
            # A gang of `nodes` members: one task on each of `nodes` nodes (bridge/gang_translate.py).
            "tasks": nodes,
            "cpus_per_task": 1,
            "memory_per_node": {"set": True, "number": memory_mib} if self.api != "v0.0.38" else memory_mib,
            "time_limit": {"set": True, "number": 60} if self.api != "v0.0.38" else 60,
            "standard_output": "/dev/null",
        }
        if nodes > 1:
            job |= {"minimum_nodes": nodes, "maximum_nodes": nodes}
        if int(self.api.rsplit(".", 1)[1]) >= 43:
            # The job the bridge submits there: an allocation that launches nothing (EXTERNAL_JOB).
            external = {
                k: v for k, v in job.items() if k not in ("current_working_directory", "standard_output")
            }
            body: dict[str, Any] = {"job": {**external, "flags": ["EXTERNAL_JOB"]}}
        elif self.api == "v0.0.38":
            body = {
                "script": "#!/bin/sh\nsleep 600\n",
                "job": {**job, "environment": {"PATH": "/bin"}},
            }
        else:
            body = {"job": {**job, "environment": ["PATH=/bin"], "script": "#!/bin/sh\nsleep 600\n"}}
        answer = self.http.post(f"/slurm/{self.api}/job/submit", json=body)
        answer.raise_for_status()
        return int(answer.json()["job_id"])

    def job(self, job_id: int) -> dict[str, Any]:
        jobs = self.http.get(f"/slurm/{self.api}/job/{job_id}").json().get("jobs") or [{}]
        return dict(jobs[0])

    def running(self, job_id: int) -> bool:
        state = self.job(job_id).get("job_state")
        return "RUNNING" in (state if isinstance(state, list) else [state])

    def cancel(self, job_id: int) -> None:
        self.http.delete(f"/slurm/{self.api}/job/{job_id}")

    def states(self) -> dict[int, tuple[set[str], str]]:
        """Every job Slurm lists, in one read: id -> (state flags, node list)."""
        jobs = self.http.get(f"/slurm/{self.api}/jobs").json().get("jobs") or []
        out: dict[int, tuple[set[str], str]] = {}
        for job in jobs:
            state = job.get("job_state")
            out[int(job["job_id"])] = (
                set(state if isinstance(state, list) else [state]),
                str(job.get("nodes") or ""),
            )
        return out


def start_time(job: dict[str, Any]) -> float | None:
    value = job.get("start_time")
    if isinstance(value, dict):
        value = value.get("number") if value.get("set", True) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def bind(kube: httpx.Client, name: str, node: str) -> None:
    """The bare script's bind: one Binding, as kube-scheduler posts it."""
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    kube.post(f"/api/v1/namespaces/{NS}/pods/{name}/binding", json=binding).raise_for_status()


def pod(kube: httpx.Client, name: str) -> dict[str, Any]:
    answer = kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")
    return dict(answer.json()) if answer.status_code == 200 else {}


def delete_pods(kube: httpx.Client, prefix: str = "") -> None:
    kube.delete(
        f"/api/v1/namespaces/{NS}/pods", params={"gracePeriodSeconds": "0"}, timeout=COLLECTION_TIMEOUT
    )
    wait("pods deleted", lambda: not kube.get(f"/api/v1/namespaces/{NS}/pods").json()["items"], 120, 0.2)


def _raw_round(slurm: Slurm, i: int, began: float) -> float:
    job_id = slurm.submit(f"bench-raw-{i}")
    wait(f"raw job {job_id} RUNNING", lambda: slurm.running(job_id), 60)
    seconds = time.monotonic() - began
    slurm.cancel(job_id)
    return seconds


def _pod_round(kube: httpx.Client, slurm: Slurm, i: int, began: float) -> tuple[float, float | None]:
    name = f"single-{i}"
    kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body(name)).raise_for_status()
    wait(f"{name} bound", lambda: bool(pod(kube, name).get("spec", {}).get("nodeName")), 60)
    bound_wall = time.time()
    seconds = time.monotonic() - began
    label = pod(kube, name).get("metadata", {}).get("labels", {}).get(JOB_ID_LABEL)
    started = start_time(slurm.job(int(label))) if label else None
    kube.delete(f"/api/v1/namespaces/{NS}/pods/{name}", params={"gracePeriodSeconds": "0"})
    return seconds, None if started is None else max(0.0, bound_wall - started)


def paired_latency(
    kube: httpx.Client, slurm: Slurm, kube_too: httpx.Client, slurm_too: Slurm, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Each round, at one instant, the bare script submits a job and the bench creates a pod; each side
    is timed from that instant (raw: until Slurm says RUNNING; bridge: until the pod is bound), each
    polled every 20 ms in its own thread. Slurm starts jobs on a 1 s timer (TESTBED-FACTS), so the two
    face the same tick; a bridge that submits after the tick that starts the raw job waits one more
    tick, which is latency it really adds. A random pause before each round samples the timer's phase."""
    raw: list[float] = []
    bridged: list[float] = []
    start_to_bound: list[float] = []
    pause = random.Random(15)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(rounds):
            time.sleep(pause.uniform(0.2, 1.2))  # the cancelled job and the deleted pod are gone by then
            began = time.monotonic()
            raw_side = pool.submit(_raw_round, slurm, i, began)
            pod_side = pool.submit(_pod_round, kube_too, slurm_too, i, began)
            raw.append(raw_side.result())
            seconds, after_start = pod_side.result()
            bridged.append(seconds)
            if after_start is not None:
                start_to_bound.append(after_start)
            print(
                f"  round {i + 1}/{rounds}: Slurm {raw[-1]:.2f} s, bridge {bridged[-1]:.2f} s "
                f"({bridged[-1] - raw[-1]:+.3f} s)",
                flush=True,
            )
    return raw, bridged, start_to_bound


def bridge_burst(kube: httpx.Client, count: int) -> tuple[float, list[tuple[float, int]]]:
    began = time.monotonic()
    for i in range(count):
        kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body(f"burst-{i}")).raise_for_status()
    progress: list[tuple[float, int]] = []

    def all_bound() -> bool:
        items = kube.get(f"/api/v1/namespaces/{NS}/pods").json()["items"]
        bound = sum(1 for p in items if p["spec"].get("nodeName"))
        progress.append((time.monotonic() - began, bound))
        return bound >= count

    wait(f"{count} burst pods bound", all_bound, 300, 0.1)
    return time.monotonic() - began, progress


def raw_burst(kube: httpx.Client, slurm: Slurm, count: int) -> tuple[float, list[tuple[float, int]]]:
    """The bare script: submit every job, then bind each pod once its job runs (on the kwok node of the
    same name as the Slurm node)."""
    began = time.monotonic()
    jobs = [slurm.submit(f"bench-burst-{i}") for i in range(count)]
    names = [f"raw-{i}" for i in range(count)]
    for name in names:
        kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body(name, scheduler="nobody")).raise_for_status()
    waiting = dict(zip(names, jobs, strict=True))
    progress: list[tuple[float, int]] = []
    deadline = time.monotonic() + 300
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {len(waiting)} raw jobs never ran")
        for name, job_id in list(waiting.items()):
            job = slurm.job(job_id)
            state = job.get("job_state")
            if "RUNNING" not in (state if isinstance(state, list) else [state]):
                continue
            bind(kube, name, str(job.get("nodes") or ""))
            del waiting[name]
        progress.append((time.monotonic() - began, count - len(waiting)))
        time.sleep(POLL)
    seconds = time.monotonic() - began
    for job_id in jobs:
        slurm.cancel(job_id)
    return seconds, progress


# --- the wide bursts: room for every job at once ------------------------------------------------------

WIDE_PARTITION = "bench-wide"
WIDE_MEMORY_MIB = 16  # 1,000 jobs of 16 MB fit the 4 x 8 GB the testbed declares
PARTITION_ANNOTATION = "slinky.slurm.net/partition"  # the pod option (bridge/wellknown.py)
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}


@contextmanager
def wide_partition(env: dict[str, str]) -> Iterator[None]:
    """The testbed's 4 nodes of 4 CPUs hold 16 one-CPU jobs. For the wide bursts a partition is made
    for the run over the same nodes with each core shared by up to 64 jobs (OverSubscribe=FORCE:64,
    1,024 one-CPU slots), so neither side waits for Slurm to free room: the burst measures submits,
    starts and binds, not the testbed's size. Removed again afterwards."""
    create = (
        f"scontrol create PartitionName={WIDE_PARTITION} Nodes=slurm-bridge-[0-3] "
        "OverSubscribe=FORCE:64 MaxTime=INFINITE State=UP"
    )

    def scontrol(command: str) -> bool:
        return subprocess.run(["bash", "-c", command], env=env, capture_output=True).returncode == 0

    if not scontrol(create) and not scontrol(f"scontrol show partition {WIDE_PARTITION}"):
        raise RuntimeError(f"bench: could not make partition {WIDE_PARTITION}")
    try:
        yield
    finally:
        # Slurm keeps ended jobs for MinJobAge (120 s on the testbed); until then the partition is "in use"
        deadline = time.monotonic() + 180
        while not scontrol(f"scontrol delete PartitionName={WIDE_PARTITION}") and time.monotonic() < deadline:
            time.sleep(5)


def create_all(kube: httpx.Client, bodies: Sequence[dict[str, Any]], path: str = "pods") -> None:
    for body in bodies:
        kube.post(f"/api/v1/namespaces/{NS}/{path}", json=body).raise_for_status()


def pod_group(name: str, members: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "annotations": {PARTITION_ANNOTATION: WIDE_PARTITION}},
        "spec": {"minMember": members},
    }


def bound_count(kube: httpx.Client) -> int:
    items = kube.get(f"/api/v1/namespaces/{NS}/pods").json()["items"]
    return sum(1 for p in items if p["spec"].get("nodeName"))


def bridge_wide(
    kube: httpx.Client, pods: int, gangs: int, size: int
) -> tuple[float, list[tuple[float, int]]]:
    """Through the bridge: create every pod (and PodGroup) at once, then wait until all are bound."""
    began = time.monotonic()
    if gangs:
        for g in range(gangs):
            kube.post(
                f"/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{NS}/podgroups",
                json=pod_group(f"wg-{g}", size),
            ).raise_for_status()
            create_all(
                kube,
                [
                    pod_body(f"wg-{g}-{m}", memory_mib=WIDE_MEMORY_MIB, labels={POD_GROUP_LABEL: f"wg-{g}"})
                    for m in range(size)
                ],
            )
    else:
        wide = {PARTITION_ANNOTATION: WIDE_PARTITION}
        create_all(
            kube, [pod_body(f"wide-{i}", memory_mib=WIDE_MEMORY_MIB, annotations=wide) for i in range(pods)]
        )
    total = pods or gangs * size
    progress: list[tuple[float, int]] = []

    def all_bound() -> bool:
        progress.append((time.monotonic() - began, bound_count(kube)))
        return progress[-1][1] >= total

    wait(f"{total} wide-burst pods bound", all_bound, 900, 0.5)
    return time.monotonic() - began, progress


def raw_wide(
    kube: httpx.Client, slurm: Slurm, pods: int, gangs: int, size: int
) -> tuple[float, list[tuple[float, int]], list[int]]:
    """The bare script: every submit, then every pod, then (reading Slurm's whole job list once a
    round) each started job's pods labelled with its id and bound to its nodes."""
    began = time.monotonic()
    members: dict[int, list[str]] = {}
    if gangs:
        for g in range(gangs):
            job = slurm.submit(
                f"bench-wg-{g}", partition=WIDE_PARTITION, memory_mib=WIDE_MEMORY_MIB, nodes=size
            )
            members[job] = [f"rg-{g}-{m}" for m in range(size)]
    else:
        for i in range(pods):
            job = slurm.submit(f"bench-wide-{i}", partition=WIDE_PARTITION, memory_mib=WIDE_MEMORY_MIB)
            members[job] = [f"raw-wide-{i}"]
    create_all(
        kube,
        [
            pod_body(n, scheduler="nobody", memory_mib=WIDE_MEMORY_MIB)
            for names in members.values()
            for n in names
        ],
    )
    waiting = dict(members)
    progress: list[tuple[float, int]] = []
    total = sum(len(names) for names in members.values())
    deadline = time.monotonic() + 900
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {len(waiting)} raw wide jobs never ran")
        states = slurm.states()
        for job_id, names in list(waiting.items()):
            flags, nodes = states.get(job_id, (set(), ""))
            if "RUNNING" not in flags:
                continue
            for name, node in zip(names, expand_hostlist(nodes), strict=False):
                label = {"metadata": {"labels": {JOB_ID_LABEL: str(job_id)}}}
                kube.patch(
                    f"/api/v1/namespaces/{NS}/pods/{name}",
                    json=label,
                    headers={"Content-Type": "application/merge-patch+json"},
                ).raise_for_status()
                bind(kube, name, node)
            del waiting[job_id]
        progress.append((time.monotonic() - began, total - sum(len(n) for n in waiting.values())))
        time.sleep(0.1)
    return time.monotonic() - began, progress, list(members)


def ended(slurm: Slurm, job_ids: Sequence[int]) -> bool:
    states = slurm.states()
    return all(not (states.get(j, (set(), ""))[0] & ACTIVE) for j in job_ids)


def raw_cancel_all(slurm: Slurm, job_ids: Sequence[int]) -> float:
    """The bare script's cancels, one DELETE each, until Slurm lists every job ended."""
    began = time.monotonic()
    for job_id in job_ids:
        slurm.cancel(job_id)
    wait("raw wide jobs ended", lambda: ended(slurm, job_ids), 600, 0.2)
    return time.monotonic() - began


def bridge_delete_all(kube: httpx.Client, slurm: Slurm) -> float:
    """Delete every bench pod in one call; time until Slurm lists each of their jobs ended."""
    items = kube.get(f"/api/v1/namespaces/{NS}/pods").json()["items"]
    job_ids = sorted({int(j) for p in items if (j := p["metadata"].get("labels", {}).get(JOB_ID_LABEL))})
    began = time.monotonic()
    kube.delete(
        f"/api/v1/namespaces/{NS}/pods", params={"gracePeriodSeconds": "0"}, timeout=COLLECTION_TIMEOUT
    )
    wait("the bridge's wide jobs ended", lambda: ended(slurm, job_ids), 600, 0.2)
    return time.monotonic() - began


def delete_pod_groups(kube: httpx.Client) -> None:
    kube.delete(f"/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{NS}/podgroups")


def wide_bursts(
    env: dict[str, str], kube: httpx.Client, slurm: Slurm, pods: int, gangs: int, size: int
) -> tuple[list[Rate], dict[str, list[tuple[float, int]]]]:
    rates: list[Rate] = []
    progress: dict[str, list[tuple[float, int]]] = {}
    with wide_partition(env):
        if pods:
            print(f"wide burst of {pods} pods: bare script, then the bridge", flush=True)
            raw_s, progress[f"bare script, {pods} pods"], raw_jobs = raw_wide(kube, slurm, pods, 0, 1)
            raw_cancel_s = raw_cancel_all(slurm, raw_jobs)
            print(f"  bare script: all bound in {raw_s:.1f} s, all ended in {raw_cancel_s:.1f} s", flush=True)
            delete_pods(kube)
            bridge_s, progress[f"bridge, {pods} pods"] = bridge_wide(kube, pods, 0, 1)
            bridge_cancel_s = bridge_delete_all(kube, slurm)
            delete_pods(kube)
            rates.append(
                Rate(f"burst of {pods} pods (wide partition): all bound, pods/s", pods, raw_s, bridge_s)
            )
            rates.append(
                Rate(f"delete {pods} bound pods: jobs ended, jobs/s", pods, raw_cancel_s, bridge_cancel_s)
            )
            print(
                f"  bound: bare {raw_s:.1f} s, bridge {bridge_s:.1f} s; ended: bare {raw_cancel_s:.1f} s, "
                f"bridge {bridge_cancel_s:.1f} s",
                flush=True,
            )
        if gangs:
            print(f"wide burst of {gangs} gangs of {size}: bare script, then the bridge", flush=True)
            raw_s, progress[f"bare script, {gangs} gangs"], raw_jobs = raw_wide(kube, slurm, 0, gangs, size)
            print(f"  bare script: all bound in {raw_s:.1f} s", flush=True)
            raw_cancel_all(slurm, raw_jobs)
            delete_pods(kube)
            bridge_s, progress[f"bridge, {gangs} gangs"] = bridge_wide(kube, 0, gangs, size)
            bridge_delete_all(kube, slurm)
            delete_pods(kube)
            delete_pod_groups(kube)
            rates.append(
                Rate(
                    f"burst of {gangs} gangs of {size} (wide partition): all bound, gangs/s",
                    gangs,
                    raw_s,
                    bridge_s,
                )
            )
            print(f"  bound: bare {raw_s:.1f} s, bridge {bridge_s:.1f} s", flush=True)
    return rates, progress


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bridge_config(port: int) -> dict[str, Any]:
    config = yaml.safe_load((TESTBED / "bridge.yaml").read_text())
    config.update(
        scheduler_name=SCHEDULER,
        namespaces=[NS],
        cluster_id="bench-speed",
        metrics_listen_address=f"127.0.0.1:{port}",
    )
    config["leader_election"] = {
        **(config.get("leader_election") or {}),
        "lease_name": "slurm-bridge-bench-speed",
    }
    config["nodeset"] = {"enabled": False}
    return dict(config)


def plot(path: Path, f: Figures, progress: dict[str, list[tuple[float, int]]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(
        [f.raw_to_running, f.pod_to_bound], bins=15, label=["Slurm submit->RUNNING", "bridge created->bound"]
    )
    left.set_xlabel("seconds")
    left.set_title("latency, paired rounds")
    left.legend()
    for label, points in progress.items():
        if points:
            right.plot([t for t, _ in points], [n for _, n in points], label=label)
    right.set_xlabel("seconds since the first create/submit")
    right.set_ylabel("pods bound")
    right.set_title(f"burst of {f.burst_pods}")
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100, help="paired latency rounds")
    parser.add_argument("--burst", type=int, default=12, help="pods in the burst (the testbed has 16 CPUs)")
    parser.add_argument(
        "--wide-pods", type=int, default=1000, help="single pods in the wide burst (0: skip it)"
    )
    parser.add_argument(
        "--wide-gangs", type=int, default=200, help="gangs of 4 in the wide burst (0: skip it)"
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--log-level", default="WARNING", help="the bridge's, in <out>.log")
    parser.add_argument("--out", type=Path, default=TESTBED / "bench-bridge.json")
    args = parser.parse_args()
    env = testbed_environment()
    kubeconfig = Path(env["KUBECONFIG"])
    print(
        f"Slurm {env['SLURM_VERSION']} ({env['SLURMRESTD_URL']}), Kubernetes {env['K8S_VERSION']}, "
        f"{os.cpu_count()} cores"
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, kube_http(kubeconfig) as kube:
        slurm = Slurm(env)
        config_path = Path(tmp) / "bridge.yaml"
        config_path.write_text(yaml.safe_dump(bridge_config(port)))
        kube.post(
            "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
        )
        delete_pods(kube)
        log = args.out.with_suffix(".log").open("w")
        command = [
            sys.executable,
            "-m",
            "slurm_bridge.cli",
            "run",
            "--config",
            str(config_path),
            "--log-level",
            args.log_level,
        ]
        bridge = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        progress: dict[str, list[tuple[float, int]]] = {}
        burst_bridge = burst_raw = rss = idle = None
        rates: list[Rate] = []
        polls: dict[str, float] = {}
        try:
            ready = f"http://127.0.0.1:{port}/readyz"
            wait(
                "the bridge ready",
                lambda: httpx.get(ready).status_code == 200 if _answers(ready) else False,
                60,
                0.2,
            )
            # Warm-up, not measured: the bridge leads (a Lease left by an earlier run may still be held).
            kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body("warm-up")).raise_for_status()
            wait(
                "the warm-up pod bound",
                lambda: bool(pod(kube, "warm-up").get("spec", {}).get("nodeName")),
                90,
            )
            delete_pods(kube)
            print("latency (paired: a raw submit and a pod create at the same instant each round):")
            with kube_http(kubeconfig) as kube_too:
                raw, bridged, start_to_bound = paired_latency(kube, slurm, kube_too, Slurm(env), args.rounds)
            delete_pods(kube)
            time.sleep(2)
            before = cpu_seconds(bridge.pid)
            time.sleep(args.idle_seconds)
            idle = (cpu_seconds(bridge.pid) - before) / args.idle_seconds
            try:
                print(f"burst of {args.burst}: bare script, then the bridge")
                burst_raw, progress["bare script"] = raw_burst(kube, slurm, args.burst)
                delete_pods(kube)
                time.sleep(2)
                burst_bridge, progress["bridge"] = bridge_burst(kube, args.burst)
            except TimeoutError as error:
                print(f"  {error} (others' jobs may hold the testbed's CPUs): burst not measured")
            if args.wide_pods or args.wide_gangs:
                delete_pods(kube)
                rates, wide_progress = wide_bursts(env, kube, slurm, args.wide_pods, args.wide_gangs, 4)
                progress |= wide_progress
            rss = rss_mib(bridge.pid)
            polls = poll_answers(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        finally:
            delete_pods(kube)
            bridge.terminate()
            bridge.wait(timeout=30)
    figures = Figures(
        raw, bridged, start_to_bound, args.burst, burst_bridge, burst_raw, rss, idle, polls, tuple(rates)
    )
    rows = table(figures)
    print()
    print(render(rows))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "slurm": env["SLURM_VERSION"],
        "kubernetes": env["K8S_VERSION"],
        "cores": os.cpu_count(),
        "rows": [asdict(r) | {"ratio": ratio(r)} for r in rows],
        "figures": asdict(figures),
        "burst_progress": progress,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.out}")
    png = args.out.with_suffix(".png")
    if plot(png, figures, progress):
        print(f"written: {png}")
    else:
        print("no PNG: matplotlib is not installed (pip install '.[demo]')")


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


if __name__ == "__main__":
    main()

"""`make bench-bridge`: how fast pods go through the bridge, beside the raw rates of the same testbed.

Prints, measured in one run against the testbed's default Slurm:
- raw: slurmrestd submits/s (one keep-alive client), Slurm's own submit->RUNNING time, and
  pods created+bound/s on the API server (one client);
- bridge: create->bound latency of single pods (median, max), a burst of pods (each runs 1 s) going
  all the way through (pods/s), and the bridge's RSS.
Bounded loops, loopback only. Needs the testbed up and no other bridge acting on namespace slurm-bridge.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tools.demo import TESTBED, testbed_environment

NS = "slurm-bridge"


def wait(what: str, probe: Callable[[], bool], timeout: float = 120, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
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
        import ssl

        context = ssl.create_default_context(cafile=files["ca"])
        context.load_cert_chain(files["crt"], files["key"])
        with httpx.Client(base_url=cluster["server"], verify=context, timeout=30) as client:
            yield client


def pod_body(
    name: str, annotations: dict[str, str] | None = None, scheduler: str = "slurm-bridge-scheduler"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}],
            "containers": [
                {"name": "c", "image": "pause", "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}
            ],
        },
    }


def raw_kubernetes_rate(kube: httpx.Client, count: int) -> float:
    started = time.monotonic()
    for i in range(count):
        name = f"raw-{i}"
        kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body(name, scheduler="nobody")).raise_for_status()
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "slurm-bridge-0"},
        }
        kube.post(f"/api/v1/namespaces/{NS}/pods/{name}/binding", json=binding).raise_for_status()
    rate = count / (time.monotonic() - started)
    kube.delete(f"/api/v1/namespaces/{NS}/pods", params={"gracePeriodSeconds": "0"})
    return rate


def raw_slurm(env: dict[str, str], count: int) -> tuple[float, float]:
    """(submits/s of held jobs from one client, seconds from submit to RUNNING of one job)."""
    headers = {"X-SLURM-USER-NAME": "slurm", "X-SLURM-USER-TOKEN": env["SLURM_JWT"]}
    with httpx.Client(base_url=env["SLURMRESTD_URL"], headers=headers, timeout=30) as slurm:
        spec = slurm.get("/openapi/v3").json()
        api = max(
            (p.split("/")[2] for p in spec["paths"] if p.endswith("/job/submit")),
            key=lambda v: int(v.rsplit(".", 1)[1]),
        )

        def body(hold: bool) -> dict[str, Any]:
            job: dict[str, Any] = {
                "name": "raw-bench",
                "partition": "slurm-bridge",
                "hold": hold,
                "current_working_directory": "/tmp",
            }
            if api == "v0.0.38":
                return {"script": "#!/bin/sh\nsleep 30\n", "job": {**job, "environment": {"PATH": "/bin"}}}
            return {"job": {**job, "environment": ["PATH=/bin"], "script": "#!/bin/sh\nsleep 30\n"}}

        ids = []
        started = time.monotonic()
        for _ in range(count):
            ids.append(slurm.post(f"/slurm/{api}/job/submit", json=body(True)).json()["job_id"])
        rate = count / (time.monotonic() - started)
        for job_id in ids:
            slurm.delete(f"/slurm/{api}/job/{job_id}")
        started = time.monotonic()
        job_id = slurm.post(f"/slurm/{api}/job/submit", json=body(False)).json()["job_id"]

        def running() -> bool:
            job = slurm.get(f"/slurm/{api}/job/{job_id}").json()["jobs"][0]
            state = job["job_state"]
            return "RUNNING" in (state if isinstance(state, list) else [state])

        wait("raw job RUNNING", running, 30, every=0.05)
        to_running = time.monotonic() - started
        slurm.delete(f"/slurm/{api}/job/{job_id}")
        return rate, to_running


def node_name(kube: httpx.Client, name: str) -> str:
    answer = kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")
    return str(answer.json().get("spec", {}).get("nodeName") or "") if answer.status_code == 200 else ""


def single_pod_latencies(kube: httpx.Client, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        name = f"single-{i}"
        started = time.monotonic()
        kube.post(f"/api/v1/namespaces/{NS}/pods", json=pod_body(name)).raise_for_status()
        wait(f"{name} bound", lambda n=name: bool(node_name(kube, n)))  # type: ignore[misc]
        latencies.append(time.monotonic() - started)
        kube.delete(f"/api/v1/namespaces/{NS}/pods/{name}")
    return latencies


def burst(kube: httpx.Client, count: int) -> tuple[float, float]:
    """(seconds until every pod was bound, seconds until every pod Succeeded) for `count` pods of 1 s."""
    started = time.monotonic()
    for i in range(count):
        body = pod_body(f"burst-{i}", {"testbed.slurm-bridge.io/run-duration": "1s"})
        kube.post(f"/api/v1/namespaces/{NS}/pods", json=body).raise_for_status()
    created = time.monotonic() - started
    print(f"  created {count} pods in {created:.1f} s")
    bound_at = finished_at = 0.0
    seen_bound: set[str] = set()
    while True:
        pods = kube.get(f"/api/v1/namespaces/{NS}/pods").json()["items"]
        ours = [p for p in pods if p["metadata"]["name"].startswith("burst-")]
        seen_bound |= {p["metadata"]["name"] for p in ours if p["spec"].get("nodeName")}
        if not bound_at and len(seen_bound) >= count:
            bound_at = time.monotonic() - started
        done = sum(1 for p in ours if p.get("status", {}).get("phase") == "Succeeded")
        if done >= count:
            finished_at = time.monotonic() - started
            break
        if time.monotonic() - started > 900:
            raise SystemExit(f"bench: burst did not finish ({done}/{count} succeeded)")
        time.sleep(0.2)
    kube.delete(f"/api/v1/namespaces/{NS}/pods", params={"gracePeriodSeconds": "0"})
    return bound_at, finished_at


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--raw", type=int, default=100)
    args = parser.parse_args()
    env = testbed_environment()
    kubeconfig = Path(env["KUBECONFIG"])
    print(
        f"Slurm {env['SLURM_VERSION']} ({env['SLURMRESTD_URL']}), Kubernetes {env['K8S_VERSION']}, "
        f"{os.cpu_count()} cores"
    )
    with kube_http(kubeconfig) as kube:
        slurm_rate, slurm_to_running = raw_slurm(env, args.raw)
        kube_rate = raw_kubernetes_rate(kube, args.raw)
        print("raw (no bridge):")
        print(f"  slurmrestd submits/s (1 client):          {slurm_rate:7.1f}")
        print(f"  Slurm submit -> RUNNING (1 job):          {slurm_to_running:7.2f} s")
        print(f"  pods created + bound/s (1 client):        {kube_rate:7.1f}")
        log = (TESTBED / "bench-bridge.log").open("w")
        bridge = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slurm_bridge.cli",
                "run",
                "--config",
                str(TESTBED / "bridge.yaml"),
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(3)  # leader election and cache sync
            latencies = single_pod_latencies(kube, args.singles)
            median = statistics.median(latencies)
            print("bridge:")
            print(
                f"  single pod create -> bound: median {median:.2f} s, max {max(latencies):.2f} s "
                f"({args.singles} pods; raw Slurm floor {slurm_to_running:.2f} s, "
                f"ratio {median / slurm_to_running:.2f})"
            )
            time.sleep(2)
            bound_at, finished_at = burst(kube, args.burst)
            print(
                f"  burst of {args.burst} pods (each runs 1 s, 16 CPUs): all bound after {bound_at:.1f} s, "
                f"all Succeeded after {finished_at:.1f} s = {args.burst / finished_at:.2f} pods/s end to end"
            )
            print(f"  bridge RSS after the burst: {rss_mib(bridge.pid):.0f} MiB")
        finally:
            bridge.terminate()
            bridge.wait(timeout=30)


if __name__ == "__main__":
    main()

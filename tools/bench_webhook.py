"""`make bench-webhook`: admission latency of pod creates with the bridge's webhook on vs off, one run.

The webhook (`python -m webhook`) is registered for one namespace only (mutating + validating); a second
namespace has no webhook. Pods are created alternately in the two (one keep-alive client, raw httpx,
the admin certificate, validated as a user: the bridge identity is set to nobody), so both sides see the
same load, and each create is timed from request to answer. Pods name a scheduler nobody runs
(`webhook-bench-scheduler`): nothing else acts on them; they are deleted at the end with the namespaces.
Prints p50/p99/max per side and the webhook's own share (on - off).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from bridge.config import BridgeConfig
from tools.bench_bridge import kube_http, wait
from tools.demo import TESTBED, testbed_environment
from webhook.registration import webhook_configurations

PORT = 17462
SCHEDULER = "webhook-bench-scheduler"
NAME = "webhook-bench"


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {"slinky.slurm.net/timelimit": "10", "slinky.slurm.net/qos": "normal"},
        },
        "spec": {
            "schedulerName": SCHEDULER,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "c", "image": "pause", "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}
            ],
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=1000, help="pod creates per side")
    args = parser.parse_args()
    env = testbed_environment()
    kubeconfig = Path(env["KUBECONFIG"])
    kubectl = [
        env.get("KUBECTL") or str(TESTBED / "bin" / "k8s" / "kubectl"),
        "--kubeconfig",
        str(kubeconfig),
    ]
    suffix = uuid.uuid4().hex[:4]
    on_ns, off_ns = f"webhook-bench-on-{suffix}", f"webhook-bench-off-{suffix}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "scheduler_name": SCHEDULER,
            "namespaces": [on_ns],
            "webhook": {
                "listen_address": f"127.0.0.1:{PORT}",
                "cert_dir": f"{tmp}/certs",
                "bridge_usernames": ["webhook-bench-nobody"],
            },
        }
        config_path = Path(tmp) / "webhook.yaml"
        config_path.write_text(yaml.safe_dump(settings))
        log = (Path(tmp) / "webhook.log").open("wb")
        webhook = subprocess.Popen(
            [sys.executable, "-m", "webhook", "--config", str(config_path), "--log-level", "WARNING"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        try:
            for namespace in (on_ns, off_ns):
                subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
            wait("the webhook's CA", lambda: (Path(tmp) / "certs" / "ca.crt").exists(), 30)
            manifests = webhook_configurations(
                BridgeConfig.model_validate(settings),
                ca_bundle=(Path(tmp) / "certs" / "ca.crt").read_bytes(),
                url=f"https://127.0.0.1:{PORT}",
                name=NAME,
                only_namespaces=[on_ns],
            )
            listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
            subprocess.run(
                [*kubectl, "apply", "-f", "-"], input=listed.encode(), check=True, capture_output=True
            )
            on, off = measure(kubeconfig, on_ns, off_ns, args.pods)
        finally:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                subprocess.run([*kubectl, "delete", kind, NAME, "--ignore-not-found"], capture_output=True)
            webhook.terminate()
            webhook.wait(15)
            for namespace in (on_ns, off_ns):
                subprocess.run(
                    [*kubectl, "delete", "namespace", namespace, "--wait=false"], capture_output=True
                )
    report(on, off)


def measure(kubeconfig: Path, on_ns: str, off_ns: str, count: int) -> tuple[list[float], list[float]]:
    on: list[float] = []
    off: list[float] = []
    with kube_http(kubeconfig) as client:
        # Warm up: connections, the webhook's TLS session, the API server's webhook client.
        for namespace in (on_ns, off_ns):
            for i in range(20):
                wait(
                    "warm-up create",
                    lambda ns=namespace, i=i: (
                        client.post(  # type: ignore[misc]
                            f"/api/v1/namespaces/{ns}/pods", json=pod(f"warm-{i}")
                        ).status_code
                        in (201, 409)
                    ),
                    30,
                    every=0.5,
                )
        created = client.get(f"/api/v1/namespaces/{on_ns}/pods/warm-0").json()
        assert created["spec"]["tolerations"][-1]["key"] == "slinky.slurm.net/managed-node", (
            "webhook not active"
        )
        for i in range(count):
            for namespace, into in ((on_ns, on), (off_ns, off)):
                started = time.perf_counter()
                answer = client.post(f"/api/v1/namespaces/{namespace}/pods", json=pod(f"p-{i}"))
                into.append(time.perf_counter() - started)
                if answer.status_code != 201:
                    raise SystemExit(
                        f"bench: create in {namespace} answered {answer.status_code}: {answer.text}"
                    )
        for namespace in (on_ns, off_ns):
            client.delete(f"/api/v1/namespaces/{namespace}/pods")
    return on, off


def report(on: list[float], off: list[float]) -> None:
    def row(label: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
        return (
            f"{label:<12} n={len(ms):>5}  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
            f"max {max(ms):6.1f} ms  mean {statistics.fmean(ms):6.1f} ms"
        )

    print("pod create latency (request -> answer), alternating namespaces, one client:")
    print(row("webhook on", on))
    print(row("webhook off", off))
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print(
        f"webhook share: p50 +{(percentile(on, 0.5) - percentile(off, 0.5)) * 1000:.1f} ms, "
        f"p99 +{(percentile(on, 0.99) - percentile(off, 0.99)) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

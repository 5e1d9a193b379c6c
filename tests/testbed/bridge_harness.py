"""The bridge as a real process against the testbed, and what tests need to watch it work."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.testbed_env import REPO, KubeCluster, SlurmCluster

NAMESPACE = "slurm-bridge"
SCHEDULER = "slurm-bridge-scheduler"
TOLERATION = {"key": "slinky.slurm.net/managed-node", "operator": "Exists"}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def bridge_config(
    slurm: SlurmCluster, kube: KubeCluster, *, cluster_id: str, metrics_port: int
) -> dict[str, Any]:
    return {
        "scheduler_name": SCHEDULER,
        "namespaces": [NAMESPACE],
        "node_selector": "scheduler.slinky.slurm.net/slurm-bridge=true",
        "cluster_id": cluster_id,
        "poll_interval_seconds": 0.5,
        "metrics_listen_address": f"127.0.0.1:{metrics_port}",
        "slurm": {
            "url": slurm.url,
            "user": slurm.user,
            "jwt_key_file": str(slurm.jwt_key_file),
            "partition": slurm.partition,
            "default_time_limit_minutes": 30,
        },
        "kubernetes": {"kubeconfig": str(kube.kubeconfig)},
        "leader_election": {
            "lease_name": f"e2e-{cluster_id}",
            "lease_namespace": "slurm-bridge-system",
            "lease_duration_seconds": 4,
            "renew_deadline_seconds": 3,
            "retry_period_seconds": 0.5,
        },
        # Off unless a test is about NodeSets: every test's bridge would otherwise manage the testbed's
        # NodeSet alongside the others.
        "nodeset": {"enabled": False},
    }


class BridgeProcess:
    """`slurm-bridge run --config FILE` in the background, its log in a file."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "bridge") -> None:
        self.config = config
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **(extra_env or {})}
        log = self.log_path.open("ab")
        cmd = [
            sys.executable,
            "-m",
            "slurm_bridge.cli",
            "run",
            "--config",
            str(self.config_path),
            "--log-level",
            "DEBUG",
        ]
        self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"bridge exited:\n{self.log()[-3000:]}"
        )


def drop_finalizers(kube: KubeCluster, namespace: str) -> list[str]:
    """Take every pod's finalizers off (what a bridge that is gone would have done); returns the pods."""
    names = kube.kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).split()
    for name in names:
        patch = '{"metadata":{"finalizers":null}}'
        kube.kubectl("-n", namespace, "patch", name, "--type=merge", "-p", patch, check=False)
    return names


def force_clear(kube: KubeCluster, namespace: str) -> None:
    """Whatever a failed test left in `namespace`: no finalizer holds a pod, every pod deleted now."""
    if drop_finalizers(kube, namespace):
        kube.kubectl("-n", namespace, "delete", "pods", "--all", "--grace-period=0", "--force", check=False)


def clear_pods(kube: KubeCluster, namespace: str, timeout: float) -> None:
    """Delete the pods as a user would, give the bridge `timeout` to release them, then drop the rest."""
    kube.kubectl("-n", namespace, "delete", "pods", "--all", "--wait=false", check=False)
    with contextlib.suppress(AssertionError):
        wait_for("pods gone", lambda: not kube.kubectl("-n", namespace, "get", "pods", "-o", "name"), timeout)
    drop_finalizers(kube, namespace)


def pod_manifest(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    cpu: str = "1",
    memory: str = "100Mi",
    gpus: int = 0,
    namespace: str = NAMESPACE,
    labels: dict[str, str] | None = None,
    tolerate: bool = True,
) -> dict[str, Any]:
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": {
            "schedulerName": SCHEDULER,
            "tolerations": [TOLERATION] if tolerate else [],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"limits": limits}}
            ],
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Cluster:
    """Both sides as a test sees them."""

    def __init__(self, kube: KubeCluster, slurm: SlurmCluster) -> None:
        self.kube = kube
        self.slurm = slurm

    def create(self, manifest: dict[str, Any]) -> None:
        self.kube.kubectl("create", "-f", "-", stdin=json.dumps(manifest))

    def pod(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        out = self.kube.kubectl("-n", namespace, "get", "pod", name, "-o", "json", check=False)
        return json.loads(out) if out.strip() else None

    def delete_pod(self, name: str, namespace: str = NAMESPACE, wait: bool = False) -> None:
        self.kube.kubectl(
            "-n", namespace, "delete", "pod", name, f"--wait={str(wait).lower()}", "--ignore-not-found"
        )

    def events(self, name: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        out = self.kube.kubectl(
            "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def event_reasons(self, name: str, namespace: str = NAMESPACE) -> set[str]:
        return {str(e.get("reason")) for e in self.events(name, namespace)}

    def jobs_named(self, job_name: str, states: str = "all") -> list[dict[str, str]]:
        out = self.slurm.cli("squeue", "-h", "-t", states, "-n", job_name, "-o", "%i|%T|%N|%r|%k")
        rows = [line.split("|", 4) for line in out.splitlines() if line.strip()]
        return [{"id": r[0], "state": r[1], "nodes": r[2], "reason": r[3], "comment": r[4]} for r in rows]

    def jobs_for_pod(self, pod_name: str) -> list[dict[str, str]]:
        out = self.slurm.cli("squeue", "-h", "-t", "all", "-o", "%i|%T|%N|%r|%k")
        rows = [line.split("|", 4) for line in out.splitlines() if line.strip()]
        return [
            {"id": r[0], "state": r[1], "nodes": r[2], "reason": r[3], "comment": r[4]}
            for r in rows
            if f"/{pod_name} " in r[4] + " "
        ]

    def job_state(self, job_id: str) -> tuple[str, str]:
        """(JobState, ExitCode) as scontrol shows them."""
        out = self.slurm.cli("scontrol", "-o", "show", "job", job_id)
        fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
        return fields.get("JobState", ""), fields.get("ExitCode", "")


def phase(pod: dict[str, Any] | None) -> str | None:
    return None if pod is None else pod.get("status", {}).get("phase")


def condition(pod: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    if pod is None:
        return None
    return next((c for c in pod.get("status", {}).get("conditions") or [] if c.get("type") == kind), None)

"""The top-level docker-compose.yml dev stack, brought up whole on the testbed's dockerd: Slurm 22.05 (its
slurm.conf from testbed/slurm-conf.sh), a Kubernetes control plane from the testbed's binaries, the bridge
from the project's image and Prometheus. A pod runs through it as a Slurm job, Prometheus scrapes the
bridge and every query of the shipped Grafana dashboard evaluates; then the stack goes away.

Grafana itself is not in the stack (no build of it can be had from the package sources here): the
dashboard is checked by running each of its panel queries against the stack's Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.testbed.bridge_harness import wait_for
from tests.testbed.docker_harness import docker, docker_env
from tests.testbed_env import REPO

if TYPE_CHECKING:
    from tests.testbed_env import Testbed

pytestmark = pytest.mark.testbed

PROJECT = "slurm-k8s-bridge-e2e"
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS = "http://127.0.0.1:18170"
NAMESPACE = "slurm-bridge"


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def compose(self, *args: str, timeout: float = 600) -> str:
        cmd = ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def exec(self, service: str, *args: str) -> str:
        return docker(self.env, "exec", f"{PROJECT}_{service}_1", *args, check=False)

    @property
    def kubeconfig(self) -> Path:
        mount = docker(self.env, "volume", "inspect", "-f", "{{.Mountpoint}}", f"{PROJECT}_k8s").strip()
        return Path(mount) / "admin.kubeconfig"


def _versions() -> dict[str, str]:
    text = (REPO / "testbed" / "versions.env").read_text()
    return dict(re.findall(r"^(\w+)=(\S+)", text, re.MULTILINE))


def _kwok_stage_dir(version: str) -> str:
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    return f"{modcache.stdout.strip()}/sigs.k8s.io/kwok@{version}/kustomize/stage"


def test_compose_file_pins_the_testbed_versions() -> None:
    """The binaries it mounts are the testbed's: the same versions as testbed/versions.env."""
    text = COMPOSE_FILE.read_text()
    versions = _versions()
    for what, key in (("k8s", "K8S_VERSION"), ("etcd", "ETCD_VERSION"), ("kwok", "KWOK_VERSION")):
        assert f"/slurm-k8s-bridge/{what}/{versions[key]}/bin" in text, (what, versions[key])
    assert f"kwok@{versions['KWOK_VERSION']}/" in text


@pytest.fixture(scope="module")
def stack(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = docker_env(testbed.env)
    env["KWOK_STAGE_DIR"] = _kwok_stage_dir(_versions()["KWOK_VERSION"])
    stack = Stack(env)
    stack.compose("down", "-v", "--remove-orphans", timeout=120)  # whatever a killed run left
    t0 = time.monotonic()
    stack.compose("up", "-d", "--build")
    print(f"[compose-e2e] up --build: {time.monotonic() - t0:.1f} s")
    try:
        yield stack
    finally:
        logs = tmp_path_factory.mktemp("compose") / "compose.log"
        logs.write_text(
            subprocess.run(
                [
                    "docker-compose",
                    "-p",
                    PROJECT,
                    "-f",
                    str(COMPOSE_FILE),
                    "logs",
                    "--no-color",
                    "--tail",
                    "200",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        )
        t0 = time.monotonic()
        stack.compose("down", "-v", "--remove-orphans", timeout=180)
        print(f"[compose-e2e] down: {time.monotonic() - t0:.1f} s (logs: {logs})")


def _kubectl(testbed: Testbed, stack: Stack, *args: str, stdin: str | None = None) -> str:
    assert testbed.kube is not None
    cmd = [str(testbed.kube.kubectl_path), "--kubeconfig", str(stack.kubeconfig), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)
    return done.stdout if done.returncode == 0 else ""


def _pod(testbed: Testbed, stack: Stack, name: str) -> dict[str, Any]:
    out = _kubectl(testbed, stack, "-n", NAMESPACE, "get", "pod", name, "-o", "json")
    return json.loads(out) if out else {}


def _query(expr: str) -> dict[str, Any]:
    reply = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = reply.json()
    return body


def test_pod_runs_through_the_compose_stack(testbed: Testbed, stack: Stack) -> None:
    idle = wait_for(
        "4 Slurm nodes idle",
        lambda: "4 idle" in stack.exec("slurmctld", "sinfo", "-h", "-p", "slurm-bridge", "-o", "%D %t"),
        120,
    )
    assert idle
    wait_for(
        "4 Kubernetes nodes Ready and the bridge's namespace",
        lambda: (
            _kubectl(testbed, stack, "get", "nodes", "--no-headers").count(" Ready ") == 4
            and _kubectl(testbed, stack, "get", "sa", "default", "-n", NAMESPACE)
        ),
        120,
    )
    manifest = (REPO / "deploy" / "examples" / "pause-pod.yaml").read_text()
    assert _kubectl(testbed, stack, "apply", "-f", "-", stdin=manifest)
    pod = wait_for(
        "pause-pod Running on a node",
        lambda: (p := _pod(testbed, stack, "pause-pod")).get("status", {}).get("phase") == "Running" and p,
        120,
    )
    node = pod["spec"]["nodeName"]
    queue = stack.exec("slurmctld", "squeue", "-h", "-n", "pausepod", "-o", "%T %N %u")
    assert queue.split() == ["RUNNING", node, "slurm"], queue

    # Prometheus scrapes the bridge; the dashboard's queries all evaluate, its Slurm panels have data
    wait_for(
        "the bridge's target up in Prometheus",
        lambda: any(
            t["health"] == "up" and t["labels"]["job"] == "slurm-bridge"
            for t in httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        ),
        60,
    )
    wait_for("slurm_nodes scraped", lambda: _query('slurm_nodes{job="slurm-bridge"}')["data"]["result"], 60)
    dashboard = json.loads((REPO / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    assert len(exprs) > 10
    empty = []
    for expr in exprs:
        concrete = (
            expr.replace("$job", "slurm-bridge").replace("$partition", ".*").replace("$__rate_interval", "1m")
        )
        answer = _query(concrete)
        assert answer["status"] == "success", (expr, answer)
        if not answer["data"]["result"]:
            empty.append(expr)
    assert not [e for e in empty if "slurm_partition_nodes_idle" in e or "slurm_nodes_idle" in e], empty

    # deleting the pod ends its job (kwok stops the pod, the bridge ends the job, then lets the pod go)
    _kubectl(testbed, stack, "-n", NAMESPACE, "delete", "pod", "pause-pod", "--wait=false")
    wait_for("pod gone", lambda: not _pod(testbed, stack, "pause-pod"), 60)
    wait_for(
        "job ended",
        lambda: not stack.exec("slurmctld", "squeue", "-h", "-n", "pausepod", "-t", "R,PD").strip(),
        60,
    )

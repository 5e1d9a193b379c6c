"""Smoke tests of the testbed itself, with bare httpx and kubectl (no project code involved)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.testbed.bridge_harness import wait_for
from tests.testbed_env import KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed


def newest_rest_version(client: httpx.Client) -> str:
    spec = client.get("/openapi/v3").json()
    versions = {m.group(1) for p in spec["paths"] if (m := re.match(r"^/slurm/(v0\.0\.\d+)/job/submit$", p))}
    return max(versions, key=lambda v: int(v.rsplit(".", 1)[1]))


def submit_body(api: str, name: str) -> dict[str, Any]:
    script = "#!/bin/sh\nsleep 60\n"
    if api == "v0.0.38":
        job: dict[str, Any] = {"nodes": 2, "environment": {"PATH": "/bin:/usr/bin"}}
        return {"script": script, "job": {**job, **common_job(name)}}
    job = {"minimum_nodes": 2, "maximum_nodes": 2, "environment": ["PATH=/bin:/usr/bin"], "script": script}
    return {"job": {**job, **common_job(name)}}


def common_job(name: str) -> dict[str, Any]:
    return {"name": name, "partition": "slurm-bridge", "tasks": 2, "current_working_directory": "/tmp"}


def test_slurm_job_runs_on_two_nodes(slurm_cluster: SlurmCluster) -> None:
    headers = {"X-SLURM-USER-NAME": slurm_cluster.user, "X-SLURM-USER-TOKEN": slurm_cluster.token}
    with httpx.Client(base_url=slurm_cluster.url, headers=headers, timeout=30) as client:
        api = newest_rest_version(client)
        name = f"smoke-{uuid.uuid4().hex[:6]}"
        answer = client.post(f"/slurm/{api}/job/submit", json=submit_body(api, name))
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["job_id"]
        try:

            def running() -> str | None:
                out = slurm_cluster.cli("squeue", "-h", "-j", str(job_id), "-o", "%T %D %j %N")
                return out if out.startswith("RUNNING") else None

            squeue = wait_for(f"job {job_id} RUNNING in squeue", running)
            state, node_count, job_name, _nodelist = squeue.split()
            assert (state, node_count, job_name) == ("RUNNING", "2", name)
        finally:
            client.delete(f"/slurm/{api}/job/{job_id}")


def test_slurm_nodes_have_declared_resources(slurm_cluster: SlurmCluster) -> None:
    out = slurm_cluster.cli("sinfo", "-h", "-N", "-p", slurm_cluster.partition, "-o", "%N %c %m %G")
    rows = out.split("\n")
    nodes = {row.split()[0]: row.split()[1:] for row in rows if row.strip()}
    assert sorted(nodes) == sorted(slurm_cluster.nodes)
    for name, (cpus, memory, gres) in nodes.items():
        assert int(cpus) >= 4 and int(memory) >= 8192
        assert ("gpu:2" in gres) == (name in slurm_cluster.gpu_nodes)


def create_namespace(kube: KubeCluster) -> str:
    ns = f"smoke-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    wait_for("default service account", lambda: kube.kubectl("-n", ns, "get", "sa", "default", check=False))
    return ns


def pod_phase(kube: KubeCluster, ns: str, name: str) -> str:
    return kube.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)


def bind(kube: KubeCluster, ns: str, pod: str, node: str) -> None:
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    path = f"/api/v1/namespaces/{ns}/pods/{pod}/binding"
    kube.kubectl("create", "--raw", path, "-f", "-", stdin=json.dumps(binding))


def test_pod_bound_runs_then_succeeds(kube: KubeCluster) -> None:
    ns = create_namespace(kube)
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"testbed.slurm-bridge.io/run-duration": "3s"}},
            "spec": {
                "schedulerName": "nobody",
                "tolerations": [{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}],
                "containers": [{"name": "c", "image": "busybox"}],
            },
        }
        kube.kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(pod))
        bind(kube, ns, "p", kube.nodes[0])
        wait_for("pod Running", lambda: pod_phase(kube, ns, "p") == "Running", timeout=30)
        wait_for("pod Succeeded", lambda: pod_phase(kube, ns, "p") == "Succeeded", timeout=30)
        node = kube.kubectl("-n", ns, "get", "pod", "p", "-o", "jsonpath={.spec.nodeName}")
        assert node == kube.nodes[0]
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")


COMPLETE_STATUS = 'jsonpath={.status.conditions[?(@.type=="Complete")].status}'


def test_job_controller_creates_pod_and_completes(kube: KubeCluster) -> None:
    ns = create_namespace(kube)
    try:
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "schedulerName": "nobody",
                        "tolerations": [{"key": "slinky.slurm.net/managed-node", "operator": "Exists"}],
                        "containers": [{"name": "c", "image": "busybox"}],
                    }
                }
            },
        }
        kube.kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(job))
        pod = wait_for(
            "the Job's pod",
            lambda: kube.kubectl(
                "-n", ns, "get", "pods", "-l", "job-name=j", "-o", "jsonpath={.items[0].metadata.name}"
            ),
        )
        bind(kube, ns, pod, kube.nodes[1])
        wait_for(
            "Job Complete",
            lambda: "True" in kube.kubectl("-n", ns, "get", "job", "j", "-o", COMPLETE_STATUS),
            timeout=60,
        )
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_workload_api_is_served(kube: KubeCluster) -> None:
    resources = kube.kubectl("api-resources", "--api-group=scheduling.k8s.io", "-o", "name")
    assert "workloads.scheduling.k8s.io" in resources
    assert "podgroups.scheduling.k8s.io" in resources

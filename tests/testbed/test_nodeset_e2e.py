"""NodeSet end to end: the bridge's NodeSet controller scales real slurmd pods, and scale-in never kills
a running job.

Each Slurm version gets its own NodeSet `ns` in namespace slurm-bridge (its pods carry the annotation
that tells the testbed's stand-in, testbed/nodeset_kubelet.py, which cluster to start `slurmd -N ns-N`
in). The Slurm nodes ns-[0-7] are declared State=FUTURE in partition `nodeset` of every cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testbed.bridge_harness import BridgeProcess, Cluster, bridge_config, wait_for
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = pytest.mark.testbed

NAMESPACE = "slurm-bridge"
NAME = "ns"
_PORTS = {"22.05": 17587, "24.11": 17588, "26.05": 17589}


def nodeset_manifest(version: str, replicas: int = 0, partition: str = "nodeset") -> dict[str, Any]:
    return {
        "apiVersion": "slinky.slurm.net/v1beta1",
        "kind": "NodeSet",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "annotations": {"slurm-bridge.io/partition": partition},
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {"testbed.slurm-bridge.io/slurm-version": version}},
                "spec": {"terminationGracePeriodSeconds": 1},
            },
        },
    }


class NodeSetCluster(Cluster):
    def nodeset(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.kube.kubectl("-n", NAMESPACE, "get", "nodeset", NAME, "-o", "json")
        )
        return found

    def scale(self, replicas: int) -> None:
        self.kube.kubectl("-n", NAMESPACE, "scale", f"nodeset/{NAME}", f"--replicas={replicas}")

    def pods(self) -> dict[str, dict[str, Any]]:
        out = self.kube.kubectl(
            "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}", "-o", "json"
        )
        return {p["metadata"]["name"]: p for p in json.loads(out)["items"]}

    def running_pods(self) -> set[str]:
        return {
            name
            for name, p in self.pods().items()
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }

    def sinfo(self) -> dict[str, tuple[str, str]]:
        """Slurm node name -> (state, reason) for the nodeset partition's nodes sinfo lists."""
        out = self.slurm.cli("sinfo", "-h", "-N", "-p", "nodeset", "-o", "%N|%T|%E")
        rows = [line.split("|", 2) for line in out.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2]) for r in rows}

    def scaled(self) -> dict[str, Any]:
        conditions = self.nodeset().get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Scaled"), {})


@pytest.fixture(scope="module")
def cluster(
    slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeSetCluster]:
    cluster = NodeSetCluster(kube, slurm_cluster)
    _clear(cluster)
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(nodeset_manifest(slurm_cluster.version)))
    config = bridge_config(
        slurm_cluster,
        kube,
        cluster_id=f"nodeset-{slurm_cluster.version.replace('.', '')}",
        metrics_port=_PORTS[slurm_cluster.version],
    )
    config["nodeset"] = {"enabled": True, "namespace": NAMESPACE, "slurm_user": "root", "resync_seconds": 3}
    bridge = BridgeProcess(config, tmp_path_factory.mktemp(f"nodeset-{slurm_cluster.version}"))
    bridge.start()
    cluster.bridge = bridge  # type: ignore[attr-defined]
    yield cluster
    bridge.stop()
    _clear(cluster)


def _clear(cluster: NodeSetCluster) -> None:
    """No NodeSet in the test namespace, no slurmd pod, every ns-N node back to FUTURE."""
    kube, slurm = cluster.kube, cluster.slurm
    kube.kubectl("-n", NAMESPACE, "delete", "nodeset", NAME, "--ignore-not-found", "--wait=true")
    kube.kubectl("-n", NAMESPACE, "delete", "pods", "-l", "app.kubernetes.io/name=slurmd", "--wait=true")
    slurm.cli("scancel", "-p", "nodeset", check=False)
    wait_for("slurmd pods gone", lambda: not cluster.pods(), timeout=30)
    # their containers stop after the preStop hook (the stand-in runs it once the object is gone)
    wait_for("slurmd stopped", lambda: not _slurmd_running(cluster), timeout=60)
    for node in cluster.sinfo():
        slurm.cli("scontrol", "update", f"nodename={node}", "state=down", "reason=test-reset", check=False)
        slurm.cli("scontrol", "update", f"nodename={node}", "state=future", check=False)


def _bridge(cluster: NodeSetCluster) -> BridgeProcess:
    bridge: BridgeProcess = cluster.bridge  # type: ignore[attr-defined]
    bridge.assert_alive()
    return bridge


def test_scale_out_starts_real_slurmd_nodes(cluster: NodeSetCluster) -> None:
    _bridge(cluster)
    cluster.scale(2)
    wait_for("2 slurmd pods Running", lambda: cluster.running_pods() == {"ns-0", "ns-1"}, timeout=60)
    wait_for(
        "ns-0 and ns-1 idle in sinfo",
        lambda: {n: s for n, (s, _) in cluster.sinfo().items()} == {"ns-0": "idle", "ns-1": "idle"},
        timeout=60,
    )
    status = wait_for(
        "status caught up",
        lambda: (s := cluster.nodeset().get("status", {})).get("slurmIdle") == 2 and s,
        timeout=30,
    )
    assert status["replicas"] == 2
    assert status["selector"] == "app.kubernetes.io/name=slurmd,app.kubernetes.io/instance=ns"
    assert cluster.scaled()["status"] == "True"
    pod = cluster.pods()["ns-0"]
    assert pod["spec"]["hostname"] == "ns-0"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "NodeSet"
    assert "CreatedPod" in cluster.event_reasons(NAME, NAMESPACE)


# REST v0.0.38 (Slurm 22.05) has no node update: there, test_drain_refused_deletes_nothing.
@pytest.mark.slurm_version("24.11", "26.05")
def test_scale_in_keeps_the_node_with_a_job_until_it_ends(cluster: NodeSetCluster) -> None:
    cluster.scale(2)
    wait_for("2 idle nodes", lambda: [s for s, _ in cluster.sinfo().values()] == ["idle", "idle"], timeout=60)
    job = cluster.slurm.cli("sbatch", "--parsable", "-p", "nodeset", "-N1", "--wrap", "sleep 300").strip()
    busy_node = wait_for(
        "job running",
        lambda: (
            (out := cluster.slurm.cli("squeue", "-h", "-j", job, "-o", "%T|%N").strip()).startswith("RUNNING")
            and out.split("|")[1]
        ),
        timeout=30,
    )
    idle_node = ({"ns-0", "ns-1"} - {busy_node}).pop()

    cluster.scale(1)  # the idle node goes, whatever its ordinal
    wait_for(f"{idle_node} deleted", lambda: set(cluster.pods()) == {busy_node}, timeout=60)
    wait_for(f"{idle_node} gone from sinfo", lambda: idle_node not in cluster.sinfo(), timeout=30)
    assert cluster.sinfo()[busy_node][0] in ("allocated", "mixed")

    cluster.scale(0)  # the busy node drains, its pod stays while the job runs
    message = wait_for(
        "condition names the job",
        lambda: f"job {job} running" in (m := cluster.scaled().get("message", "")) and m,
        timeout=30,
    )
    assert f"draining {busy_node}" in message
    assert cluster.scaled()["reason"] == "Draining"
    state, reason = cluster.sinfo()[busy_node]
    assert state in ("draining", "drng") and reason.startswith("slurm-bridge scale-in"), (state, reason)
    assert set(cluster.pods()) == {busy_node}
    assert cluster.slurm.cli("squeue", "-h", "-j", job, "-o", "%T").strip() == "RUNNING"

    cluster.scale(1)  # wanted again: resumed, not replaced
    wait_for(
        f"{busy_node} resumed", lambda: cluster.sinfo()[busy_node][0] in ("allocated", "mixed"), timeout=30
    )
    assert set(cluster.pods()) == {busy_node}

    cluster.scale(0)
    wait_for(f"{busy_node} draining again", lambda: "drain" in cluster.sinfo()[busy_node][0], timeout=30)
    cluster.slurm.cli("scancel", job)
    wait_for(f"{busy_node} pod deleted after its job", lambda: not cluster.pods(), timeout=60)
    wait_for("nodes back to FUTURE (not in sinfo)", lambda: not cluster.sinfo(), timeout=30)
    assert cluster.scaled()["status"] == "True"
    reasons = cluster.event_reasons(NAME, NAMESPACE)
    assert {"Draining", "DeletedPod", "Resumed", "Retired"} <= reasons, reasons


@pytest.mark.slurm_version("24.11", "26.05")
def test_foreign_drain_is_left_alone(cluster: NodeSetCluster) -> None:
    cluster.scale(1)
    wait_for("ns-0 idle", lambda: cluster.sinfo().get("ns-0", ("",))[0] == "idle", timeout=60)
    cluster.slurm.cli("scontrol", "update", "nodename=ns-0", "state=drain", "reason=bad-dimm")
    cluster.scale(0)
    wait_for("condition says it", lambda: cluster.scaled().get("reason") == "DrainedByOthers", timeout=30)
    assert set(cluster.pods()) == {"ns-0"}
    assert cluster.sinfo()["ns-0"][1] == "bad-dimm"  # never undrained, never re-reasoned
    cluster.slurm.cli("scontrol", "update", "nodename=ns-0", "state=resume")
    wait_for("scaled in once the admin resumed it", lambda: not cluster.pods(), timeout=60)


@pytest.mark.slurm_version("22.05")
def test_drain_refused_deletes_nothing(cluster: NodeSetCluster) -> None:
    cluster.scale(1)
    wait_for("ns-0 idle", lambda: cluster.sinfo().get("ns-0", ("",))[0] == "idle", timeout=60)
    cluster.scale(0)
    wait_for("DrainRefused", lambda: cluster.scaled().get("reason") == "DrainRefused", timeout=30)
    assert set(cluster.pods()) == {"ns-0"}
    assert "DrainRefused" in cluster.event_reasons(NAME, NAMESPACE)


def test_bad_nodesets_are_reported_and_touch_nothing(cluster: NodeSetCluster) -> None:
    cluster.scale(12)  # 8 declared
    wait_for(
        "NotEnoughDeclaredNodes",
        lambda: cluster.scaled().get("reason") == "NotEnoughDeclaredNodes",
        timeout=30,
    )
    wait_for("8 pods", lambda: len(cluster.pods()) == 8, timeout=60)
    assert "4 not created" in cluster.scaled()["message"]
    cluster.kube.kubectl(
        "-n", NAMESPACE, "annotate", "nodeset", NAME, "slurm-bridge.io/partition=no-such", "--overwrite"
    )
    cluster.scale(0)
    wait_for("UnknownPartition", lambda: cluster.scaled().get("reason") == "UnknownPartition", timeout=30)
    assert len(cluster.pods()) == 8  # nothing deleted on a bad spec
    assert "UnknownPartition" in cluster.event_reasons(NAME, NAMESPACE)
    cluster.kube.kubectl(
        "-n", NAMESPACE, "annotate", "nodeset", NAME, "slurm-bridge.io/partition=nodeset", "--overwrite"
    )
    if cluster.slurm.version != "22.05":
        wait_for("scaled in to 0", lambda: not cluster.pods(), timeout=90)


def test_deleting_the_nodeset_drains_each_node_and_lets_its_job_finish(cluster: NodeSetCluster) -> None:
    """Deleting the NodeSet (or `kubectl delete` / evicting one of its pods) goes round the scale-in: the
    slurmd container's preStop hook (controller/nodesets.py drain_hook) drains its own node and waits for
    its jobs, bounded by the pod's grace period. The testbed's kubelet stand-in runs that hook with the
    cluster's real scontrol/squeue before it stops slurmd."""
    _clear(cluster)
    manifest = nodeset_manifest(cluster.slurm.version, replicas=1)
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 90
    cluster.kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    wait_for("ns-0 idle", lambda: cluster.sinfo().get("ns-0", ("",))[0] == "idle", timeout=60)
    hook = cluster.pods()["ns-0"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert "state=drain" in hook[-1]
    job = cluster.slurm.cli(
        "sbatch", "--parsable", "-p", "nodeset", "-w", "ns-0", "--wrap", "sleep 20"
    ).strip()
    state = ["squeue", "-h", "-j", job, "-o", "%T"]
    wait_for("job running on ns-0", lambda: cluster.slurm.cli(*state).strip() == "RUNNING", timeout=30)

    cluster.kube.kubectl("-n", NAMESPACE, "delete", "nodeset", NAME, "--wait=false")
    drained = wait_for(
        "ns-0 drained by its pod's preStop",
        lambda: "drain" in (s := cluster.sinfo().get("ns-0", ("", "")))[0] and s,
        timeout=30,
    )
    assert drained[1].startswith("slurm-bridge scale-in of nodeset"), drained
    assert cluster.slurm.cli(*state).strip() == "RUNNING"  # the job keeps its node
    final = wait_for(
        "the job's end in sacct",
        lambda: (
            (s := cluster.slurm.cli("sacct", "-X", "-n", "-P", "-j", job, "-o", "State").strip())
            and s.split()[0] not in ("PENDING", "RUNNING")
            and s
        ),
        timeout=60,
    )
    assert final.split()[0] == "COMPLETED", final
    # slurmd goes only after the job: the node stops answering once its pod's container has stopped
    wait_for("ns-0's slurmd stopped", lambda: "ns-0" not in _slurmd_running(cluster), timeout=30)
    print(f"\nSlurm {cluster.slurm.version}: NodeSet deleted with job {job} on ns-0: {drained}; job {final}")
    cluster.kube.kubectl("apply", "-f", "-", stdin=json.dumps(nodeset_manifest(cluster.slurm.version)))


def _slurmd_running(cluster: NodeSetCluster) -> set[str]:
    out = subprocess.run(
        ["bash", str(REPO / "testbed" / "slurm.sh"), "slurmd-list", cluster.slurm.version],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {node for node in out.split() if node.startswith(f"{NAME}-")}

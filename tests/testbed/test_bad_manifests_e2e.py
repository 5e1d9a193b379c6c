"""Hand-picked bad manifests against the real testbed, the bridge a real process (issue 16).

Every pod below is wrong in one way: a malformed annotation of each job option, numbers too large for
Slurm or for int() (5,000 digits), digits of other scripts, requests no node can hold, names Slurm
does not know, gang fields that cannot work. Each must get a Warning event and a PodScheduled=False
condition naming its problem; the bridge must stay up; no Slurm job may be left behind.

The bridge here has a scheduler name and a namespace of its own, so the other tests' bridges running
on the shared testbed never touch these pods (nor this one theirs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.testbed.bridge_harness import (
    TOLERATION,
    BridgeProcess,
    Cluster,
    bridge_config,
    clear_pods,
    unique,
    wait_for,
)
from tests.testbed_env import REPO, KubeCluster, SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.slurm_default_only]

NAMESPACE = "hardening-bad"
SCHEDULER = "hardening-bad-scheduler"
CRD = REPO / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
METRICS_PORT = 17571
HUGE = "9" * 5000
ARABIC_TEN = "\u0661\u0660"
ARABIC_FIVE = "\u0665"
ARABIC_TWO = "\u0662"
SUPERSCRIPT_TWO = "\u00b2"
OPT = "slinky.slurm.net/"
LONG = "slurmjob.slinky.slurm.net/"


@dataclass(frozen=True)
class Bad:
    """One bad pod (or gang): what is wrong, and words the condition and Warning event must contain."""

    id: str
    expect: str | tuple[str, ...]  # one of these
    annotations: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    group: dict[str, Any] | None = None  # a coscheduling PodGroup of 2 members: its spec and annotations
    # Slurm decides (see IMPOSSIBLE): the Warning event or the condition names the problem.
    event_is_enough: bool = False

    def named_in(self, text: object) -> bool:
        words = (self.expect,) if isinstance(self.expect, str) else self.expect
        return any(word in str(text) for word in words)


# Requests no node can hold. Slurm 26.05 refuses the submit ("Requested node configuration is not
# available"), but may accept a later identical submit and fail that job at once (BadConstraints),
# which ends the pod; a CPU count beyond every node can also be queued for good (PartitionConfig).
IMPOSSIBLE = ("node configuration is not available", "BadConstraints", "PartitionConfig")

CASES = [
    # one malformed value of every job option
    Bad("timelimit-word", "timelimit", {OPT + "timelimit": "soon"}),
    Bad("timelimit-5000-digits", "too large", {OPT + "timelimit": HUGE}),
    Bad("timelimit-arabic-digits", "timelimit", {OPT + "timelimit": ARABIC_TEN}),
    Bad("priority-negative", "priority", {OPT + "priority": "-1"}),
    Bad("priority-5000-digits", "too large", {OPT + "priority": HUGE}),
    Bad("min-nodes-2", "min-nodes must be 1", {OPT + "min-nodes": "2"}),
    Bad("max-nodes-0", "max-nodes", {OPT + "max-nodes": "0"}),
    Bad("max-nodes-beyond-32-bit", "too large", {OPT + "max-nodes": "99999999999"}),
    Bad("cpu-per-task-superscript", "cpu-per-task", {OPT + "cpu-per-task": SUPERSCRIPT_TWO}),
    Bad("cpu-per-task-beyond-16-bit", "too large", {OPT + "cpu-per-task": "70000"}),
    Bad("mem-per-node-word", "mem-per-node", {OPT + "mem-per-node": "lots"}),
    Bad("mem-per-node-arabic", "mem-per-node", {OPT + "mem-per-node": ARABIC_FIVE + "G"}),
    Bad("mem-per-node-5000-digits", "mem-per-node", {OPT + "mem-per-node": HUGE}),
    Bad("gres-arabic-count", "gres", {OPT + "gres": "gpu:" + ARABIC_TWO}),
    Bad("gres-5000-digit-count", "gres", {OPT + "gres": "gpu:" + HUGE}),
    Bad("exclusive-sometimes", "exclusive", {OPT + "exclusive": "sometimes"}),
    Bad("job-name-blank", "job-name", {OPT + "job-name": "  "}),
    Bad("account-two-lines", "account", {OPT + "account": "a\nb"}),
    Bad("unknown-option", "unknown annotation", {OPT + "nodes": "2"}),
    Bad("prefixes-disagree", "disagree", {OPT + "timelimit": "5", LONG + "timelimit": "6"}),
    # requests Slurm or this bridge cannot take
    Bad("cpu-100k", "more than Slurm allows per task", limits={"cpu": "100000"}),
    Bad("cpu-1e20", "out of range", limits={"cpu": "1e20"}),
    Bad("cpu-64-no-node-has", IMPOSSIBLE, limits={"cpu": "64"}, event_is_enough=True),
    Bad("memory-1Ti-no-node-has", IMPOSSIBLE, limits={"memory": "1Ti"}, event_is_enough=True),
    Bad("gpus-8-no-node-has", IMPOSSIBLE, limits={"nvidia.com/gpu": "8"}, event_is_enough=True),
    # names Slurm does not know
    Bad("unknown-partition", "Slurm refused", {OPT + "partition": "no-such-partition"}),
    Bad("unknown-reservation", "Slurm refused", {OPT + "reservation": "no-such-reservation"}),
    Bad("unknown-license", "Slurm refused", {OPT + "licenses": "nolicense:1"}),
    Bad("unknown-feature", "Slurm refused", {OPT + "constraints": "nosuchfeature"}),
    Bad("unknown-qos", "Slurm refused", {OPT + "qos": "no-such-qos"}),
    # gangs
    Bad("gang-min-resources-1e999999999", "minResources", group={"minResources": {"cpu": "1e999999999"}}),
    Bad("gang-min-resources-negative", "negative", group={"minResources": {"memory": "-1Gi"}}),
    Bad("gang-node-count", "node counts cannot be set", group={"annotations": {OPT + "min-nodes": "3"}}),
    Bad("gang-timelimit-5000-digits", "too large", group={"annotations": {OPT + "timelimit": HUGE}}),
    Bad("gang-member-arabic-option", "timelimit", {OPT + "timelimit": ARABIC_TEN}, group={}),
    Bad(
        "gang-unknown-partition",
        "Slurm refused",
        group={"annotations": {OPT + "partition": "no-such-partition"}},
    ),
]


@pytest.fixture(scope="module")
def cluster(slurm_cluster: SlurmCluster, kube: KubeCluster) -> Cluster:
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/podgroups.scheduling.x-k8s.io", "--timeout=60s")
    return Cluster(kube, slurm_cluster)


@pytest.fixture(scope="module")
def bridge(
    cluster: Cluster, slurm_cluster: SlurmCluster, kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    cluster_id = f"hardening-bad-{slurm_cluster.version.replace('.', '')}"
    config = bridge_config(slurm_cluster, kube, cluster_id=cluster_id, metrics_port=METRICS_PORT)
    config["scheduler_name"] = SCHEDULER
    config["namespaces"] = [NAMESPACE]
    process = BridgeProcess(config, tmp_path_factory.mktemp("bad-manifests"))
    process.start()
    yield process
    _clear(cluster)
    process.stop()


def _clear(cluster: Cluster) -> None:
    clear_pods(cluster.kube, NAMESPACE, 30)
    kubectl = cluster.kube.kubectl
    kubectl("-n", NAMESPACE, "delete", "podgroups.scheduling.x-k8s.io", "--all", "--wait=false", check=False)


def _pod(name: str, bad: Bad, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": bad.annotations,
            "labels": labels or {},
        },
        "spec": {
            "schedulerName": SCHEDULER,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"cpu": "1", "memory": "100Mi", **bad.limits}},
                }
            ],
        },
    }


def _manifests(bad: Bad, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What to create for one case, and the pods that must show the problem (a gang's Warning events
    are on its PodGroup, which has the case's name)."""
    if bad.group is None:
        return [_pod(name, bad)], [name]
    group = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": bad.group.get("annotations", {})},
        "spec": {
            "minMember": 2,
            **({"minResources": bad.group["minResources"]} if "minResources" in bad.group else {}),
        },
    }
    members = [f"{name}-{i}" for i in range(2)]
    return [group, *(_pod(m, bad, {POD_GROUP_LABEL: name}) for m in members)], members


def _items(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    out = cluster.kube.kubectl("-n", NAMESPACE, "get", kind, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_every_bad_manifest_is_reported_and_nothing_is_left_in_slurm(
    cluster: Cluster, bridge: BridgeProcess
) -> None:
    assert len(CASES) >= 30
    started = time.monotonic()
    expected: dict[str, Bad] = {}
    event_object: dict[str, str] = {}  # pod -> the object its Warning event is about
    manifests: list[dict[str, Any]] = []
    for bad in CASES:
        name = unique(bad.id[:40]).lower()
        created, pods = _manifests(bad, name)
        manifests += created
        expected.update(dict.fromkeys(pods, bad))
        event_object.update({pod: name if bad.group is not None else pod for pod in pods})
    listed = {"apiVersion": "v1", "kind": "List", "items": manifests}
    cluster.kube.kubectl("create", "-f", "-", stdin=json.dumps(listed))

    def missing() -> dict[str, str]:
        """Pods whose Warning event or condition does not (yet) name their problem."""
        pods = {p["metadata"]["name"]: p for p in _items(cluster, "pods")}
        warned: dict[str, list[str]] = {}
        for event in _items(cluster, "events"):
            if event.get("type") == "Warning":
                warned.setdefault(event["involvedObject"]["name"], []).append(str(event.get("message")))
        gaps: dict[str, str] = {}
        for name, bad in expected.items():
            events = warned.get(event_object[name], [])
            conditions = (pods.get(name) or {}).get("status", {}).get("conditions") or []
            scheduled: dict[str, Any] = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
            named = scheduled.get("status") == "False" and bad.named_in(scheduled.get("message"))
            if bad.event_is_enough:
                # Slurm decided: a refusal (event + condition), a job failed at once (the pod is deleted
                # with a Warning event) or a job queued for good (the condition shows Slurm's reason).
                if not (named or any(bad.named_in(m) for m in events)):
                    gaps[name] = f"condition: {scheduled}; Warning events: {events}"
            elif not any(bad.named_in(m) for m in events):
                gaps[name] = f"Warning events: {events}"
            elif not named:
                gaps[name] = f"condition: {scheduled}"
        return gaps

    deadline = time.monotonic() + 60
    gaps = missing()
    while gaps and time.monotonic() < deadline:
        bridge.assert_alive()
        time.sleep(1)
        gaps = missing()
    assert not gaps, "\n".join(f"{expected[n].id} ({n}): {why[:300]}" for n, why in gaps.items())
    bridge.assert_alive()
    reported = time.monotonic() - started

    # Once the pods are gone, nothing of this bridge's is left active in Slurm.
    _clear(cluster)
    marker = f"cluster={bridge.config['cluster_id']} "

    def active_jobs() -> list[str]:
        out = cluster.slurm.cli("squeue", "-h", "-t", "pending,running,suspended", "-o", "%i|%k")
        return [row for row in out.splitlines() if marker in row]

    wait_for("no active Slurm job of this bridge", lambda: not active_jobs(), 30)
    bridge.assert_alive()
    print(f"{len(expected)} bad pods from {len(CASES)} manifests reported in {reported:.1f} s")

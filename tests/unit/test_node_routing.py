"""Node events: one Node change wakes only the pods and gangs that can bind onto that node."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from slurm_bridge.routing import NO_WORK, NodeWork, work_for_node_change

LABEL = "slurm.node/name"


def node(
    name: str = "k1",
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    ready: str = "True",
    heartbeat: str = "2026-12-03T12:00:00Z",
    resource_version: str = "1",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"unschedulable": True} if unschedulable else {}
    if taints is not None:
        spec["taints"] = taints
    return {
        "metadata": {"name": name, "labels": labels or {}, "resourceVersion": resource_version},
        "spec": spec,
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat},
            ]
        },
    }


def heartbeat(obj: dict[str, Any]) -> dict[str, Any]:
    beat = copy.deepcopy(obj)
    beat["metadata"]["resourceVersion"] = "2"
    for condition in beat["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2026-12-03T12:00:10Z"
    return beat


# Slurm node -> (pod keys, gang keys) of unfinished jobs allocated on it
ON_NODE: dict[str, tuple[set[str], set[str]]] = {
    "k1": ({"ns/waiting", "ns/bound"}, {"ns/podgroup.scheduling.x-k8s.io/g"}),
    "s7": ({"ns/on-s7"}, set()),
    "s8": ({"ns/on-s8"}, set()),
}
BOUND = {"ns/bound"}


def keys_on_node(slurm_node: str) -> tuple[set[str], set[str]]:
    return ON_NODE.get(slurm_node, (set(), set()))


WAKES_K1 = NodeWork(pods=frozenset({"ns/waiting"}), gangs=frozenset({"ns/podgroup.scheduling.x-k8s.io/g"}))
TAINT = {"key": "t", "value": "v", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("old", "new", "label", "expected"),
    [
        (None, node(), None, WAKES_K1),
        (node(), None, None, WAKES_K1),
        (node(), heartbeat(node()), None, NO_WORK),
        (node(), node(resource_version="9"), None, NO_WORK),
        (node(), node(labels={"zone": "a"}), None, WAKES_K1),
        (node(), node(taints=[TAINT]), None, WAKES_K1),
        (node(taints=[TAINT]), node(taints=[dict(TAINT, effect="NoExecute")]), None, WAKES_K1),
        (node(), node(unschedulable=True), None, WAKES_K1),
        (node(), node(ready="False"), None, WAKES_K1),
        (None, node("k9"), None, NO_WORK),
        (None, node(labels={LABEL: "s7"}), LABEL, NodeWork(pods=frozenset({"ns/on-s7"}))),
        (None, node(), LABEL, NO_WORK),
        (
            node(labels={LABEL: "s7"}),
            node(labels={LABEL: "s8"}),
            LABEL,
            NodeWork(pods=frozenset({"ns/on-s7", "ns/on-s8"})),
        ),
        (node(labels={LABEL: "s7"}), heartbeat(node(labels={LABEL: "s7"})), LABEL, NO_WORK),
    ],
    ids=[
        "added",
        "deleted",
        "heartbeat-only",
        "resource-version-only",
        "label-added",
        "taint-added",
        "taint-effect-changed",
        "cordoned",
        "not-ready",
        "added-no-job-there",
        "added-mapped-by-label",
        "added-without-mapping-label",
        "mapping-label-moved-wakes-both",
        "mapped-heartbeat-only",
    ],
)
def test_node_event_wakes_only_work_that_can_bind_there(
    old: dict[str, Any] | None, new: dict[str, Any] | None, label: str | None, expected: NodeWork
) -> None:
    work = work_for_node_change(
        old,
        new,
        node_name_label=label,
        keys_on_node=keys_on_node,
        waiting_to_bind=lambda key: key not in BOUND,
    )
    assert work == expected


def test_a_wave_of_heartbeats_asks_for_no_job_lookup() -> None:
    looked_up: list[str] = []

    def counting(slurm_node: str) -> tuple[set[str], set[str]]:
        looked_up.append(slurm_node)
        return keys_on_node(slurm_node)

    for i in range(1000):
        before = node(f"k{i}")
        assert (
            work_for_node_change(
                before, heartbeat(before), node_name_label=None, keys_on_node=counting, waiting_to_bind=bool
            )
            == NO_WORK
        )
    assert looked_up == []

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind
from bridge.gang_marker import GangMarker, decode_gang_marker
from bridge.gang_translate import (
    GangTranslationError,
    gang_job_spec_for,
    gang_spec_digest,
    placeholder_gang_job_for,
)
from bridge.objects import PodInfo
from bridge.translate import BATCH_PLACEHOLDER_SCRIPT
from slurm_client import JobSpec

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"

CONFIG = BridgeConfig(cluster_id="c1")
CONFIG_WITH_DEFAULT_LIMIT = BridgeConfig(cluster_id="c1", slurm={"default_time_limit_minutes": 30})


def member(
    name: str,
    *,
    cpu: str = "1",
    memory: str = "1Gi",
    gpus: int = 0,
    annotations: dict[str, str] | None = None,
    deadline: int | None = None,
) -> PodInfo:
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {
        "schedulerName": "slurm-bridge-scheduler",
        "containers": [{"name": "c", "resources": {"requests": requests}}],
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    meta = {"name": name, "namespace": "ml", "uid": UID, "annotations": annotations or {}}
    return PodInfo.from_api({"metadata": meta, "spec": spec})


def group(annotations: dict[str, str] | None = None, min_resources: dict[str, str] | None = None) -> GangInfo:
    return GangInfo(
        key=GangKey(namespace="ml", kind=GangKind.COSCHEDULING, name="train"),
        uid=UID,
        min_member=2,
        annotations=annotations or {},
        min_resources=min_resources or {},
    )


TWO = [member("w-0"), member("w-1")]
BASE = JobSpec(
    name="train",
    partition="slurm-bridge",
    min_nodes=2,
    max_nodes=2,
    tasks=2,
    cpus_per_task=1,
    memory_per_node_mb=1024,
)


@pytest.mark.parametrize(
    ("gang", "members", "owner", "config", "expected"),
    [
        pytest.param(group(), TWO, {}, CONFIG, BASE, id="one-node-per-member"),
        pytest.param(
            group(),
            [
                member("w-0", cpu="500m", memory="3Gi"),
                member("w-1", cpu="4", memory="512Mi", gpus=2),
                member("w-2"),
            ],
            {},
            CONFIG,
            BASE.model_copy(
                update={
                    "min_nodes": 3,
                    "max_nodes": 3,
                    "tasks": 3,
                    "cpus_per_task": 4,
                    "memory_per_node_mb": 3072,
                    "gres_per_node": {"gpu": 2},
                }
            ),
            id="per-node-resources-of-the-largest-member-resource-by-resource",
        ),
        pytest.param(
            group({"slinky.slurm.net/job-name": "pgReplicaset", "slinky.slurm.net/account": "physics"}),
            [member("w-0", annotations={"slinky.slurm.net/account": "mine", "slinky.slurm.net/qos": "high"})],
            {"slurmjob.slinky.slurm.net/account": "owner", "slinky.slurm.net/partition": "big"},
            CONFIG,
            BASE.model_copy(
                update={
                    "name": "pgReplicaset",
                    "account": "physics",
                    "qos": "high",
                    "partition": "big",
                    "min_nodes": 1,
                    "max_nodes": 1,
                    "tasks": 1,
                }
            ),
            id="options-group-over-owner-over-first-member",
        ),
        pytest.param(
            group(),
            [
                member("w-0", annotations={"slinky.slurm.net/account": "first"}),
                member("w-1", annotations={"slinky.slurm.net/account": "second"}),
            ],
            {"slinky.slurm.net/job-name": "from-owner"},
            CONFIG,
            BASE.model_copy(update={"name": "from-owner", "account": "first"}),
            id="first-member-options-only",
        ),
        pytest.param(
            group({"slinky.slurm.net/mem-per-node": "4G", "slinky.slurm.net/cpu-per-task": "8"}),
            TWO,
            {},
            CONFIG,
            BASE.model_copy(update={"cpus_per_task": 8, "memory_per_node_mb": 4096}),
            id="group-per-node-options",
        ),
        pytest.param(
            group(min_resources={"cpu": "9", "memory": "6Gi", "nvidia.com/gpu": "3"}),
            TWO,
            {},
            CONFIG,
            BASE.model_copy(
                update={"cpus_per_task": 5, "memory_per_node_mb": 3072, "gres_per_node": {"gpu": 2}}
            ),
            id="min-resources-even-share-rounded-up",
        ),
        pytest.param(
            group(),
            [member("w-0", deadline=600), member("w-1", deadline=1801)],
            {},
            CONFIG,
            BASE.model_copy(update={"time_limit_minutes": 31}),
            id="longest-member-deadline",
        ),
        pytest.param(
            group(),
            [member("w-0", deadline=600), member("w-1")],
            {},
            CONFIG_WITH_DEFAULT_LIMIT,
            BASE.model_copy(update={"time_limit_minutes": 30}),
            id="a-member-without-deadline-takes-the-default",
        ),
        pytest.param(
            group({"slinky.slurm.net/timelimit": "90"}),
            [member("w-0", deadline=60), member("w-1", deadline=60)],
            {},
            CONFIG,
            BASE.model_copy(update={"time_limit_minutes": 90}),
            id="timelimit-option-wins-over-deadlines",
        ),
    ],
)
def test_gang_job_spec(
    gang: GangInfo, members: list[PodInfo], owner: dict[str, str], config: BridgeConfig, expected: JobSpec
) -> None:
    assert gang_job_spec_for(gang, members, config, owner) == expected


@pytest.mark.parametrize(
    ("gang", "members", "owner", "problems"),
    [
        pytest.param(group(), [], {}, ["the gang has no members to run"], id="no-members"),
        pytest.param(
            group({"slinky.slurm.net/min-nodes": "2"}),
            TWO,
            {},
            [
                "slinky.slurm.net/min-nodes on the group: a gang runs on one node per member (2),"
                " so node counts cannot be set"
            ],
            id="node-count-on-group",
        ),
        pytest.param(
            group(),
            [member("w-0", annotations={"slinky.slurm.net/max-nodes": "1"}), member("w-1")],
            {},
            [
                "slinky.slurm.net/max-nodes on pod w-0: a gang runs on one node per member (2),"
                " so node counts cannot be set"
            ],
            id="node-count-on-member",
        ),
        pytest.param(
            group({"slinky.slurm.net/timelimit": "soon"}),
            TWO,
            {},
            ["slinky.slurm.net/timelimit: 'soon' is not a whole number >= 1"],
            id="group-problem-reported-once",
        ),
        pytest.param(
            group(),
            TWO,
            {"slinky.slurm.net/colour": "blue"},
            [
                "unknown annotation 'slinky.slurm.net/colour' (options under 'slinky.slurm.net/': job-name,"
                " account, partition, qos, timelimit, reservation, constraints, licenses, wckey, priority,"
                " exclusive, gres, min-nodes, max-nodes, mem-per-node, cpu-per-task)"
            ],
            id="unknown-owner-option",
        ),
        pytest.param(
            group({"slinky.slurm.net/mem-per-node": "1G"}),
            [member("w-0"), member("w-1", memory="2Gi")],
            {},
            ["pod w-1: mem-per-node 1024M is less than the pod's 2048M requested memory"],
            id="group-per-node-option-too-small-for-a-member",
        ),
        pytest.param(
            group(),
            [member("w-0", cpu="lots"), member("w-1", annotations={"slinky.slurm.net/priority": "-1"})],
            {},
            [
                "pod w-0: container 'c': cpu: 'lots' is not a Kubernetes quantity",
                "pod w-1: slinky.slurm.net/priority: '-1' is not a whole number >= 0",
            ],
            id="member-problems-name-the-pod",
        ),
        pytest.param(
            group(min_resources={"cpu": "many"}),
            TWO,
            {},
            ["the group's minResources: cpu: 'many' is not a Kubernetes quantity"],
            id="bad-min-resources",
        ),
    ],
)
def test_untranslatable_gangs(
    gang: GangInfo, members: list[PodInfo], owner: dict[str, str], problems: list[str]
) -> None:
    with pytest.raises(GangTranslationError) as caught:
        gang_job_spec_for(gang, members, CONFIG, owner)
    assert list(caught.value.problems) == problems
    assert str(caught.value).startswith(
        "gang ml/podgroup.scheduling.x-k8s.io/train cannot become a Slurm job: "
    )


def test_placeholder_carries_the_gang_marker_and_script() -> None:
    spec = placeholder_gang_job_for(group(), TWO, CONFIG)
    assert decode_gang_marker(spec.comment, "c1") == GangMarker(
        cluster_id="c1",
        namespace="ml",
        kind=GangKind.COSCHEDULING,
        name="train",
        group_uid=UID,
        spec_digest=gang_spec_digest(BASE),
    )
    assert spec.script == BATCH_PLACEHOLDER_SCRIPT
    assert spec.standard_output == "/dev/null"  # the placeholder prints nothing
    assert spec.model_copy(update={"comment": None, "script": None, "standard_output": None}) == BASE


@pytest.mark.parametrize(
    ("members", "changed"),
    [
        pytest.param([member("w-0"), member("w-1"), member("w-2")], True, id="a-member-more"),
        pytest.param([member("w-0")], True, id="a-member-less"),
        pytest.param([member("w-0"), member("w-1", cpu="2")], True, id="a-bigger-member"),
        pytest.param([member("x-0"), member("x-1")], False, id="same-shape-other-pods"),
        pytest.param([member("w-1"), member("w-0")], False, id="same-pods-other-order"),
    ],
)
def test_digest_follows_what_the_job_asks_for(members: list[PodInfo], changed: bool) -> None:
    before = gang_spec_digest(gang_job_spec_for(group(), TWO, CONFIG))
    after = gang_spec_digest(gang_job_spec_for(group(), members, CONFIG))
    assert (before != after) is changed


def test_group_without_uid_cannot_be_submitted() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        placeholder_gang_job_for(group().model_copy(update={"uid": ""}), TWO, CONFIG)

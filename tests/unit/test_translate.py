from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bridge.config import BridgeConfig, PlaceholderMode, SlurmConfig
from bridge.marker import decode_marker
from bridge.objects import PodInfo
from bridge.translate import (
    BATCH_PLACEHOLDER_SCRIPT,
    JobOutcome,
    TranslationError,
    Verdict,
    job_spec_for,
    parse_quantity,
    placeholder_job_for,
    select_pod,
    spec_digest,
)
from bridge.wellknown import Reason

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
GiB = 1024


def config(**fields: Any) -> BridgeConfig:
    return BridgeConfig(**fields)


def container(
    requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    return {"name": extra.pop("name", "c"), "image": "busybox", "resources": resources, **extra}


def sidecar(requests: dict[str, Any]) -> dict[str, Any]:
    return container(requests, name="sidecar", restartPolicy="Always")


def pod(
    containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> PodInfo:
    meta: dict[str, Any] = {"name": "train-0", "namespace": "slurm-bridge", "uid": UID}
    meta.update(spec.pop("metadata", {}))
    if annotations:
        meta["annotations"] = annotations
    body = {"schedulerName": "slurm-bridge-scheduler", "containers": containers or [container()], **spec}
    return PodInfo.from_api({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body, "status": {}})


def problems_of(p: PodInfo, cfg: BridgeConfig | None = None) -> tuple[str, ...]:
    with pytest.raises(TranslationError) as caught:
        job_spec_for(p, cfg or config())
    return caught.value.problems


# --- resources -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "cpus", "memory_mb", "gres"),
    [
        (pod(), 1, 1, {}),
        (pod([container({"cpu": "100m", "memory": "100Mi"})]), 1, 100, {}),
        (pod([container({"cpu": "1500m", "memory": "1.5Gi"})]), 2, 1536, {}),
        (pod([container({"cpu": 2, "memory": "1G"})]), 2, 954, {}),
        (pod([container({"memory": "1000"})]), 1, 1, {}),
        (pod([container(limits={"cpu": "3", "memory": "2Gi"})]), 3, 2 * GiB, {}),
        (pod([container({"cpu": "1"}, {"cpu": "4", "memory": "1Gi"})]), 1, GiB, {}),
        (
            pod([container({"cpu": "1", "memory": "1Gi"}), container({"cpu": "1.5", "memory": "512Mi"})]),
            3,
            1536,
            {},
        ),
        (
            pod([container({"cpu": "1"})], initContainers=[container({"cpu": "4", "memory": "1Gi"})]),
            4,
            GiB,
            {},
        ),
        (
            pod([container({"cpu": "2"}), container({"cpu": "2"})], initContainers=[container({"cpu": "3"})]),
            4,
            1,
            {},
        ),
        (
            pod([container({"cpu": "1"})], initContainers=[sidecar({"cpu": "500m", "memory": "64Mi"})]),
            2,
            64,
            {},
        ),
        (
            pod([container({"cpu": "1"})], initContainers=[sidecar({"cpu": "1"}), container({"cpu": "3"})]),
            4,
            1,
            {},
        ),
        (
            pod([container({"cpu": "1", "memory": "1Gi"})], overhead={"cpu": "250m", "memory": "120Mi"}),
            2,
            1144,
            {},
        ),
        (pod([container({"cpu": "1", "memory": "1Gi"})], resources={"requests": {"cpu": "6"}}), 6, GiB, {}),
        (pod([container()], resources={"limits": {"cpu": "2", "memory": "3Gi"}}), 2, 3 * GiB, {}),
        (pod([container(limits={"nvidia.com/gpu": 2})]), 1, 1, {"gpu": 2}),
        (pod([container({"amd.com/gpu": "1"}, {"amd.com/gpu": "1"})]), 1, 1, {"gpu": 1}),
        (
            pod([container(limits={"nvidia.com/gpu": 1}), container(limits={"nvidia.com/gpu": 1})]),
            1,
            1,
            {"gpu": 2},
        ),
        (pod([container({"cpu": "1", "ephemeral-storage": "10Gi", "example.com/foo": "3"})]), 1, 1, {}),
    ],
    ids=[
        "no-resources-still-explicit",
        "millicores-round-up",
        "fractions-round-up",
        "number-cpu-decimal-memory",
        "bytes-round-up-to-a-mib",
        "limits-when-no-requests",
        "requests-win-over-limits",
        "containers-add-up",
        "init-container-peak-wins",
        "app-sum-wins-over-init",
        "sidecar-adds-to-apps",
        "init-runs-beside-earlier-sidecar",
        "overhead-added",
        "pod-level-requests-win",
        "pod-level-limit-defaults-request",
        "nvidia-gpu",
        "amd-gpu",
        "gpus-add-up",
        "other-resources-ignored",
    ],
)
def test_resources_become_exact_slurm_requests(
    p: PodInfo, cpus: int, memory_mb: int, gres: dict[str, int]
) -> None:
    spec = job_spec_for(p, config())
    assert (spec.cpus_per_task, spec.memory_per_node_mb, spec.gres_per_node) == (cpus, memory_mb, gres)
    assert (spec.min_nodes, spec.max_nodes, spec.tasks, spec.exclusive) == (1, 1, 1, False)
    assert spec.script is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1Ki", Decimal(1024)),
        ("2Gi", Decimal(2 * 2**30)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("100u", Decimal("0.0001")),
    ],
    ids=["int", "milli", "fraction", "leading-dot", "kibi", "gibi", "giga", "exponent", "micro"],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Gb", "1 Gi", "-1", "1.2.3", "Gi"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"quantity|negative"):
        parse_quantity(text)


# --- job options from annotations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"slinky.slurm.net/job-name": "pausepod"}, {"name": "pausepod"}),
        ({"slurmjob.slinky.slurm.net/job-name": "pausepod"}, {"name": "pausepod"}),
        ({}, {"name": "train-0", "partition": "slurm-bridge"}),
        (
            {
                "slinky.slurm.net/account": "physics",
                "slinky.slurm.net/partition": "gpu",
                "slinky.slurm.net/qos": "high",
                "slinky.slurm.net/reservation": "maint",
                "slinky.slurm.net/constraints": "intel&ib",
                "slinky.slurm.net/licenses": "matlab:2",
                "slinky.slurm.net/wckey": "proj1",
                "slinky.slurm.net/priority": "0",
            },
            {
                "account": "physics",
                "partition": "gpu",
                "qos": "high",
                "reservation": "maint",
                "constraints": "intel&ib",
                "licenses": "matlab:2",
                "wckey": "proj1",
                "priority": 0,
            },
        ),
        ({"slurmjob.slinky.slurm.net/timelimit": "90"}, {"time_limit_minutes": 90}),
        ({"slinky.slurm.net/exclusive": "True"}, {"exclusive": True}),
        ({"slinky.slurm.net/exclusive": "false"}, {"exclusive": False}),
        (
            {"slinky.slurm.net/max-nodes": "2", "slinky.slurm.net/min-nodes": "1"},
            {"min_nodes": 1, "max_nodes": 2},
        ),
        ({"slinky.slurm.net/mem-per-node": "8G"}, {"memory_per_node_mb": 8192}),
        ({"slinky.slurm.net/mem-per-node": "4096"}, {"memory_per_node_mb": 4096}),
        ({"slinky.slurm.net/mem-per-node": "2Gi"}, {"memory_per_node_mb": 2048}),
        ({"slinky.slurm.net/cpu-per-task": "8"}, {"cpus_per_task": 8}),
        ({"slinky.slurm.net/gres": "shard:4"}, {"gres_per_node": {"shard": 4}}),
        ({"slinky.slurm.net/gres": "gpu:a100:2,shard"}, {"gres_per_node": {"gpu:a100": 2, "shard": 1}}),
        (
            {"slinky.slurm.net/job-name": "same", "slurmjob.slinky.slurm.net/job-name": " same "},
            {"name": "same"},
        ),
        ({"slinky.slurm.net/slurm-node": "node1", "example.com/other": "x"}, {"name": "train-0"}),
    ],
    ids=[
        "seed-job-name",
        "long-prefix-job-name",
        "defaults",
        "plain-options",
        "timelimit",
        "exclusive-any-case",
        "exclusive-false",
        "node-range",
        "mem-gigabytes",
        "mem-plain-mib",
        "mem-gibi",
        "cpu-per-task",
        "gres",
        "gres-typed",
        "both-prefixes-agree",
        "bridge-and-foreign-annotations-ignored",
    ],
)
def test_annotations_set_job_options(annotations: dict[str, str], expected: dict[str, Any]) -> None:
    spec = job_spec_for(pod(annotations=annotations), config())
    assert {name: getattr(spec, name) for name in expected} == expected


def test_gres_annotation_may_name_the_gpus_the_pod_requests() -> None:
    p = pod([container(limits={"nvidia.com/gpu": 2})], annotations={"slinky.slurm.net/gres": "gpu:h100:2"})
    assert job_spec_for(p, config()).gres_per_node == {"gpu:h100": 2}


@pytest.mark.parametrize(
    ("annotations", "expected_problems"),
    [
        (
            {"slinky.slurm.net/timelimit": "1.5"},
            ["slinky.slurm.net/timelimit: '1.5' is not a whole number >= 1"],
        ),
        ({"slinky.slurm.net/timelimit": "-5"}, ["'-5' is not a whole number >= 1"]),
        ({"slinky.slurm.net/timelimit": "0"}, ["'0' is not a whole number >= 1"]),
        ({"slinky.slurm.net/priority": "high"}, ["'high' is not a whole number >= 0"]),
        ({"slinky.slurm.net/exclusive": "yes"}, ['\'yes\' is not "true" or "false"']),
        (
            {"slurmjob.slinky.slurm.net/walltime": "5"},
            ["unknown annotation 'slurmjob.slinky.slurm.net/walltime'"],
        ),
        ({"slinky.slurm.net/user-id": "1000"}, ["unknown annotation 'slinky.slurm.net/user-id'"]),
        (
            {"slinky.slurm.net/partition": "a", "slurmjob.slinky.slurm.net/partition": "b"},
            ["'slinky.slurm.net/partition' ('a') and 'slurmjob.slinky.slurm.net/partition' ('b') disagree"],
        ),
        (
            {"slinky.slurm.net/account": "  "},
            ["slinky.slurm.net/account: '' is not a non-empty single-line value"],
        ),
        ({"slinky.slurm.net/job-name": "a\nb"}, ["is not a non-empty single-line value"]),
        ({"slinky.slurm.net/min-nodes": "2"}, ["a pod runs on one node, so min-nodes must be 1"]),
        ({"slinky.slurm.net/min-nodes": "1", "slinky.slurm.net/max-nodes": "0"}, ["max-nodes: '0'"]),
        ({"slinky.slurm.net/mem-per-node": "lots"}, ["'lots' is not a size"]),
        (
            {"slinky.slurm.net/mem-per-node": "512K"},
            ["mem-per-node 1M is less than the pod's 64M requested memory"],
        ),
        ({"slinky.slurm.net/cpu-per-task": "1"}, ["cpu-per-task 1 is less than the pod's 2 requested CPUs"]),
        ({"slinky.slurm.net/gres": "gpu:"}, ["'gpu:' is not a GRES list"]),
        ({"slinky.slurm.net/gres": "gpu:0"}, ["'gpu:0' is not a GRES list"]),
        ({"slinky.slurm.net/gres": "gpu:1"}, ["gres asks for 1 GPUs but the pod's containers request 2"]),
    ],
    ids=[
        "timelimit-not-integer",
        "timelimit-negative",
        "timelimit-zero",
        "priority-not-integer",
        "exclusive-not-bool",
        "unknown-long-prefix-key",
        "unknown-seed-key",
        "prefixes-disagree",
        "blank-value",
        "multi-line-value",
        "several-nodes-for-one-pod",
        "max-nodes-zero",
        "memory-unparsable",
        "memory-below-request",
        "cpus-below-request",
        "gres-empty-type",
        "gres-zero",
        "gres-gpus-disagree",
    ],
)
def test_malformed_options_are_reported(annotations: dict[str, str], expected_problems: list[str]) -> None:
    p = pod([container({"cpu": "2", "memory": "64Mi"}, {"nvidia.com/gpu": 2})], annotations=annotations)
    problems = problems_of(p)
    for expected in expected_problems:
        assert any(expected in problem for problem in problems), problems


def test_every_problem_is_listed_in_one_error() -> None:
    p = pod(
        [container({"cpu": "lots"})],
        annotations={
            "slinky.slurm.net/timelimit": "soon",
            "slinky.slurm.net/exclusive": "1",
            "slurmjob.slinky.slurm.net/colour": "blue",
        },
    )
    with pytest.raises(TranslationError) as caught:
        job_spec_for(p, config())
    error = caught.value
    assert len(error.problems) == 4
    assert str(error).startswith("pod slurm-bridge/train-0 cannot become a Slurm job: ")
    assert all(problem in error.message for problem in error.problems)
    assert "container 'c': cpu: 'lots' is not a Kubernetes quantity" in error.problems


def test_fractional_gpus_are_an_error() -> None:
    assert problems_of(pod([container(limits={"nvidia.com/gpu": "500m"})])) == (
        "GPU requests must be whole numbers, got 0.500",
    )


# --- time limit and name fallbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "deadline", "default", "expected"),
    [
        ({"slinky.slurm.net/timelimit": "30"}, 3600, 10, 30),
        ({}, 3600, 10, 60),
        ({}, 61, 10, 2),
        ({}, 1, None, 1),
        ({}, None, 10, 10),
        ({}, None, None, None),
    ],
    ids=[
        "annotation-first",
        "active-deadline",
        "deadline-rounds-up",
        "tiny-deadline",
        "config-default",
        "none",
    ],
)
def test_time_limit_fallbacks(
    annotations: dict[str, str], deadline: int | None, default: int | None, expected: int | None
) -> None:
    p = pod(annotations=annotations, activeDeadlineSeconds=deadline)
    cfg = config(slurm=SlurmConfig(default_time_limit_minutes=default))
    assert job_spec_for(p, cfg).time_limit_minutes == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"name": "web-1"}, "web-1"), ({"name": "", "generateName": "web-"}, "web"), ({"name": ""}, "pod")],
    ids=["pod-name", "generate-name", "last-resort"],
)
def test_job_is_never_nameless(metadata: dict[str, str], expected: str) -> None:
    assert job_spec_for(pod(metadata=metadata), config()).name == expected


def test_partition_defaults_to_config() -> None:
    assert job_spec_for(pod(), config(slurm=SlurmConfig(partition="k8s"))).partition == "k8s"


# --- selection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "verdict"),
    [
        (pod(), Verdict.SUBMIT),
        (pod(schedulerName="default-scheduler"), Verdict.NOT_OURS),
        (pod(metadata={"namespace": "team-a"}, schedulerName="default-scheduler"), Verdict.NOT_OURS),
        (pod(metadata={"namespace": "team-a"}), Verdict.REFUSE),
        (pod(nodeName="node1"), Verdict.SETTLED),
        (pod(metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"}), Verdict.SETTLED),
        (
            PodInfo.from_api(
                {
                    "metadata": {"name": "p", "namespace": "slurm-bridge"},
                    "spec": {"schedulerName": "slurm-bridge-scheduler"},
                    "status": {"phase": "Succeeded"},
                }
            ),
            Verdict.SETTLED,
        ),
    ],
    ids=[
        "ours",
        "other-scheduler",
        "other-scheduler-other-namespace",
        "namespace-refused",
        "bound",
        "deleting",
        "done",
    ],
)
def test_select_pod(p: PodInfo, verdict: Verdict) -> None:
    assert select_pod(p, config()).verdict is verdict


def test_refusal_explains_itself() -> None:
    selection = select_pod(pod(metadata={"namespace": "team-a"}), config(namespaces=["ml", "hpc"]))
    assert selection.reason is Reason.NAMESPACE_NOT_ALLOWED
    assert "'team-a' is not allowed" in selection.message
    assert "ml, hpc" in selection.message


# --- placeholder job ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "script"),
    [
        (PlaceholderMode.BATCH, BATCH_PLACEHOLDER_SCRIPT),
        (PlaceholderMode.EXTERNAL, None),
        (PlaceholderMode.AUTO, None),
    ],
    ids=["batch", "external", "auto"],
)
def test_placeholder_job_carries_marker_and_script(mode: PlaceholderMode, script: str | None) -> None:
    p = pod(annotations={"slinky.slurm.net/job-name": "pausepod"})
    cfg = config(cluster_id="east", slurm=SlurmConfig(placeholder_mode=mode))
    job = placeholder_job_for(p, cfg)
    marker = decode_marker(job.comment, "east")
    assert marker is not None
    assert (marker.namespace, marker.pod_name, marker.pod_uid) == ("slurm-bridge", "train-0", UID)
    assert marker.spec_digest == spec_digest(job_spec_for(p, cfg)) == spec_digest(job)
    assert job.script == script
    assert job.standard_output == ("/dev/null" if script is not None else None)
    assert job.name == "pausepod"


def test_spec_digest_follows_what_the_job_asks_for() -> None:
    base = job_spec_for(pod(), config())
    assert spec_digest(base) == spec_digest(job_spec_for(pod(), config()))
    assert spec_digest(base) != spec_digest(job_spec_for(pod([container({"cpu": "2"})]), config()))
    assert spec_digest(base) == spec_digest(base.model_copy(update={"comment": "x", "script": "#!/bin/sh"}))


def test_batch_script_traps_the_outcome_signals() -> None:
    assert JobOutcome.SUCCESS.batch_signal == "USR1"
    assert JobOutcome.FAILURE.batch_signal == "USR2"
    assert JobOutcome.CANCEL.batch_signal is None
    assert "trap 'finish 0' USR1" in BATCH_PLACEHOLDER_SCRIPT
    assert "trap failed USR2" in BATCH_PLACEHOLDER_SCRIPT


@pytest.mark.parametrize(
    ("pod", "owner", "expected"),
    [
        ({}, {}, {}),
        ({"a": "1"}, {"kubectl.kubernetes.io/last-applied-configuration": "{}"}, {"a": "1"}),
        (
            {"slinky.slurm.net/job-name": "p"},
            {"slinky.slurm.net/job-name": "o"},
            {"slinky.slurm.net/job-name": "o"},
        ),
        (
            {"slurmjob.slinky.slurm.net/job-name": "p", "slinky.slurm.net/account": "x"},
            {"slinky.slurm.net/job-name": "o"},
            {"slinky.slurm.net/job-name": "o", "slinky.slurm.net/account": "x"},
        ),
    ],
    ids=["nothing", "foreign owner annotations ignored", "owner wins", "owner wins across prefixes"],
)
def test_with_owner_options(pod: dict[str, str], owner: dict[str, str], expected: dict[str, str]) -> None:
    from bridge.translate import with_owner_options

    assert with_owner_options(pod, owner) == expected

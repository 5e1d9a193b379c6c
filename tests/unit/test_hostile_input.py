"""Hand-picked hostile values: each gives the module's typed error with a readable message, never a bare
ValueError, decimal.Overflow or OverflowError (issue 16). Property tests are in test_properties.py."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import GangInfo, GangKey, GangKind, gang_key_for, member_order
from bridge.gang_translate import GangTranslationError, gang_job_spec_for
from bridge.numbers import ascii_int
from bridge.objects import PodInfo
from bridge.translate import QuantityError, TranslationError, job_spec_for, parse_quantity
from slurm_client._hostlist import HostlistError, compress_hostlist, expand_hostlist
from slurm_client._wire import gres_counts, number

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
HUGE = "9" * 5000  # more digits than int() converts (4,300)

with pytest.MonkeyPatch.context() as _env:
    for _name in os.environ:
        if _name.startswith("SLURM_BRIDGE_"):
            _env.delenv(_name)
    CONFIG = BridgeConfig(cluster_id="c1")


def pod(
    annotations: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "p-0",
    **spec: Any,
) -> PodInfo:
    body = {
        "schedulerName": "slurm-bridge-scheduler",
        "containers": [{"name": "c", "resources": {"requests": requests or {"cpu": "1"}}}],
        **spec,
    }
    meta = {
        "name": name,
        "namespace": "ml",
        "uid": UID,
        "annotations": annotations or {},
        "labels": labels or {},
    }
    return PodInfo.from_api({"metadata": meta, "spec": body})


A = "slinky.slurm.net/"


@pytest.mark.parametrize(
    ("annotations", "requests", "expected"),
    [
        pytest.param({A + "timelimit": HUGE}, None, "is too large", id="timelimit-5000-digits"),
        pytest.param({A + "priority": HUGE}, None, "is too large", id="priority-5000-digits"),
        pytest.param({A + "min-nodes": "1" + "0" * 4400}, None, "is too large", id="min-nodes-4401-digits"),
        pytest.param({A + "max-nodes": "99999999999"}, None, "is too large", id="max-nodes-beyond-32-bit"),
        pytest.param({A + "cpu-per-task": "70000"}, None, "is too large", id="cpu-per-task-beyond-16-bit"),
        pytest.param(
            {A + "timelimit": "\u0661\u0660"}, None, "is not a whole number", id="timelimit-arabic-digits"
        ),
        pytest.param({A + "priority": "\u00b2"}, None, "is not a whole number", id="priority-superscript"),
        pytest.param({A + "mem-per-node": "\u0665G"}, None, "is not a size", id="mem-arabic-digits"),
        pytest.param({A + "mem-per-node": HUGE}, None, "is not a size", id="mem-5000-digits"),
        pytest.param({A + "mem-per-node": "99999999999999T"}, None, "is not a size", id="mem-beyond-64-bit"),
        pytest.param({A + "gres": "gpu:\u0662"}, None, "is not a GRES list", id="gres-arabic-count"),
        pytest.param({A + "gres": "gpu:" + HUGE}, None, "is not a GRES list", id="gres-5000-digit-count"),
        pytest.param({A + "gres": "gpü:1"}, None, "is not a GRES list", id="gres-non-ascii-name"),
        pytest.param(None, {"cpu": "1e999999999"}, "out of range", id="cpu-1e999999999"),
        pytest.param(None, {"memory": "1e-999999999"}, "out of range", id="memory-tiny-exponent"),
        pytest.param(None, {"cpu": HUGE}, "too long", id="cpu-5000-digits"),
        pytest.param(None, {"cpu": "99999999999999999999"}, "out of range", id="cpu-beyond-2-63"),
        pytest.param(None, {"cpu": "1000000"}, "more than Slurm allows per task", id="cpu-beyond-16-bit"),
        pytest.param(None, {"memory": "9Ei"}, "out of range", id="memory-9Ei"),
        pytest.param(None, {"cpu": "\u0661"}, "not a Kubernetes quantity", id="cpu-arabic-digit"),
        pytest.param(None, {"cpu": "NaN"}, "not a Kubernetes quantity", id="cpu-nan"),
        pytest.param(None, {"cpu": "inf"}, "not a Kubernetes quantity", id="cpu-inf"),
        pytest.param(None, {"cpu": "-1"}, "negative", id="cpu-negative"),
        pytest.param(None, {"nvidia.com/gpu": "1e30"}, "out of range", id="gpu-1e30"),
    ],
)
def test_hostile_pod_gives_a_translation_error(
    annotations: dict[str, str] | None, requests: dict[str, str] | None, expected: str
) -> None:
    with pytest.raises(TranslationError) as caught:
        job_spec_for(pod(annotations, requests), CONFIG)
    assert expected in caught.value.message
    assert len(caught.value.message) < 400  # readable in an event, even for a 5,000-digit value


def test_huge_active_deadline_gives_a_translation_error() -> None:
    with pytest.raises(TranslationError, match="beyond Slurm's longest time limit"):
        job_spec_for(pod(activeDeadlineSeconds=10**400), CONFIG)


@pytest.mark.parametrize(
    "text",
    [
        "1e999999999",
        "1E-999999999",
        HUGE,
        "\u0663",
        "1.5e",
        "",
        " ",
        "1e+31",
        "0x10",
        "1_000",
        "∞",
        "NaN",
        "-0.5",
    ],
)
def test_parse_quantity_raises_only_quantity_error(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("min_resources", "expected"),
    [
        pytest.param({"cpu": "1e999999999"}, "out of range", id="cpu-1e999999999"),
        pytest.param({"memory": HUGE}, "too long", id="memory-5000-digits"),
        pytest.param({"nvidia.com/gpu": "\u0662"}, "not a Kubernetes quantity", id="gpu-arabic"),
        pytest.param({"cpu": "-4"}, "negative", id="cpu-negative"),
    ],
)
def test_hostile_min_resources_give_a_gang_translation_error(
    min_resources: dict[str, str], expected: str
) -> None:
    gang = GangInfo(
        key=GangKey(namespace="ml", kind=GangKind.COSCHEDULING, name="g"),
        uid=UID,
        min_member=2,
        min_resources=min_resources,
    )
    with pytest.raises(GangTranslationError, match=expected):
        gang_job_spec_for(gang, [pod(name="w-0"), pod(name="w-1")], CONFIG)


@pytest.mark.parametrize(
    ("raw", "min_member"),
    [
        ({"minMember": HUGE}, 1),
        ({"minMember": "\u0663"}, 1),
        ({"minMember": 10**40}, 1),
        ({"minMember": "3"}, 3),
    ],
    ids=["5000-digits", "arabic", "int-beyond-64-bit", "plain"],
)
def test_podgroup_numbers_never_raise(raw: dict[str, Any], min_member: int) -> None:
    group = GangInfo.from_coscheduling_api(
        {"metadata": {"name": "g", "namespace": "ml"}, "spec": raw, "status": {"running": HUGE}}
    )
    assert group.min_member == min_member
    assert group.status.running == 0


def test_lws_labels_never_raise() -> None:
    member = pod(
        labels={"leaderworkerset.sigs.k8s.io/name": "l", "leaderworkerset.sigs.k8s.io/group-index": "\u0663"},
        annotations={"leaderworkerset.sigs.k8s.io/size": HUGE},
    )
    assert gang_key_for(member) is None
    ranked = member_order([pod(name="w-\u0663"), pod(name="w-2"), pod(name="w-" + "1" * 5000)])
    assert [p.name[:3] for p in ranked] == ["w-2", "w-1", "w-\u0663"]


@pytest.mark.parametrize(
    "expression",
    ["n[0-\u00b2]", "n[\u0660-\u0663]", "n[0-" + HUGE + "]", "n[" + HUGE + "]", "n[1-0]", "n[0-1", "n]"],
    ids=["superscript", "arabic", "huge-high", "huge-single", "descending", "unbalanced", "stray-close"],
)
def test_bad_hostlist_raises_hostlist_error(expression: str) -> None:
    with pytest.raises(HostlistError):
        expand_hostlist(expression)


def test_compress_keeps_unusual_numbers_as_written() -> None:
    names = ["n" + "1" * 5000, "n\u0663", "n1", "n2"]
    assert set(expand_hostlist(compress_hostlist(names))) == set(names)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("inf"), None),
        (float("nan"), None),
        (-float("inf"), None),
        ("\u0663", None),
        ("\u00b2", None),
        ("9" * 30, None),
        ("-12", -12),
        (" 7 ", 7),
        (1.9, 1),
    ],
)
def test_wire_number_never_raises(value: object, expected: int | None) -> None:
    assert number(value) == expected


def test_wire_gres_counts_skip_hostile_counts() -> None:
    assert gres_counts(f"gpu:{HUGE},gpu:\u00b2,nic:1") == {"nic": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("", None),
        ("\u0664\u0662", None),
        ("\u00b2", None),
        ("-1", None),
        (" 1", None),
        ("9" * 19, None),
    ],
)
def test_ascii_int(text: str, expected: int | None) -> None:
    assert ascii_int(text) == expected

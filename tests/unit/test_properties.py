"""Property tests of every translator and parser (issue 16): on any input only the module's typed
errors escape, and what has a round trip keeps it. Deterministic (derandomize) and bounded: 200+
generated examples per parser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import wellknown
from bridge.config import BridgeConfig
from bridge.gang import (
    GangInfo,
    GangKey,
    GangKind,
    gang_key_for,
    member_order,
)
from bridge.gang_marker import GangMarker, parse_gang_marker
from bridge.gang_translate import GangTranslationError, gang_job_spec_for
from bridge.marker import JobMarker, parse_marker
from bridge.objects import PodInfo
from bridge.translate import (
    MAX_QUANTITY,
    QuantityError,
    TranslationError,
    job_spec_for,
    parse_quantity,
    with_owner_options,
)
from bridge.wellknown import (
    ANNOTATION_LWS_SIZE,
    LABEL_LWS_GROUP_INDEX,
    LABEL_LWS_NAME,
    LABEL_LWS_WORKER_INDEX,
    JobOption,
)
from slurm_client import RetryPolicy, SlurmClient, SlurmError, StaticTokenAuth
from slurm_client._hostlist import HostlistError, compress_hostlist, expand_hostlist

EXAMPLES = 200
PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
TOKEN = jwt.encode({"sun": "slurm", "iat": 1, "exp": int(time.time()) + 86400}, b"k" * 32, "HS256")

with pytest.MonkeyPatch.context() as _env:
    for _name in os.environ:
        if _name.startswith("SLURM_BRIDGE_"):
            _env.delenv(_name)
    CONFIG = BridgeConfig(cluster_id="c1")

# --- strategies ---------------------------------------------------------------------------------------

# Text a hostile user would try: digits of every script, huge numbers, exponents, signs, units, blanks.
_TRICKY = st.sampled_from(
    [
        "\u0663",
        "\u00b2",
        "\u0661\u0660",
        "\U0001d7d7",
        "1e999999999",
        "1E-999999999",
        "9" * 5000,
        "1" + "0" * 4400,
        "-1",
        "+1",
        "0",
        "NaN",
        "inf",
        "-inf",
        "1e30",
        "1e31",
        "18446744073709551615",
        "4294967294",
        "65535",
        " 1 ",
        "1_000",
        "0x10",
        "1.5",
        ".5",
        "5.",
        "1Ki",
        "1Ei",
        "16Ei",
        "9Ei",
        "500m",
        "true",
        "FALSE",
        "gpu:2",
        "gpu:a100:1,shard:4",
        "gpu:0",
        "gpu:",
        "8G",
        "8Gi",
        "999999999999T",
        "\x00",
        "a\nb",
        "",
    ]
)
HOSTILE_TEXT = st.one_of(
    _TRICKY,
    st.text(max_size=30),
    st.from_regex(r"[+-]?[0-9]{0,25}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,12})?[KMGTPEkmnu]?i?", fullmatch=True),
)
OPTION_KEYS = st.builds(
    lambda prefix, option: prefix + option,
    st.sampled_from(wellknown.JOB_OPTION_PREFIXES),
    st.one_of(st.sampled_from([o.value for o in JobOption]), st.sampled_from(["bogus", "Timelimit", ""])),
)
ANNOTATIONS = st.dictionaries(OPTION_KEYS, HOSTILE_TEXT, max_size=5)
RESOURCE_NAMES = st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "amd.com/gpu", "ephemeral-storage"])
RESOURCES = st.dictionaries(RESOURCE_NAMES, HOSTILE_TEXT, max_size=4)


def pod(
    annotations: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    *,
    name: str = "p-0",
    labels: dict[str, str] | None = None,
    deadline: int | None = None,
    overhead: dict[str, str] | None = None,
) -> PodInfo:
    resources: dict[str, Any] = {"requests": requests or {}, "limits": limits or {}}
    spec: dict[str, Any] = {
        "schedulerName": "slurm-bridge-scheduler",
        "containers": [{"name": "c", "resources": resources}],
        "overhead": overhead or {},
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    meta = {
        "name": name,
        "namespace": "ml",
        "uid": UID,
        "annotations": annotations or {},
        "labels": labels or {},
    }
    return PodInfo.from_api({"metadata": meta, "spec": spec})


def only_typed(call: Callable[[], object], *typed: type[BaseException]) -> None:
    """Run `call`; anything it raises must be one of `typed`."""
    with contextlib.suppress(*typed):
        call()


# --- annotations and resources of a pod -------------------------------------------------------------


@PROPERTY
@given(annotations=ANNOTATIONS)
def test_pod_annotations_give_only_translation_errors(annotations: dict[str, str]) -> None:
    only_typed(lambda: job_spec_for(pod(annotations, {"cpu": "1"}), CONFIG), TranslationError)


@PROPERTY
@given(
    requests=RESOURCES,
    limits=RESOURCES,
    overhead=RESOURCES,
    deadline=st.one_of(st.none(), st.integers(min_value=-(10**30), max_value=10**400)),
)
def test_pod_resources_give_only_translation_errors(
    requests: dict[str, str], limits: dict[str, str], overhead: dict[str, str], deadline: int | None
) -> None:
    only_typed(
        lambda: job_spec_for(pod(None, requests, limits, deadline=deadline, overhead=overhead), CONFIG),
        TranslationError,
    )


@PROPERTY
@given(text=HOSTILE_TEXT)
def test_quantities_parse_in_range_or_raise_quantity_error(text: str) -> None:
    try:
        value = parse_quantity(text)
    except QuantityError as error:
        message = str(error)
    else:
        assert isinstance(value, Decimal)
        assert 0 <= value <= MAX_QUANTITY
        return
    assert len(message) < 200


@PROPERTY
@given(pod_annotations=ANNOTATIONS, owner_annotations=ANNOTATIONS)
def test_jobset_or_lws_owner_options_give_only_translation_errors(
    pod_annotations: dict[str, str], owner_annotations: dict[str, str]
) -> None:
    merged = with_owner_options(pod_annotations, owner_annotations)
    only_typed(lambda: job_spec_for(pod(merged, {"cpu": "1"}), CONFIG), TranslationError)


# --- gangs: PodGroup / Workload / LWS / JobSet fields ------------------------------------------------

NUMBERISH = st.one_of(
    HOSTILE_TEXT,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)


@PROPERTY
@given(
    min_resources=RESOURCES,
    group_annotations=ANNOTATIONS,
    owner_annotations=ANNOTATIONS,
    members=st.integers(min_value=1, max_value=4),
)
def test_gangs_give_only_gang_translation_errors(
    min_resources: dict[str, str],
    group_annotations: dict[str, str],
    owner_annotations: dict[str, str],
    members: int,
) -> None:
    gang = GangInfo(
        key=GangKey(namespace="ml", kind=GangKind.COSCHEDULING, name="g"),
        uid=UID,
        min_member=members,
        annotations=group_annotations,
        min_resources=min_resources,
    )
    pods = [pod(None, {"cpu": "1"}, name=f"w-{i}") for i in range(members)]
    only_typed(lambda: gang_job_spec_for(gang, pods, CONFIG, owner_annotations), GangTranslationError)


@PROPERTY
@given(
    min_member=NUMBERISH,
    timeout=NUMBERISH,
    running=NUMBERISH,
    min_count=NUMBERISH,
    min_resources=st.dictionaries(RESOURCE_NAMES, st.one_of(HOSTILE_TEXT, st.integers()), max_size=3),
)
def test_podgroup_fields_never_raise(
    min_member: object, timeout: object, running: object, min_count: object, min_resources: dict[str, Any]
) -> None:
    meta = {"name": "g", "namespace": "ml", "uid": UID}
    group = GangInfo.from_coscheduling_api(
        {
            "metadata": meta,
            "spec": {
                "minMember": min_member,
                "scheduleTimeoutSeconds": timeout,
                "minResources": min_resources,
            },
            "status": {"running": running, "succeeded": running, "failed": running},
        }
    )
    assert group.min_member >= 1
    workload = GangInfo.from_workload_api(
        {"metadata": meta, "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}}}
    )
    assert workload.min_member >= 1


@PROPERTY
@given(
    size=HOSTILE_TEXT,
    group_index=HOSTILE_TEXT,
    worker_index=HOSTILE_TEXT,
    names=st.lists(
        st.one_of(st.from_regex(r"[a-z]{1,3}-[0-9]{1,30}", fullmatch=True), st.text(max_size=20)), max_size=4
    ),
)
def test_lws_and_jobset_labels_never_raise(
    size: str, group_index: str, worker_index: str, names: list[str]
) -> None:
    labels = {LABEL_LWS_NAME: "l", LABEL_LWS_GROUP_INDEX: group_index, LABEL_LWS_WORKER_INDEX: worker_index}
    leader = pod(annotations={ANNOTATION_LWS_SIZE: size}, labels=labels)
    gang_key_for(leader)
    GangInfo.from_lws_leader(leader)
    members = [pod(name=n, labels={"batch.kubernetes.io/job-completion-index": worker_index}) for n in names]
    assert len(member_order(members)) == len(members)


# --- markers: round trip, and any comment is a marker or not, never an error --------------------------

DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
POD_NAME = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?", fullmatch=True)
CLUSTER = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
HEX12 = st.from_regex(r"[0-9a-f]{12}", fullmatch=True)
UIDS = st.uuids().map(str)


@PROPERTY
@given(cluster=CLUSTER, namespace=DNS_LABEL, name=POD_NAME, uid=UIDS, digest=HEX12)
def test_job_marker_round_trip(cluster: str, namespace: str, name: str, uid: str, digest: str) -> None:
    marker = JobMarker(
        cluster_id=cluster, namespace=namespace, pod_name=name, pod_uid=uid, spec_digest=digest
    )
    assert parse_marker(marker.encode()) == marker


@PROPERTY
@given(
    cluster=CLUSTER,
    namespace=DNS_LABEL,
    kind=st.sampled_from(list(GangKind)),
    name=POD_NAME,
    uid=UIDS,
    digest=HEX12,
)
def test_gang_marker_round_trip(
    cluster: str, namespace: str, kind: GangKind, name: str, uid: str, digest: str
) -> None:
    marker = GangMarker(
        cluster_id=cluster, namespace=namespace, kind=kind, name=name, group_uid=uid, spec_digest=digest
    )
    assert parse_gang_marker(marker.encode()) == marker


COMMENTS = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda cluster, tail: f"{wellknown.MARKER_PREFIX} cluster={cluster} {tail}",
        st.text(max_size=20),
        st.text(max_size=120),
    ),
)


@PROPERTY
@given(comment=COMMENTS)
def test_any_comment_is_a_marker_or_none(comment: str) -> None:
    marker = parse_marker(comment)
    assert marker is None or marker.encode() == comment
    gang = parse_gang_marker(comment)
    assert gang is None or gang.encode() == comment


# --- hostlists ---------------------------------------------------------------------------------------

HOSTNAMES = st.from_regex(r"[a-z]{1,4}(-[a-z]{1,3})?-?[0-9]{0,5}", fullmatch=True)


@PROPERTY
@given(names=st.lists(HOSTNAMES, max_size=12))
def test_hostlist_round_trip(names: list[str]) -> None:
    assert set(expand_hostlist(compress_hostlist(names))) == set(names)


@PROPERTY
@given(
    expression=st.one_of(
        st.text(alphabet="ab-,[]0123456789\u0663\u00b2 ", max_size=30),
        st.builds(lambda a, b: f"n[{a}-{b}]", HOSTILE_TEXT, HOSTILE_TEXT),
    )
)
def test_hostlist_expressions_raise_only_hostlist_errors(expression: str) -> None:
    only_typed(lambda: expand_hostlist(expression), HostlistError)


# --- slurmrestd answers through the version adapters --------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE_TEXT,
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
JOB_FIELDS = [
    "job_id",
    "job_state",
    "nodes",
    "exit_code",
    "time_limit",
    "submit_time",
    "start_time",
    "priority",
    "node_count",
    "comment",
    "user_name",
    "batch_flag",
    "flags",
    "cpus",
]
NODE_FIELDS = [
    "name",
    "state",
    "state_flags",
    "cpus",
    "real_memory",
    "gres",
    "gres_used",
    "partitions",
    "alloc_cpus",
]
PARTITION_FIELDS = [
    "name",
    "nodes",
    "partition",
    "total_nodes",
    "total_cpus",
    "state",
    "maximums",
    "node_sets",
]
# Wire forms Slurm uses: structs {set, infinite, number}, 1e999 (parsed as inf), hostlists.
FIELD_VALUES = st.one_of(
    JSON,
    st.builds(lambda n: {"set": True, "infinite": False, "number": n}, JSON_SCALARS),
    st.just(float("inf")),
    st.just(float("nan")),
    st.from_regex(r"[a-z]{1,3}\[[0-9\u0663,-]{0,8}\]", fullmatch=True),
)


def records_of(fields: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.dictionaries(st.sampled_from(fields), FIELD_VALUES, max_size=len(fields)), max_size=3)


def answer(key: str, fields: list[str]) -> st.SearchStrategy[object]:
    body = st.fixed_dictionaries(
        {key: st.one_of(records_of(fields), JSON)},
        optional={"errors": st.one_of(st.just([]), JSON), "last_update": FIELD_VALUES, "warnings": JSON},
    )
    return st.one_of(body, JSON)


class ScriptedServer:
    """A transport that answers every request with the body it was last given."""

    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, content=self.body, headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def loop() -> Any:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


async def _no_sleep(_: float) -> None:
    return None


def _read_through(loop: asyncio.AbstractEventLoop, version: str, body: object, read: str) -> None:
    server = ScriptedServer()
    server.body = json.dumps(body, allow_nan=True).encode()

    async def run() -> None:
        async with SlurmClient(
            "http://slurmrestd.test",
            auth=StaticTokenAuth("slurm", TOKEN),
            api_version=version,
            transport=httpx.MockTransport(server),
            retry=RetryPolicy(attempts=1, deadline=1.0),
            sleep=_no_sleep,
        ) as client:
            try:
                if read == "jobs":
                    await client.list_jobs(update_time=1)
                elif read == "nodes":
                    await client.list_nodes()
                else:
                    await client.list_partitions()
            except SlurmError:
                pass

    loop.run_until_complete(run())
    assert server.calls >= 1  # the answer was really read


VERSIONS = st.sampled_from(["v0.0.38", "v0.0.41", "v0.0.42", "v0.0.45"])


@PROPERTY
@given(version=VERSIONS, body=answer("jobs", JOB_FIELDS))
def test_job_answers_raise_only_slurm_errors(
    loop: asyncio.AbstractEventLoop, version: str, body: object
) -> None:
    _read_through(loop, version, body, "jobs")


@PROPERTY
@given(version=VERSIONS, body=answer("nodes", NODE_FIELDS))
def test_node_answers_raise_only_slurm_errors(
    loop: asyncio.AbstractEventLoop, version: str, body: object
) -> None:
    _read_through(loop, version, body, "nodes")


@PROPERTY
@given(version=VERSIONS, body=answer("partitions", PARTITION_FIELDS))
def test_partition_answers_raise_only_slurm_errors(
    loop: asyncio.AbstractEventLoop, version: str, body: object
) -> None:
    _read_through(loop, version, body, "partitions")

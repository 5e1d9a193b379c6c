from __future__ import annotations

import pytest

from bridge.gang import GangKey, GangKind
from bridge.gang_marker import GangMarker, decode_gang_marker, parse_gang_marker
from bridge.marker import JobMarker, decode_marker

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
MARKER = GangMarker(
    cluster_id="prod-east",
    namespace="slurm-bridge",
    kind=GangKind.COSCHEDULING,
    name="nginx-pg.v1",
    group_uid=UID,
    spec_digest="0123456789ab",
)
TEXT = (
    "slurm-bridge/v1 cluster=prod-east gang=slurm-bridge/podgroup.scheduling.x-k8s.io/nginx-pg.v1"
    f" spec=0123456789ab uid={UID}"
)
POD_TEXT = f"slurm-bridge/v1 cluster=prod-east pod=slurm-bridge/nginx-pg.v1 spec=0123456789ab uid={UID}"


def test_encode_gives_the_documented_format() -> None:
    assert MARKER.encode() == TEXT


@pytest.mark.parametrize("kind", list(GangKind), ids=[k.name.lower() for k in GangKind])
def test_every_kind_round_trips(kind: GangKind) -> None:
    marker = GangMarker("c1", "ml", kind, "llm-0", UID, "fedcba987654")
    assert decode_gang_marker(marker.encode(), "c1") == marker
    assert marker.gang_key == GangKey(namespace="ml", kind=kind, name="llm-0")


def test_pod_and_gang_markers_never_mistake_each_other() -> None:
    pod_marker = JobMarker("prod-east", "slurm-bridge", "nginx-pg.v1", UID, "0123456789ab")
    assert pod_marker.encode() == POD_TEXT
    assert decode_gang_marker(POD_TEXT, "prod-east") is None
    assert decode_marker(TEXT, "prod-east") is None


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "nightly build",
        '{"gang": "slurm-bridge/nginx-pg"}',
        TEXT.replace("slurm-bridge/v1", "slurm-bridge/v2"),
        TEXT + " ",
        " " + TEXT,
        TEXT + " extra=1",
        TEXT.replace(" gang=", "  gang="),
        TEXT.replace(UID, UID.upper()),
        TEXT.replace("podgroup.scheduling.x-k8s.io", "podgroups.scheduling.x-k8s.io"),
        TEXT.replace("podgroup.scheduling.x-k8s.io/", ""),
        TEXT.replace("/nginx-pg.v1", "/Nginx"),
        TEXT.replace("spec=0123456789ab ", ""),
    ],
    ids=[
        "none",
        "empty",
        "free-text",
        "foreign-json",
        "other-version",
        "trailing-space",
        "leading-space",
        "extra-field",
        "double-space",
        "uppercase-uid",
        "unknown-kind",
        "missing-kind",
        "invalid-name",
        "missing-field",
    ],
)
def test_foreign_comments_are_not_ours(comment: str | None) -> None:
    assert parse_gang_marker(comment) is None
    assert decode_gang_marker(comment, "prod-east") is None


@pytest.mark.parametrize("cut", [1, 16, 40, 70, len(TEXT) - 37, len(TEXT) - 10, len(TEXT) - 1])
def test_truncated_markers_are_not_ours(cut: int) -> None:
    assert decode_gang_marker(TEXT[:cut], "prod-east") is None


@pytest.mark.parametrize("cluster_id", ["prod-west", "prod", "PROD-EAST"], ids=["other", "prefix", "case"])
def test_another_clusters_marker_is_not_ours(cluster_id: str) -> None:
    assert parse_gang_marker(TEXT) == MARKER
    assert decode_gang_marker(TEXT, cluster_id) is None


@pytest.mark.parametrize(
    "change",
    [
        {"cluster_id": "has space"},
        {"namespace": "Upper"},
        {"name": "trailing-"},
        {"group_uid": "not-a-uuid"},
        {"group_uid": ""},
        {"spec_digest": "xyz"},
    ],
    ids=["cluster-id", "namespace", "name", "uid", "empty-uid", "digest"],
)
def test_unencodable_markers_are_refused(change: dict[str, str]) -> None:
    fields = {**MARKER.__dict__, **change}
    with pytest.raises(ValueError, match="cannot encode"):
        GangMarker(**fields).encode()

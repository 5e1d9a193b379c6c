from __future__ import annotations

import pytest

from bridge.marker import JobMarker, decode_marker, parse_marker

UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
MARKER = JobMarker(
    cluster_id="prod-east",
    namespace="slurm-bridge",
    pod_name="pause-pod.v1",
    pod_uid=UID,
    spec_digest="0123456789ab",
)
TEXT = f"slurm-bridge/v1 cluster=prod-east pod=slurm-bridge/pause-pod.v1 spec=0123456789ab uid={UID}"


def test_encode_gives_the_documented_format() -> None:
    assert MARKER.encode() == TEXT


def test_decode_round_trips_for_its_own_cluster() -> None:
    assert decode_marker(MARKER.encode(), "prod-east") == MARKER


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "nightly build",
        '{"pods": ["slurm-bridge/pause-pod"]}',
        f'{{"slurm-bridge/v1": {{"cluster": "prod-east", "uid": "{UID}"}}}}',
        TEXT.replace("slurm-bridge/v1", "slurm-bridge/v2"),
        TEXT.replace("slurm-bridge/v1", "other-bridge/v1"),
        TEXT + " ",
        " " + TEXT,
        TEXT + " extra=1",
        TEXT.replace(" pod=", "  pod="),
        TEXT.replace(UID, UID.upper()),
        TEXT.replace("spec=0123456789ab ", ""),
        TEXT.replace("slurm-bridge/pause", "Slurm-Bridge/pause"),
    ],
    ids=[
        "none",
        "empty",
        "free-text",
        "foreign-json",
        "json-lookalike",
        "other-version",
        "other-prefix",
        "trailing-space",
        "leading-space",
        "extra-field",
        "double-space",
        "uppercase-uid",
        "missing-field",
        "invalid-namespace",
    ],
)
def test_foreign_comments_are_not_ours(comment: str | None) -> None:
    assert parse_marker(comment) is None
    assert decode_marker(comment, "prod-east") is None


@pytest.mark.parametrize("cut", [1, 15, 16, 40, 60, len(TEXT) - 37, len(TEXT) - 10, len(TEXT) - 1])
def test_truncated_markers_are_not_ours(cut: int) -> None:
    assert decode_marker(TEXT[:cut], "prod-east") is None


@pytest.mark.parametrize(
    "cluster_id", ["prod-west", "prod", "prod-east-2", "PROD-EAST"], ids=["other", "prefix", "longer", "case"]
)
def test_another_clusters_marker_is_not_ours(cluster_id: str) -> None:
    assert parse_marker(TEXT) == MARKER  # readable as a marker ...
    assert decode_marker(TEXT, cluster_id) is None  # ... but not ours to touch


@pytest.mark.parametrize(
    "change",
    [
        {"pod_uid": "uid-1"},
        {"pod_uid": ""},
        {"cluster_id": "prod east"},
        {"cluster_id": ""},
        {"namespace": "Slurm"},
        {"pod_name": "a/b"},
        {"spec_digest": "xyz"},
    ],
    ids=[
        "uid-not-uuid",
        "uid-empty",
        "cluster-space",
        "cluster-empty",
        "namespace-upper",
        "name-slash",
        "digest",
    ],
)
def test_encode_refuses_what_would_not_decode(change: dict[str, str]) -> None:
    fields = {**MARKER.__dict__, **change}
    with pytest.raises(ValueError, match="decodable"):
        JobMarker(**fields).encode()


def test_a_marker_with_an_exit_code_suffix_is_still_ours() -> None:
    # a batch placeholder being ended carries " exit=N" after its marker (SlurmClient.end_placeholder)
    from slurm_client import with_exit_code

    marker = JobMarker("c1", "ns", "p", "00000000-0000-0000-0000-000000000001", "0123456789ab")
    assert parse_marker(with_exit_code(marker.encode(), 3)) == marker

"""Hostlist expressions: expansion, compression, and the round trip between them."""

from __future__ import annotations

import pytest

from slurm_client import HostlistError, compress_hostlist, expand_hostlist


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        pytest.param("", [], id="empty"),
        pytest.param("(null)", [], id="slurm-null"),
        pytest.param("node0", ["node0"], id="single"),
        pytest.param("node[0-3]", ["node0", "node1", "node2", "node3"], id="range"),
        pytest.param("node[0-3,7]", ["node0", "node1", "node2", "node3", "node7"], id="range-and-single"),
        pytest.param(
            "node[0-1,7],gpu-[01-02]",
            ["node0", "node1", "node7", "gpu-01", "gpu-02"],
            id="issue-example",
        ),
        pytest.param("gpu-[08-11]", ["gpu-08", "gpu-09", "gpu-10", "gpu-11"], id="padding-across-width"),
        pytest.param("n[098-101]", ["n098", "n099", "n100", "n101"], id="padding-three"),
        pytest.param("n[9-11]", ["n9", "n10", "n11"], id="unpadded-across-width"),
        pytest.param("a,b,c", ["a", "b", "c"], id="plain-names"),
        pytest.param("slurm-bridge-[0-1]", ["slurm-bridge-0", "slurm-bridge-1"], id="dash-in-prefix"),
        pytest.param(
            "rack[1-2]-n[0-1]", ["rack1-n0", "rack1-n1", "rack2-n0", "rack2-n1"], id="two-dimensions"
        ),
        pytest.param("n[1-2].ib", ["n1.ib", "n2.ib"], id="suffix"),
        pytest.param("n[3], m[1]", ["n3", "m1"], id="spaces-and-single-brackets"),
    ],
)
def test_expand(expression: str, names: list[str]) -> None:
    assert expand_hostlist(expression) == names


@pytest.mark.parametrize(
    ("names", "expression"),
    [
        pytest.param([], "", id="empty"),
        pytest.param(["node0"], "node0", id="single"),
        pytest.param(["node0", "node1", "node2", "node3", "node7"], "node[0-3,7]", id="ranges"),
        pytest.param(["node3", "node1", "node2"], "node[1-3]", id="sorted-within-prefix"),
        pytest.param(["node1", "node1", "node2"], "node[1-2]", id="duplicates-dropped"),
        pytest.param(
            ["node0", "node1", "node7", "gpu-01", "gpu-02"], "node[0-1,7],gpu-[01-02]", id="issue-example"
        ),
        pytest.param([f"gpu-{i:02d}" for i in range(1, 13)], "gpu-[01-12]", id="padded-joins-unpadded-width"),
        pytest.param(["n9", "n10", "n11"], "n[9-11]", id="unpadded"),
        pytest.param(["n01", "n1"], "n01,n1", id="padded-and-unpadded-apart"),
        pytest.param(["login", "node1", "node2"], "login,node[1-2]", id="plain-name-kept"),
        pytest.param(["a1", "b1", "a2"], "a[1-2],b1", id="prefix-first-appearance"),
    ],
)
def test_compress(names: list[str], expression: str) -> None:
    assert compress_hostlist(names) == expression


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("node[0-3,7],gpu-[01-02]", id="issue-example"),
        pytest.param("gpu-[001-003,010,100-101]", id="padded-three"),
        pytest.param("slurm-bridge-[0-3]", id="testbed-nodes"),
        pytest.param("ns-[0-2,5-7]", id="gaps"),
        pytest.param("a,b,node[1-2]", id="mixed"),
    ],
)
def test_round_trip(expression: str) -> None:
    names = expand_hostlist(expression)
    assert compress_hostlist(names) == expression
    assert expand_hostlist(compress_hostlist(names)) == names


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("node[0-3", id="unclosed"),
        pytest.param("node0-3]", id="unopened"),
        pytest.param("node[[1]]", id="nested"),
        pytest.param("node[3-1]", id="descending"),
        pytest.param("node[a-b]", id="not-numbers"),
        pytest.param("node[1,,2]", id="empty-range"),
        pytest.param("node[0-99999999]", id="too-many"),
    ],
)
def test_bad_expressions_are_refused(expression: str) -> None:
    with pytest.raises(HostlistError):
        expand_hostlist(expression)

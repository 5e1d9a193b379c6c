from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.gang import GangInfo, GroupStatus
from bridge.wellknown import LABEL_COSCHEDULING_POD_GROUP
from controller.gang_plan import GangPhase

CRD_PATH = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "scheduling.x-k8s.io_podgroups.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def test_names_match_the_coscheduling_group() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "podgroups.scheduling.x-k8s.io"
    assert CRD["spec"]["group"] == LABEL_COSCHEDULING_POD_GROUP.split("/")[0]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["kind"] == "PodGroup"
    assert [(v["name"], v["served"], v["storage"]) for v in CRD["spec"]["versions"]] == [
        ("v1alpha1", True, True)
    ]


def test_status_is_a_subresource() -> None:
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns_as_kubectl_get_podgroups_shows_them() -> None:
    columns = [(c["name"].upper(), c["jsonPath"], c["type"]) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("PHASE", ".status.phase", "string"),
        ("MINMEMBER", ".spec.minMember", "integer"),
        ("RUNNING", ".status.running", "integer"),
        ("SUCCEEDED", ".status.succeeded", "integer"),
        ("FAILED", ".status.failed", "integer"),
        ("AGE", ".metadata.creationTimestamp", "date"),
    ]


def test_columns_point_at_declared_fields() -> None:
    for column in VERSION["additionalPrinterColumns"]:
        section, _, name = column["jsonPath"].lstrip(".").partition(".")
        if section != "metadata":
            assert name in SCHEMA["properties"][section]["properties"], column["jsonPath"]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@pytest.mark.parametrize("field", list(GroupStatus.model_fields), ids=list(GroupStatus.model_fields))
def test_every_status_field_the_bridge_writes_is_declared(field: str) -> None:
    # Undeclared fields would be pruned by the API server without an error.
    assert camel(field) in SCHEMA["properties"]["status"]["properties"]


def test_every_phase_the_bridge_writes_is_documented() -> None:
    documented = SCHEMA["properties"]["status"]["properties"]["phase"]["description"]
    assert {p.value for p in GangPhase} <= set(re.findall(r"[A-Z][a-zA-Z]+", documented))


def test_spec_fields_the_bridge_reads_are_declared() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["minMember"]["type"] == spec["scheduleTimeoutSeconds"]["type"] == "integer"
    assert spec["minResources"]["additionalProperties"]["x-kubernetes-int-or-string"] is True


def test_a_manifest_for_it_parses_as_a_gang() -> None:
    manifest = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": "sleep-pg",
            "namespace": "slurm-bridge",
            "annotations": {"slinky.slurm.net/account": "slurm"},
        },
        "spec": {"minMember": 2},
    }
    gang = GangInfo.from_coscheduling_api(manifest)
    assert (str(gang.key), gang.min_member) == ("slurm-bridge/podgroup.scheduling.x-k8s.io/sleep-pg", 2)

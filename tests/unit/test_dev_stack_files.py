"""The files that make the container image and the docker-compose dev stack: the Slurm config generator
both the testbed and the stack use, and the compose file's shape (host networking, an init, no drift)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.testbed_env import REPO

GENERATOR = REPO / "testbed" / "slurm-conf.sh"


def _conf(what: str, version: str, port: int = 17000, dbd: str = "") -> dict[str, list[str]]:
    args = ["bash", str(GENERATOR), what, version, "tbx", str(port), "/state", *([dbd] if dbd else [])]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            lines.setdefault(key, []).append(value)
    return lines


@pytest.mark.parametrize(
    ("version", "auth", "metrics"),
    [
        ("22.05", "auth/munge", None),
        ("24.11", "auth/slurm", None),
        ("26.05", "auth/slurm", "metrics/openmetrics"),
    ],
)
def test_slurm_conf_per_version(version: str, auth: str, metrics: str | None) -> None:
    conf = _conf("slurm.conf", version)
    assert conf["AuthType"] == [auth]
    assert conf.get("MetricsType", [None]) == [metrics]
    assert conf["AccountingStorageType"] == ["accounting_storage/none"]
    assert conf["AuthAltParameters"] == ["jwt_key=/state/jwt.key"]


@pytest.mark.parametrize(
    ("port", "slurmd_ports", "future_ports"),
    [
        (17000, ("17001-17002", "17003-17004"), "17010-17017"),
        (18100, ("18101-18102", "18103-18104"), "18110-18117"),
    ],
)
def test_slurm_conf_ports_follow_the_base_port(
    port: int, slurmd_ports: tuple[str, str], future_ports: str
) -> None:
    conf = _conf("slurm.conf", "22.05", port)
    assert conf["SlurmctldPort"] == [str(port)]
    nodes = " ".join(conf["NodeName"])
    assert f"Port={slurmd_ports[0]}" in nodes and f"Port={slurmd_ports[1]} Gres=gpu:2" in nodes
    assert f"Port={future_ports} State=FUTURE" in nodes


def test_slurm_conf_with_slurmdbd_turns_accounting_on() -> None:
    conf = _conf("slurm.conf", "24.11", dbd="17160")
    assert conf["AccountingStorageType"] == ["accounting_storage/slurmdbd"]
    assert conf["AccountingStoragePort"] == ["17160"]


@pytest.mark.parametrize(("version", "expected"), [("22.05", {}), ("26.05", {"CgroupPlugin": ["disabled"]})])
def test_cgroup_conf(version: str, expected: dict[str, list[str]]) -> None:
    assert _conf("cgroup.conf", version) == expected


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_compose_services_use_host_networking_and_an_init() -> None:
    services = _compose()["services"]
    assert {"slurmctld", "slurmrestd", "kube-apiserver", "kwok", "bridge", "prometheus"} <= set(services)
    assert sum(name.startswith("slurmd-") for name in services) >= 2
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert service["init"] is True, name
        assert service.get("build", {}).get("network", "host") == "host", name


def test_compose_slurm_config_comes_from_the_testbed_generator() -> None:
    services = _compose()["services"]
    for name in ("slurmctld", "slurmd-0", "slurmrestd"):
        assert "./testbed/slurm-conf.sh:/opt/devstack/slurm-conf.sh:ro" in services[name]["volumes"], name


def test_bridge_in_compose_runs_from_the_project_image_read_only() -> None:
    bridge = _compose()["services"]["bridge"]
    assert bridge["build"]["context"] == "."
    assert bridge["read_only"] is True and "/tmp" in bridge["tmpfs"]
    assert bridge["cap_drop"] == ["ALL"]

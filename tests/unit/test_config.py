from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.config import BridgeConfig, ConfigError, PlaceholderMode, load_config


@pytest.fixture(autouse=True)
def _no_bridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("SLURM_BRIDGE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    config = load_config(None)
    assert config.scheduler_name == "slurm-bridge-scheduler"
    assert config.namespaces == ("slurm-bridge",)
    assert config.node_selector == ""
    assert config.node_name_label is None
    assert config.cluster_id is None  # derived at start from the kube-system namespace UID
    assert config.slurm.partition == "slurm-bridge"
    assert config.slurm.placeholder_mode is PlaceholderMode.BATCH
    assert config.slurm.default_time_limit_minutes is None
    assert config.kubernetes.kubeconfig is None
    assert config.leader_election.enabled


def test_file_values(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
scheduler_name: slurm
namespaces: [ml, hpc]
node_selector: "slinky.slurm.net/managed=true"
node_name_label: slinky.slurm.net/slurm-nodename
cluster_id: east-1
slurm:
  url: http://slurmrestd:6820
  user: bridge
  token_file: /run/secrets/slurm-token
  api_version: v0.0.42
  partition: k8s
  default_time_limit_minutes: 60
  placeholder_mode: batch
kubernetes:
  kubeconfig: /etc/kubeconfig
poll_interval_seconds: 0.5
workers: 8
leader_election:
  lease_name: bridge
  lease_namespace: kube-system
metrics_listen_address: 127.0.0.1:9100
""",
        )
    )
    assert config.scheduler_name == "slurm"
    assert config.namespaces == ("ml", "hpc")
    assert config.namespace_allowed("hpc")
    assert not config.namespace_allowed("default")
    assert config.cluster_id == "east-1"
    assert config.slurm.token_file == Path("/run/secrets/slurm-token")
    assert (config.slurm.api_version, config.slurm.partition) == ("v0.0.42", "k8s")
    assert config.slurm.default_time_limit_minutes == 60
    assert config.slurm.placeholder_mode is PlaceholderMode.BATCH
    assert config.kubernetes.kubeconfig == Path("/etc/kubeconfig")
    assert (config.poll_interval_seconds, config.workers) == (0.5, 8)
    assert (config.leader_election.lease_name, config.leader_election.lease_namespace) == (
        "bridge",
        "kube-system",
    )
    assert config.metrics_listen_address == "127.0.0.1:9100"


def test_environment_overrides_the_file_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "cluster_id: from-file\nslurm:\n  url: http://file:6820\n  user: file-user\n")
    monkeypatch.setenv("SLURM_BRIDGE_SLURM__URL", "http://env:6820")
    monkeypatch.setenv("SLURM_BRIDGE_CLUSTER_ID", "from-env")
    config = load_config(path)
    assert (config.slurm.url, config.slurm.user, config.cluster_id) == (
        "http://env:6820",
        "file-user",
        "from-env",
    )


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("SLURM_BRIDGE_SCHEDULER_NAME", "x", ("scheduler_name",), "x"),
        ("SLURM_BRIDGE_NAMESPACES", "ml, hpc", ("namespaces",), ("ml", "hpc")),
        ("SLURM_BRIDGE_NAMESPACES", '["ml","hpc"]', ("namespaces",), ("ml", "hpc")),
        ("SLURM_BRIDGE_NODE_NAME_LABEL", "l", ("node_name_label",), "l"),
        ("SLURM_BRIDGE_SLURM__TOKEN", "t0k", ("slurm", "token"), "t0k"),
        ("SLURM_BRIDGE_SLURM__JWT_KEY_FILE", "/k", ("slurm", "jwt_key_file"), Path("/k")),
        (
            "SLURM_BRIDGE_SLURM__PLACEHOLDER_MODE",
            "external",
            ("slurm", "placeholder_mode"),
            PlaceholderMode.EXTERNAL,
        ),
        ("SLURM_BRIDGE_KUBERNETES__KUBECONFIG", "/kc", ("kubernetes", "kubeconfig"), Path("/kc")),
        ("SLURM_BRIDGE_LEADER_ELECTION__ENABLED", "false", ("leader_election", "enabled"), False),
        ("SLURM_BRIDGE_WORKERS", "2", ("workers",), 2),
    ],
    ids=[
        "scheduler-name",
        "namespaces-commas",
        "namespaces-json",
        "node-name-label",
        "token",
        "jwt-key-file",
        "placeholder-mode",
        "kubeconfig",
        "leader-election",
        "workers",
    ],
)
def test_environment_names(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: tuple[str, ...], expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    found: object = load_config(None)
    for name in attribute:
        found = getattr(found, name)
    if hasattr(found, "get_secret_value"):
        found = found.get_secret_value()
    assert found == expected


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == BridgeConfig()


def test_secret_token_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_BRIDGE_SLURM__TOKEN", "s3cret")
    assert "s3cret" not in repr(load_config(None))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slurm: [", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("schedulername: x\n", "schedulername"),
        ("cluster_id: two words\n", "cluster_id"),
        ("slurm:\n  token: t\n  token_file: /f\n", "set only one of token, token_file, jwt_key_file"),
        ("slurm:\n  api_version: 0.0.42\n", "api_version"),
        ("slurm:\n  placeholder_mode: maybe\n", "placeholder_mode"),
        ("slurm:\n  default_time_limit_minutes: 0\n", "default_time_limit_minutes"),
        ("leader_election:\n  renew_deadline_seconds: 20\n", "retry_period_seconds < renew_deadline_seconds"),
        ("namespaces: [Team_A]\n", "not namespace names"),
        ("workers: 0\n", "workers"),
    ],
    ids=[
        "bad-yaml",
        "not-a-mapping",
        "unknown-key",
        "cluster-id-token",
        "two-credentials",
        "api-version-shape",
        "placeholder-mode",
        "time-limit",
        "lease-durations",
        "namespace-name",
        "workers",
    ],
)
def test_invalid_configuration(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")

"""Bridge configuration: a plain frozen model, loaded once from a YAML file and the environment.

`load_config(path, environ)` is the only place that reads the environment. Precedence, highest first:
SLURM_BRIDGE_* variables, the YAML file, defaults. Nested fields use ``__`` in variable names, e.g.
``SLURM_BRIDGE_SLURM__URL`` or ``SLURM_BRIDGE_LEADER_ELECTION__LEASE_NAME``. List fields take JSON
(``'["a","b"]'``) or a comma-separated string (``a,b``); a value starting with ``{`` or ``[`` is JSON.
Everything downstream (planners included) sees only the model it is handed.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge import wellknown
from bridge.tenancy import TenancyConfig
from webhook.config import WebhookConfig

ENV_PREFIX = "SLURM_BRIDGE_"

# Marker id of a config whose cluster_id was not resolved yet (see BridgeConfig.marker_cluster_id).
UNRESOLVED_CLUSTER_ID = "unresolved"
# The cluster id ends up inside every job marker: keep it one plain token.
_CLUSTER_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ConfigError(Exception):
    """The configuration file or environment cannot be turned into a BridgeConfig."""


class PlaceholderMode(enum.StrEnum):
    """How the placeholder job holds its allocation.

    batch: a batch script that sleeps and ends with the pod's outcome when signalled;
    external: an EXTERNAL_JOB allocation that launches nothing (REST API v0.0.43+);
    auto: external where the server supports it, batch otherwise (decided by the Slurm client).
    """

    BATCH = "batch"
    EXTERNAL = "external"
    AUTO = "auto"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlurmConfig(_Section):
    url: str = "http://127.0.0.1:6820"
    user: str = "slurm"
    # At most one way to authenticate. A static token cannot rotate: prefer token_file (re-read on
    # every use) or jwt_key_file (the bridge mints short-lived tokens itself).
    token: SecretStr | None = None
    token_file: Path | None = None
    jwt_key_file: Path | None = None
    api_version: str | None = Field(default=None, pattern=r"^v\d+\.\d+\.\d+$")  # None: negotiate
    partition: str = Field(default=wellknown.DEFAULT_PARTITION, min_length=1)
    default_time_limit_minutes: int | None = Field(default=None, ge=1)  # None: partition default
    # batch by default: only a batch placeholder can end with the pod's real outcome (COMPLETED /
    # FAILED) in Slurm's accounting; EXTERNAL_JOB (REST v0.0.43+) always ends CANCELLED.
    placeholder_mode: PlaceholderMode = PlaceholderMode.BATCH
    request_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        given = [name for name in ("token", "token_file", "jwt_key_file") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of token, token_file, jwt_key_file (got {', '.join(given)})")
        return self


class KubernetesConfig(_Section):
    kubeconfig: Path | None = None  # None: in-cluster config, then the default kubeconfig


class LeaderElectionSettings(_Section):
    enabled: bool = True
    # With scheduler and controller run apart, each takes a Lease of its own: `<lease_name>-<component>`.
    lease_name: str = Field(default="slurm-bridge", min_length=1)
    lease_namespace: str = Field(default="slurm-bridge-system", min_length=1)
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    retry_period_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _durations_ordered(self) -> Self:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need retry_period_seconds < renew_deadline_seconds < lease_duration_seconds")
        return self


class NodeSetConfig(_Section):
    """The NodeSet controller (controller/nodesets.py); turn it off where slurm-operator runs."""

    enabled: bool = True
    namespace: str | None = None  # watch NodeSets in this namespace only; None: all namespaces
    # Drain and resume need a Slurm operator. None: the bridge's own slurm.user. With
    # slurm.jwt_key_file the bridge mints tokens for this user; otherwise give token_file.
    slurm_user: str | None = None
    token_file: Path | None = None
    resync_seconds: float = Field(default=15.0, gt=0)  # Slurm node states are polled, not watched


class ExporterConfig(_Section):
    """The exporter (exporter/): it serves on `metrics_listen_address` every `poll_interval_seconds`."""

    per_user_metrics: bool = False  # also slurm_user_jobs_* / slurm_account_jobs_*
    per_node_metrics: bool = True  # slurm_node_*{node}
    stale_after_seconds: float | None = Field(default=None, gt=0)  # None: ten refreshes, >= 30 s


class BridgeConfig(_Section):
    scheduler_name: str = Field(default=wellknown.DEFAULT_SCHEDULER_NAME, min_length=1)
    # Pods of our scheduler outside these namespaces are refused (event + PodScheduled=False).
    namespaces: tuple[str, ...] = (wellknown.DEFAULT_NAMESPACE,)
    # Kubernetes label selector (kubectl syntax) for the nodes the bridge may bind to; "" = all.
    node_selector: str = ""
    # Node label holding the Slurm node name; None: the Kubernetes node name is the Slurm node name.
    node_name_label: str | None = None
    # Written into every job marker, so bridges of two clusters sharing one Slurm never touch each
    # other's jobs. None: derived at start from the kube-system namespace's UID (slurm_bridge/app.py),
    # which no other cluster shares; set it to keep markers stable across a cluster rebuild.
    cluster_id: str | None = Field(default=None, pattern=_CLUSTER_ID)

    slurm: SlurmConfig = SlurmConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    poll_interval_seconds: float = Field(default=2.0, gt=0)  # Slurm job cache refresh
    resync_interval_seconds: float = Field(default=300.0, gt=0)  # level-based full re-reconcile
    # --- job index safety nets (issue 16) ---
    # A job-list poll without update_time this often, whatever the cheap polls said.
    job_full_relist_seconds: float = Field(default=300.0, gt=0)
    # A full list that drops this share (or more) of the bridge's active jobs is read again before use.
    job_vanish_confirm_share: float = Field(default=0.5, gt=0, le=1)
    workers: int = Field(default=4, ge=1)
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    nodeset: NodeSetConfig = NodeSetConfig()
    exporter: ExporterConfig = ExporterConfig()
    # Serves /metrics, /healthz and /readyz; "" serves nothing.
    metrics_listen_address: str = "0.0.0.0:8080"
    # --- admission webhook and tenant policy (webhook/, bridge/tenancy.py) ---
    webhook: WebhookConfig = WebhookConfig()
    tenancy: TenancyConfig = TenancyConfig()

    @model_validator(mode="after")
    def _nodeset_identity(self) -> Self:
        n = self.nodeset
        other_user = n.slurm_user is not None and n.slurm_user != self.slurm.user
        if other_user and n.token_file is None and self.slurm.jwt_key_file is None:
            raise ValueError(
                f"nodeset.slurm_user {n.slurm_user!r} needs nodeset.token_file "
                "(or slurm.jwt_key_file to mint its tokens)"
            )
        return self

    @field_validator("metrics_listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        _host, sep, port = value.strip().rpartition(":")
        if value and (not sep or not port.isdigit() or int(port) > 65535):
            raise ValueError(f"listen address {value!r} is not host:port")
        return value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces_are_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [ns for ns in value if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns)]
        if bad:
            raise ValueError(f"not namespace names: {', '.join(map(repr, bad))}")
        return value

    @property
    def marker_cluster_id(self) -> str:
        """The cluster id in job markers. The composition root resolves `cluster_id` before anything
        runs; an unresolved config (explain, tests) marks jobs with a placeholder no bridge acts on."""
        return self.cluster_id or UNRESOLVED_CLUSTER_ID

    def namespace_allowed(self, namespace: str) -> bool:
        return namespace in self.namespaces


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read `path` (YAML mapping; optional) and `environ` (default: os.environ) into a BridgeConfig."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        file_values = loaded
    overrides = environment_overrides(os.environ if environ is None else environ)
    try:
        return BridgeConfig(**_merged(file_values, overrides))
    except ValidationError as exc:
        where = f"config file {path} or " if path is not None else ""
        raise ConfigError(f"invalid configuration (from {where}{ENV_PREFIX}* variables):\n{exc}") from exc


def environment_overrides(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """The nested mapping that SLURM_BRIDGE_* variables set (names lower-cased, ``__`` nests)."""
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.upper().startswith(prefix) or len(name) == len(prefix):
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__")]
        if not all(path):
            continue
        node = found
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = _env_value(value)
    return found


def _env_value(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value  # the model says what is wrong with it
    return value


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = (
            _merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
        )
    return out

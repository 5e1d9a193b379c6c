"""Tenant policy: what each namespace may ask of Slurm. Pure: no I/O, no clock.

The config maps a namespace (by name, or by its labels) to a `TenantPolicy`: the Slurm account its jobs
are charged to (a default and an allowed set), the partitions, QOS and reservations it may use, the Slurm
user its jobs run as, and whether it may set priority or exclusive. The first rule that matches decides;
a namespace no rule matches gets `TenancyConfig.default`, or is refused when there is none.

- `policy_for(namespace, labels, config)` picks the policy (None: refused);
- `check(namespace, labels, spec, config)` lists every `Violation` of a job spec;
- `with_defaults(spec, policy)` fills what the policy defaults (the account), never anything else.

A forbidden request is refused (the webhook at admission, the controller with an event and a
`PodScheduled=False` condition), never silently rewritten: defaults only fill what the pod left unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.wellknown import JobOption
from slurm_client import JobSpec


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TenantPolicy(_Section):
    """What one tenant may ask of Slurm. A None allow-list means "any"; an empty one means "none"."""

    default_account: str | None = None
    accounts: tuple[str, ...] | None = None
    partitions: tuple[str, ...] | None = None
    qos: tuple[str, ...] | None = None
    reservations: tuple[str, ...] | None = None
    # The Slurm user the tenant's jobs run as; None: the bridge's own user.
    slurm_user: str | None = None
    allow_priority: bool = False
    allow_exclusive: bool = False

    @model_validator(mode="after")
    def _default_is_allowed(self) -> Self:
        accounts, default = self.accounts, self.default_account
        if default is not None and accounts is not None and default not in accounts:
            raise ValueError(f"default_account {self.default_account!r} is not in accounts")
        return self


class TenantRule(_Section):
    """Namespaces a policy applies to: listed by name, or matching every label in `namespace_labels`."""

    namespaces: tuple[str, ...] = ()
    namespace_labels: dict[str, str] = Field(default_factory=dict)
    policy: TenantPolicy

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        if not self.namespaces and not self.namespace_labels:
            raise ValueError("a tenant rule needs namespaces or namespace_labels")
        return self

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if namespace in self.namespaces:
            return True
        return bool(self.namespace_labels) and all(
            labels.get(key) == value for key, value in self.namespace_labels.items()
        )


class TenancyConfig(_Section):
    """Off by default: then every allowed namespace may ask for anything, as before."""

    enabled: bool = False
    rules: tuple[TenantRule, ...] = ()
    # The policy of a namespace no rule matches; None refuses such namespaces.
    default: TenantPolicy | None = None
    # Tokens of the policies' Slurm users: one file per user here (`<token_dir>/<user>`); None: minted
    # with slurm.jwt_key_file.
    token_dir: Path | None = None


@dataclass(frozen=True)
class Violation:
    """One thing a job asks for that its namespace's policy forbids."""

    option: JobOption | None  # None: the namespace itself has no policy
    value: str
    allowed: str
    message: str


def policy_for(namespace: str, labels: Mapping[str, str], config: TenancyConfig) -> TenantPolicy | None:
    """The policy of `namespace` (labels: the Namespace object's labels); None when it has none."""
    for rule in config.rules:
        if rule.matches(namespace, labels):
            return rule.policy
    return config.default


def with_defaults(spec: JobSpec, policy: TenantPolicy) -> JobSpec:
    """`spec` with the policy's default account where the job names none."""
    if spec.account is None and policy.default_account is not None:
        return spec.model_copy(update={"account": policy.default_account})
    return spec


def check(namespace: str, labels: Mapping[str, str], spec: JobSpec, config: TenancyConfig) -> list[Violation]:
    """Every way `spec` (defaults applied or not) breaks the policy of `namespace`; [] when allowed."""
    if not config.enabled:
        return []
    policy = policy_for(namespace, labels, config)
    if policy is None:
        return [
            Violation(
                option=None,
                value=namespace,
                allowed="a namespace with a tenant policy",
                message=f"namespace {namespace!r} has no tenant policy, so it may not submit Slurm jobs",
            )
        ]
    spec = with_defaults(spec, policy)
    found: list[Violation] = []

    def one_of(option: JobOption, value: str | None, allowed: tuple[str, ...] | None) -> None:
        if value is None or allowed is None or value in allowed:
            return
        shown = ", ".join(allowed) or "none"
        found.append(
            Violation(
                option=option,
                value=value,
                allowed=shown,
                message=(
                    f"{option.value} {value!r} is not allowed in namespace {namespace!r} (allowed: {shown})"
                ),
            )
        )

    def flag(option: JobOption, value: str, permitted: bool) -> None:
        if not permitted:
            found.append(
                Violation(
                    option=option,
                    value=value,
                    allowed="not set",
                    message=f"namespace {namespace!r} may not set {option.value} (asked for {value})",
                )
            )

    one_of(JobOption.ACCOUNT, spec.account, policy.accounts)
    one_of(JobOption.PARTITION, spec.partition, policy.partitions)
    one_of(JobOption.QOS, spec.qos, policy.qos)
    one_of(JobOption.RESERVATION, spec.reservation, policy.reservations)
    if spec.priority is not None:
        flag(JobOption.PRIORITY, str(spec.priority), policy.allow_priority)
    if spec.exclusive:
        flag(JobOption.EXCLUSIVE, "true", policy.allow_exclusive)
    return found


def slurm_user_for(namespace: str, labels: Mapping[str, str], config: TenancyConfig) -> str | None:
    """The Slurm user jobs of `namespace` run as; None: the bridge's own user."""
    if not config.enabled:
        return None
    policy = policy_for(namespace, labels, config)
    return policy.slurm_user if policy is not None else None

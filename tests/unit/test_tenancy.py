from __future__ import annotations

from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.objects import PodInfo
from bridge.tenancy import (
    TenancyConfig,
    TenantPolicy,
    TenantRule,
    check,
    policy_for,
    slurm_user_for,
    with_defaults,
)
from bridge.translate import TenantPolicyError, TranslationError, job_spec_for
from bridge.wellknown import JobOption
from slurm_client import JobSpec

PHYSICS = TenantPolicy(
    default_account="physics",
    accounts=("physics", "scavenge"),
    partitions=("slurm-bridge",),
    qos=("normal",),
    reservations=(),
    slurm_user="alice",
)
BIOLOGY = TenantPolicy(default_account="biology", accounts=("biology",), allow_priority=True)
OPEN = TenantPolicy(allow_exclusive=True, allow_priority=True)

TENANCY = TenancyConfig(
    enabled=True,
    rules=(
        TenantRule(namespaces=("phys",), policy=PHYSICS),
        TenantRule(namespace_labels={"team": "bio"}, policy=BIOLOGY),
    ),
)
WITH_DEFAULT = TENANCY.model_copy(update={"default": OPEN})


def spec(**fields: Any) -> JobSpec:
    return JobSpec(**{"name": "j", "partition": "slurm-bridge", **fields})


@pytest.mark.parametrize(
    ("namespace", "labels", "config", "expected"),
    [
        pytest.param("phys", {}, TENANCY, PHYSICS, id="by-name"),
        pytest.param("lab", {"team": "bio"}, TENANCY, BIOLOGY, id="by-label"),
        pytest.param("phys", {"team": "bio"}, TENANCY, PHYSICS, id="first-rule-wins"),
        pytest.param("lab", {"team": "chem"}, TENANCY, None, id="no-entry-refused"),
        pytest.param("lab", {}, WITH_DEFAULT, OPEN, id="no-entry-default"),
    ],
)
def test_policy_for(
    namespace: str, labels: dict[str, str], config: TenancyConfig, expected: TenantPolicy | None
) -> None:
    assert policy_for(namespace, labels, config) == expected


@pytest.mark.parametrize(
    ("namespace", "labels", "job", "config", "expected"),
    [
        pytest.param("phys", {}, spec(), TENANCY, [], id="defaults-allowed"),
        pytest.param("phys", {}, spec(account="scavenge"), TENANCY, [], id="other-allowed-account"),
        pytest.param(
            "phys",
            {},
            spec(account="biology"),
            TENANCY,
            [(JobOption.ACCOUNT, "biology")],
            id="foreign-account",
        ),
        pytest.param(
            "phys", {}, spec(partition="gpu"), TENANCY, [(JobOption.PARTITION, "gpu")], id="partition"
        ),
        pytest.param("phys", {}, spec(qos="high"), TENANCY, [(JobOption.QOS, "high")], id="qos"),
        pytest.param(
            "phys",
            {},
            spec(reservation="maint"),
            TENANCY,
            [(JobOption.RESERVATION, "maint")],
            id="no-reservations",
        ),
        pytest.param("phys", {}, spec(priority=5), TENANCY, [(JobOption.PRIORITY, "5")], id="priority"),
        pytest.param(
            "phys", {}, spec(exclusive=True), TENANCY, [(JobOption.EXCLUSIVE, "true")], id="exclusive"
        ),
        pytest.param("lab", {"team": "bio"}, spec(priority=5), TENANCY, [], id="priority-allowed"),
        pytest.param(
            "phys",
            {},
            spec(account="biology", qos="high", priority=1),
            TENANCY,
            [(JobOption.ACCOUNT, "biology"), (JobOption.QOS, "high"), (JobOption.PRIORITY, "1")],
            id="all-listed",
        ),
        pytest.param("lab", {}, spec(), TENANCY, [(None, "lab")], id="no-policy"),
        pytest.param("lab", {}, spec(exclusive=True, account="x"), WITH_DEFAULT, [], id="default-policy"),
        pytest.param("lab", {}, spec(account="x"), TenancyConfig(), [], id="disabled"),
    ],
)
def test_check(
    namespace: str,
    labels: dict[str, str],
    job: JobSpec,
    config: TenancyConfig,
    expected: list[tuple[JobOption | None, str]],
) -> None:
    found = check(namespace, labels, job, config)
    assert [(v.option, v.value) for v in found] == expected
    for violation in found:
        assert violation.value in violation.message and namespace in violation.message


@pytest.mark.parametrize(
    ("job", "policy", "account"),
    [
        pytest.param(spec(), PHYSICS, "physics", id="filled"),
        pytest.param(spec(account="scavenge"), PHYSICS, "scavenge", id="kept"),
        pytest.param(spec(), OPEN, None, id="no-default"),
    ],
)
def test_with_defaults(job: JobSpec, policy: TenantPolicy, account: str | None) -> None:
    assert with_defaults(job, policy).account == account


def test_slurm_user_for() -> None:
    assert slurm_user_for("phys", {}, TENANCY) == "alice"
    assert slurm_user_for("lab", {"team": "bio"}, TENANCY) is None
    assert slurm_user_for("phys", {}, TenancyConfig(rules=TENANCY.rules)) is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"default_account": "x", "accounts": ["y"]}, id="default-not-allowed"),
    ],
)
def test_policy_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="default_account"):
        TenantPolicy(**bad)


def test_rule_needs_a_selector() -> None:
    with pytest.raises(ValueError, match="namespaces or namespace_labels"):
        TenantRule(policy=OPEN)


def pod(namespace: str, **annotations: str) -> PodInfo:
    return PodInfo(
        namespace=namespace,
        name="p",
        annotations={f"slinky.slurm.net/{k}": v for k, v in annotations.items()},
    )


@pytest.mark.parametrize(
    ("the_pod", "labels", "account", "problem"),
    [
        pytest.param(pod("phys"), {}, "physics", None, id="default-account-applied"),
        pytest.param(pod("phys", account="scavenge"), {}, "scavenge", None, id="allowed"),
        pytest.param(
            pod("phys", account="biology"), {}, None, "account 'biology' is not allowed", id="refused"
        ),
        pytest.param(pod("lab"), {"team": "bio"}, "biology", None, id="label-rule"),
        pytest.param(pod("lab"), {}, None, "has no tenant policy", id="no-policy"),
    ],
)
def test_translation_applies_policy(
    the_pod: PodInfo, labels: dict[str, str], account: str | None, problem: str | None
) -> None:
    """The controller's own path (job_spec_for) enforces the policy, not only the webhook."""
    config = BridgeConfig(namespaces=("phys", "lab"), tenancy=TENANCY)
    if problem is None:
        assert job_spec_for(the_pod, config, labels).account == account
        return
    with pytest.raises(TenantPolicyError, match=problem) as raised:
        job_spec_for(the_pod, config, labels)
    assert isinstance(raised.value, TranslationError)
    assert raised.value.violations


def test_config_from_yaml_shape() -> None:
    config = BridgeConfig.model_validate(
        {
            "tenancy": {
                "enabled": True,
                "rules": [
                    {"namespaces": ["phys"], "policy": {"accounts": ["physics"], "slurm_user": "alice"}}
                ],
                "default": None,
            }
        }
    )
    assert config.tenancy.rules[0].policy.slurm_user == "alice"

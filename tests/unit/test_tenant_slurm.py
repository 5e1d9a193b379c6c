"""Submitting as the tenant's Slurm user: which client each submit and cancel goes through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import BridgeConfig
from bridge.gang import GangKind
from bridge.gang_marker import GangMarker
from bridge.marker import JobMarker
from bridge.tenancy import TenancyConfig, TenantPolicy, TenantRule
from controller.tenant_slurm import TenantJobSubmitter, tenant_slurm_users, user_clients_for
from slurm_client import CancelOutcome, Job, JobSpec, Partition, SubmitResult, UserClients, UserCredentials

CLUSTER = "c1"


class FakeSlurm:
    """One user's client: records what went through it."""

    def __init__(self, user: str, log: list[tuple[str, str, int]], owners: dict[int, str]) -> None:
        self.user, self.log, self.owners = user, log, owners

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        job_id = 100 + len(self.owners)
        self.owners[job_id] = self.user
        self.log.append((self.user, "submit", job_id))
        return SubmitResult(job_id=job_id)

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome:
        self.log.append((self.user, "cancel", job_id))
        return CancelOutcome.SIGNALLED

    async def get_job(self, job_id: int) -> Job:
        return Job.model_validate(
            {"job_id": job_id, "name": "j", "state": "RUNNING", "user_name": self.owners[job_id]}
        )

    async def list_partitions(self) -> tuple[Partition, ...]:
        return ()


class FakeUsers:
    def __init__(self, log: list[tuple[str, str, int]], owners: dict[int, str]) -> None:
        self.clients: dict[str, FakeSlurm] = {}
        self.log, self.owners = log, owners

    def for_user(self, user: str) -> FakeSlurm:
        return self.clients.setdefault(user, FakeSlurm(user, self.log, self.owners))


CONFIG = BridgeConfig(
    cluster_id=CLUSTER,
    tenancy=TenancyConfig(
        enabled=True,
        rules=(
            TenantRule(namespaces=("phys",), policy=TenantPolicy(slurm_user="alice")),
            TenantRule(namespace_labels={"team": "bio"}, policy=TenantPolicy(slurm_user="bob")),
        ),
        default=TenantPolicy(),
    ),
)


def pod_job(namespace: str) -> JobSpec:
    marker = JobMarker(
        cluster_id=CLUSTER,
        namespace=namespace,
        pod_name="p",
        pod_uid="0f8fad5b-d9cb-469f-a165-70867728950e",
        spec_digest="0" * 12,
    )
    return JobSpec(name="j", comment=marker.encode())


def gang_job(namespace: str) -> JobSpec:
    marker = GangMarker(
        cluster_id=CLUSTER,
        namespace=namespace,
        kind=GangKind.COSCHEDULING,
        name="g",
        group_uid="1f8fad5b-d9cb-469f-a165-70867728950e",
        spec_digest="0" * 12,
    )
    return JobSpec(name="g", comment=marker.encode())


@pytest.mark.parametrize(
    ("spec", "labels", "user"),
    [
        pytest.param(pod_job("phys"), {}, "alice", id="pod-by-namespace"),
        pytest.param(gang_job("phys"), {}, "alice", id="gang-by-namespace"),
        pytest.param(pod_job("lab"), {"team": "bio"}, "bob", id="by-label"),
        pytest.param(pod_job("lab"), {}, "slurm", id="default-policy-no-user"),
        pytest.param(JobSpec(name="x", comment="someone else's"), {}, "slurm", id="no-marker"),
        pytest.param(
            JobSpec(name="x", comment=pod_job("phys").comment.replace(CLUSTER, "c2")),  # type: ignore[union-attr]
            {},
            "slurm",
            id="other-cluster",
        ),
    ],
)
async def test_submit_goes_through_the_tenant_user(spec: JobSpec, labels: dict[str, str], user: str) -> None:
    log: list[tuple[str, str, int]] = []
    owners: dict[int, str] = {}
    bridge = FakeSlurm("slurm", log, owners)
    users = FakeUsers(log, owners)
    submitter = TenantJobSubmitter(bridge, users, CONFIG, namespace_labels=lambda _ns: labels)  # type: ignore[arg-type]
    result = await submitter.submit_job(spec)
    await submitter.cancel_job(result.job_id, "USR1", batch_only=True)
    assert log == [(user, "submit", result.job_id), (user, "cancel", result.job_id)]


async def test_cancel_after_restart_looks_the_owner_up() -> None:
    log: list[tuple[str, str, int]] = []
    owners = {7: "alice", 8: "mallory"}
    bridge = FakeSlurm("slurm", log, owners)
    submitter = TenantJobSubmitter(bridge, FakeUsers(log, owners), CONFIG)  # type: ignore[arg-type]
    await submitter.cancel_job(7)
    await submitter.cancel_job(8)  # not a tenant user: tried as the bridge (Slurm refuses it if not ours)
    assert log == [("alice", "cancel", 7), ("slurm", "cancel", 8)]


def test_users_and_clients(tmp_path: Path) -> None:
    assert tenant_slurm_users(CONFIG) == {"slurm", "alice", "bob"}
    assert tenant_slurm_users(BridgeConfig()) == {"slurm"}
    assert user_clients_for(BridgeConfig()) is None
    with pytest.raises(ValueError, match=r"token_dir or slurm\.jwt_key_file"):
        user_clients_for(CONFIG)
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    with_key: Any = CONFIG.model_copy(update={"slurm": CONFIG.slurm.model_copy(update={"jwt_key_file": key})})
    assert isinstance(user_clients_for(with_key), UserClients)
    assert isinstance(UserCredentials(key_file=key).auth_for("alice"), object)

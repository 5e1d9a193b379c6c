"""Submitting each job as its tenant's Slurm user (bridge/tenancy.py: `TenantPolicy.slurm_user`).

`TenantJobSubmitter` stands where the reconcilers take their Slurm client (the `GangSlurm` port): a
submit goes through the client of the user the job's namespace runs as, read from the job's marker
(pod or gang marker: both name the namespace); a cancel or signal goes through the client of the job's
owner (remembered from the submit, else looked up once with the bridge's client), since Slurm lets only
the owner or an operator end a job. Everything else is the bridge's own client.

The job index must count these users' jobs as the bridge's: `tenant_slurm_users(config)` is what the
composition root adds to `SlurmJobCache(owner=...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from bridge.config import BridgeConfig
from bridge.gang_marker import decode_gang_marker
from bridge.marker import decode_marker
from bridge.tenancy import slurm_user_for
from slurm_client import (
    CancelOutcome,
    Job,
    JobSpec,
    Partition,
    SubmitResult,
    UserClients,
    UserCredentials,
)

log = logging.getLogger(__name__)

# Owners remembered from submits; beyond this the oldest are dropped (looked up again when needed).
_REMEMBERED: Final = 10_000

# Namespace name -> its labels (for tenant rules by label); None: rules by namespace name only.
NamespaceLabels = Callable[[str], Mapping[str, str]]


class _BridgeSlurm(Protocol):
    async def submit_job(self, spec: JobSpec) -> SubmitResult: ...

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome: ...

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome: ...

    async def get_job(self, job_id: int) -> Job: ...

    async def list_partitions(self) -> tuple[Partition, ...]: ...


def tenant_slurm_users(config: BridgeConfig) -> frozenset[str]:
    """The bridge's Slurm user and every user a tenant policy runs jobs as."""
    users = {config.slurm.user}
    if config.tenancy.enabled:
        policies = [rule.policy for rule in config.tenancy.rules]
        if config.tenancy.default is not None:
            policies.append(config.tenancy.default)
        users |= {p.slurm_user for p in policies if p.slurm_user is not None}
    return frozenset(users)


def user_clients_for(config: BridgeConfig) -> UserClients | None:
    """Clients for the tenants' Slurm users; None when no policy names a user other than the bridge's."""
    if tenant_slurm_users(config) == {config.slurm.user}:
        return None
    s, t = config.slurm, config.tenancy
    if t.token_dir is not None:
        credentials = UserCredentials(token_dir=t.token_dir)
    elif s.jwt_key_file is not None:
        credentials = UserCredentials(key_file=s.jwt_key_file)
    else:
        raise ValueError("tenant Slurm users need tenancy.token_dir or slurm.jwt_key_file")
    return UserClients(s.url, credentials, api_version=s.api_version, timeout=s.request_timeout_seconds)


class TenantJobSubmitter:
    def __init__(
        self,
        bridge: _BridgeSlurm,
        users: UserClients,
        config: BridgeConfig,
        namespace_labels: NamespaceLabels | None = None,
    ) -> None:
        self._bridge = bridge
        self._users = users
        self._config = config
        self._namespace_labels = namespace_labels
        self._owner_of: dict[int, str] = {}

    def user_for(self, spec: JobSpec) -> str:
        """The Slurm user `spec` is submitted as: its namespace's, else the bridge's."""
        cluster = self._config.marker_cluster_id
        marker = decode_marker(spec.comment, cluster)
        gang = decode_gang_marker(spec.comment, cluster) if marker is None else None
        namespace = marker.namespace if marker is not None else gang.namespace if gang is not None else None
        if namespace is None:
            return self._config.slurm.user
        labels = self._namespace_labels(namespace) if self._namespace_labels is not None else {}
        return slurm_user_for(namespace, labels, self._config.tenancy) or self._config.slurm.user

    def _client(self, user: str) -> _BridgeSlurm:
        return self._bridge if user == self._config.slurm.user else self._users.for_user(user)

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        user = self.user_for(spec)
        result = await self._client(user).submit_job(spec)
        self._remember(result.job_id, user)
        if user != self._config.slurm.user:
            log.debug("submitted job %d as Slurm user %s", result.job_id, user)
        return result

    async def cancel_job(
        self, job_id: int, signal: str | int | None = None, *, batch_only: bool = False
    ) -> CancelOutcome:
        outcome = await (await self._owner_client(job_id)).cancel_job(job_id, signal, batch_only=batch_only)
        self._owner_of.pop(job_id, None)
        return outcome

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome:
        client = await self._owner_client(job_id)
        outcome = await client.end_placeholder(job_id, exit_code, comment=comment)
        self._owner_of.pop(job_id, None)
        return outcome

    async def _owner_client(self, job_id: int) -> _BridgeSlurm:
        """The client of the job's owner: Slurm lets only the owner (or an operator) end a job."""
        user = self._owner_of.get(job_id)
        if user is None:
            owner = (await self._bridge.get_job(job_id)).user_name or self._config.slurm.user
            user = owner if owner in tenant_slurm_users(self._config) else self._config.slurm.user
        return self._client(user)

    async def list_partitions(self) -> tuple[Partition, ...]:
        return await self._bridge.list_partitions()

    def _remember(self, job_id: int, user: str) -> None:
        self._owner_of[job_id] = user
        while len(self._owner_of) > _REMEMBERED:
            del self._owner_of[next(iter(self._owner_of))]

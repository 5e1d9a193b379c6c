"""Slurm clients built from the config: the bridge's own, and the NodeSet controller's operator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from bridge.config import BridgeConfig
from slurm_client import JwtKeyAuth, SlurmClient, StaticTokenAuth, TokenFileAuth


def slurm_client_for(config: BridgeConfig) -> SlurmClient:
    s = config.slurm
    auth: httpx.Auth | None = None
    if s.jwt_key_file is not None:
        auth = JwtKeyAuth(s.user, s.jwt_key_file)
    elif s.token_file is not None:
        auth = TokenFileAuth(s.user, s.token_file)
    elif s.token is not None:
        auth = StaticTokenAuth(s.user, s.token.get_secret_value())
    return SlurmClient(s.url, auth=auth, api_version=s.api_version, timeout=s.request_timeout_seconds)


def operator_client_for(config: BridgeConfig) -> SlurmClient | None:
    """A client acting as the NodeSet controller's Slurm operator; None: use the bridge's own client."""
    n, s = config.nodeset, config.slurm
    auth: httpx.Auth
    if n.token_file is not None:
        auth = TokenFileAuth(n.slurm_user or s.user, n.token_file)
    elif n.slurm_user is not None and n.slurm_user != s.user and s.jwt_key_file is not None:
        auth = JwtKeyAuth(n.slurm_user, s.jwt_key_file)
    else:
        return None
    return SlurmClient(s.url, auth=auth, api_version=s.api_version, timeout=s.request_timeout_seconds)


@contextlib.asynccontextmanager
async def slurm_clients(config: BridgeConfig) -> AsyncIterator[tuple[SlurmClient, SlurmClient]]:
    """(the bridge's client, the NodeSet operator's client: the same one unless configured apart)."""
    slurm = slurm_client_for(config)
    operator = operator_client_for(config)
    try:
        yield slurm, operator or slurm
    finally:
        if operator is not None:
            await operator.aclose()
        await slurm.aclose()

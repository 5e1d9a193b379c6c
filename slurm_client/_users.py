"""One Slurm identity per tenant: jobs submitted as the user a namespace's policy names.

`UserCredentials` gives each user an httpx Auth flow: tokens minted from the cluster's HS256 key
(`JwtKeyAuth`), or read from one token file per user in a directory (`<token_dir>/<user>`,
`TokenFileAuth`). `UserClients` keeps one `SlurmClient` per user, made on first use, sharing the
settings of the bridge's own client; a job submitted through `for_user(u)` runs as `u` and is charged
to `u`'s associations, so `sshare`/`sacct` show the tenant.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx

from ._auth import JwtKeyAuth, TokenFileAuth
from ._client import SlurmClient

_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


class UserCredentials:
    """Auth flows per Slurm user, from the JWT key or a directory of token files (exactly one)."""

    def __init__(
        self,
        *,
        key_file: str | os.PathLike[str] | None = None,
        token_dir: str | os.PathLike[str] | None = None,
        lifespan: int = 3600,
    ) -> None:
        if (key_file is None) == (token_dir is None):
            raise ValueError("give exactly one of key_file and token_dir")
        self._key_file = Path(key_file) if key_file is not None else None
        self._token_dir = Path(token_dir) if token_dir is not None else None
        self._lifespan = lifespan
        self._auths: dict[str, httpx.Auth] = {}

    def auth_for(self, user: str) -> httpx.Auth:
        if not _USER.fullmatch(user):
            raise ValueError(f"{user!r} is not a Slurm user name")
        auth = self._auths.get(user)
        if auth is None:
            if self._key_file is not None:
                auth = JwtKeyAuth(user, self._key_file, lifespan=self._lifespan)
            else:
                assert self._token_dir is not None
                auth = TokenFileAuth(user, self._token_dir / user)
            self._auths[user] = auth
        return auth


class UserClients:
    """One SlurmClient per user, made on first use with `client_options` (SlurmClient's keywords)."""

    def __init__(self, base_url: str, credentials: UserCredentials, **client_options: Any) -> None:
        self._base_url = base_url
        self._credentials = credentials
        self._options = client_options
        self._clients: dict[str, SlurmClient] = {}

    def for_user(self, user: str) -> SlurmClient:
        client = self._clients.get(user)
        if client is None:
            auth = self._credentials.auth_for(user)
            client = SlurmClient(self._base_url, auth=auth, **self._options)
            self._clients[user] = client
        return client

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(self._clients))

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

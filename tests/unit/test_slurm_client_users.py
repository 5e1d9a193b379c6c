"""Per-user Slurm clients: each request carries its user's name and a token for that user."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
import respx

from slurm_client import UserClients, UserCredentials

URL = "http://slurmrestd.test"
KEY = b"k" * 32
PING = {"pings": [{"hostname": "ctl", "ping": "UP", "mode": "primary"}], "errors": []}


def token_for(user: str) -> str:
    return jwt.encode({"sun": user, "iat": 1, "exp": 2**31}, KEY, "HS256")


@pytest.fixture(params=["key", "token-dir"])
def credentials(request: pytest.FixtureRequest, tmp_path: Path) -> UserCredentials:
    if request.param == "key":
        (tmp_path / "jwt.key").write_bytes(KEY)
        return UserCredentials(key_file=tmp_path / "jwt.key")
    for user in ("alice", "bob"):
        (tmp_path / user).write_text(token_for(user))
    return UserCredentials(token_dir=tmp_path)


@respx.mock
async def test_each_user_its_own_identity(credentials: UserCredentials) -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["X-SLURM-USER-TOKEN"]
        claims = jwt.decode(token, KEY, algorithms=["HS256"])
        seen.append((request.headers["X-SLURM-USER-NAME"], claims["sun"]))
        return httpx.Response(200, json=PING)

    respx.get(f"{URL}/slurm/v0.0.38/ping").mock(side_effect=answer)
    clients = UserClients(URL, credentials, api_version="v0.0.38")
    try:
        assert clients.for_user("alice") is clients.for_user("alice")
        await clients.for_user("alice").ping()
        await clients.for_user("bob").ping()
        assert clients.users == ("alice", "bob")
    finally:
        await clients.aclose()
    assert seen == [("alice", "alice"), ("bob", "bob")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({}, "exactly one", id="none"),
        pytest.param({"key_file": "k", "token_dir": "d"}, "exactly one", id="both"),
    ],
)
def test_credentials_need_one_source(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UserCredentials(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["", "../etc/passwd", "a b", "x" * 70])
def test_user_names_checked(tmp_path: Path, user: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm user name"):
        UserCredentials(token_dir=tmp_path).auth_for(user)

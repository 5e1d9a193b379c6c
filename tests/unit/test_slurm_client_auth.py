"""Auth flows: static token, rotating token file, HS256 key minting; the token never shows."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
import respx

from slurm_client import (
    AuthError,
    CredentialError,
    JwtKeyAuth,
    Secret,
    SlurmClient,
    StaticTokenAuth,
    TokenFileAuth,
)

URL = "http://slurmrestd.test"
KEY = b"k" * 32
NOW = 1_800_000_000


def token(user: str = "slurm", exp: int = NOW + 3600, key: bytes = KEY) -> str:
    return jwt.encode({"sun": user, "iat": NOW, "exp": exp}, key, "HS256")


PING = {"pings": [{"hostname": "ctl", "ping": "UP", "mode": "primary"}], "errors": []}


class FakeClock:
    def __init__(self, now: float = float(NOW)) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _headers_of(auth: httpx.Auth) -> tuple[str, str]:
    request = httpx.Request("GET", URL)
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    return sent.headers["X-SLURM-USER-NAME"], sent.headers["X-SLURM-USER-TOKEN"]


def test_static_token_sets_both_headers() -> None:
    good = token()
    assert _headers_of(StaticTokenAuth("slurm", good, clock=FakeClock())) == ("slurm", good)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("not-a-jwt", "not a valid JWT", id="garbage"),
        pytest.param(token(exp=NOW - 1), "expired at", id="expired"),
        pytest.param(token(user="alice"), "for user 'alice'", id="other-user"),
    ],
)
def test_bad_static_tokens_are_refused_locally(value: str, message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        _headers_of(StaticTokenAuth("slurm", value, clock=FakeClock(NOW)))


def test_static_token_expires_while_in_use() -> None:
    clock = FakeClock(NOW)
    auth = StaticTokenAuth("slurm", token(exp=NOW + 10), clock=clock)
    _headers_of(auth)
    clock.now += 10
    with pytest.raises(CredentialError, match="expired"):
        _headers_of(auth)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: StaticTokenAuth("slurm", ""), id="empty-token"),
        pytest.param(lambda: StaticTokenAuth("", "tok"), id="empty-user"),
        pytest.param(lambda: JwtKeyAuth("slurm", "/nonexistent", lifespan=5), id="short-lifespan"),
        pytest.param(
            lambda: JwtKeyAuth("slurm", "/nonexistent", lifespan=60, renew_before=60), id="bad-renew"
        ),
    ],
)
def test_bad_configuration_is_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"(?i)empty|required|lifespan|renew_before"):
        make()


def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first, second = token(exp=NOW + 100), token(exp=NOW + 200)
    path.write_text(f"SLURM_JWT={first}\n")
    auth = TokenFileAuth("slurm", path, clock=FakeClock())
    assert _headers_of(auth)[1] == first
    path.write_text(second + "\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert _headers_of(auth)[1] == second


def test_token_file_unchanged_is_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first, other = token(exp=NOW + 100), token(exp=NOW + 200)
    assert len(first) == len(other)
    path.write_text(first)
    auth = TokenFileAuth("slurm", path, clock=FakeClock())
    assert _headers_of(auth)[1] == first
    stat = path.stat()
    path.write_text(other)  # same size, same mtime: treated as unchanged
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _headers_of(auth)[1] == first


@pytest.mark.parametrize("content", [pytest.param(None, id="missing"), pytest.param("  \n", id="empty")])
def test_token_file_problems_are_credential_errors(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CredentialError):
        _headers_of(TokenFileAuth("slurm", path))


def test_key_minting_claims(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    clock = FakeClock()
    user, token = _headers_of(JwtKeyAuth("slurm", key, lifespan=600, clock=clock))
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert user == "slurm"
    assert claims == {"sun": "slurm", "iat": int(clock.now), "exp": int(clock.now) + 600}


def test_key_minting_renews_before_expiry(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    clock = FakeClock()
    auth = JwtKeyAuth("slurm", key, lifespan=600, renew_before=60, clock=clock)
    first = _headers_of(auth)[1]
    clock.now += 500  # 100 s left: still good
    assert _headers_of(auth)[1] == first
    clock.now += 41  # 59 s left: renewed
    renewed = _headers_of(auth)[1]
    assert renewed != first
    claims = jwt.decode(
        renewed, KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["exp"] == int(clock.now) + 600


def test_key_rotation_mints_with_new_key(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    clock = FakeClock()
    auth = JwtKeyAuth("slurm", key, lifespan=600, clock=clock)
    _headers_of(auth)
    new_key = b"n" * 40
    key.write_bytes(new_key)
    token = _headers_of(auth)[1]
    jwt.decode(token, new_key, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})


def test_secret_never_shows() -> None:
    secret = Secret("super-secret-token")
    assert "super-secret-token" not in repr(secret)
    assert "super-secret-token" not in str(secret)
    assert "super-secret-token" not in f"{secret}"
    assert secret.reveal() == "super-secret-token"


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(StaticTokenAuth("slurm", "super-secret-token"), id="static"),
        pytest.param(TokenFileAuth("slurm", "/super-secret-token"), id="file"),
    ],
)
def test_auth_repr_hides_token(auth: httpx.Auth) -> None:
    assert "super-secret-token" not in repr(auth)


@respx.mock
async def test_401_refreshes_token_file_once(tmp_path: Path) -> None:
    path = tmp_path / "token"
    old, new = token(exp=int(time.time()) + 100), token(exp=int(time.time()) + 200)
    path.write_text(old)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent = request.headers["X-SLURM-USER-TOKEN"]
        seen.append(sent)
        if sent == old:
            # Rotated within the same mtime tick: only the 401 makes the client read it again.
            path.write_text(new)
            return httpx.Response(401, text="Authentication failure")
        return httpx.Response(200, json=PING)

    respx.get(f"{URL}/slurm/v0.0.38/ping").mock(side_effect=answer)
    async with SlurmClient(URL, auth=TokenFileAuth("slurm", path), api_version="v0.0.38") as client:
        pings = await client.ping()
    assert seen == [old, new]
    assert pings[0].responding


@respx.mock
async def test_refused_token_gives_clear_auth_error_without_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token(exp=int(time.time()) + 600)
    respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(
        return_value=httpx.Response(401, text="Authentication failure")
    )
    async with SlurmClient(URL, auth=StaticTokenAuth("slurm", secret), api_version="v0.0.42") as client:
        with pytest.raises(AuthError) as caught:
            await client.ping()
    assert caught.value.status == 401
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert secret not in caplog.text
    assert secret not in repr(client)


@respx.mock
async def test_refused_token_answer_511_is_auth_error() -> None:
    # 24.11/26.05: slurmctld refuses the token; slurmrestd answers 511 with error 1007.
    respx.get(f"{URL}/slurm/v0.0.45/jobs/").mock(
        return_value=httpx.Response(
            511,
            json={"errors": [{"error_number": 1007, "error": "Protocol authentication error"}], "jobs": []},
        )
    )
    async with SlurmClient(
        URL, auth=StaticTokenAuth("slurm", token(exp=int(time.time()) + 600)), api_version="v0.0.45"
    ) as client:
        with pytest.raises(AuthError) as caught:
            await client.list_jobs()
    assert caught.value.status == 511


@respx.mock
async def test_expired_token_is_refused_before_sending() -> None:
    route = respx.get(f"{URL}/slurm/v0.0.38/ping")
    async with SlurmClient(
        URL, auth=StaticTokenAuth("slurm", token(exp=int(time.time()) - 5)), api_version="v0.0.38"
    ) as client:
        with pytest.raises(AuthError, match="expired at"):
            await client.ping()
    assert not route.called


@respx.mock
async def test_missing_token_file_is_auth_error(tmp_path: Path) -> None:
    respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(return_value=httpx.Response(200, json=PING))
    async with SlurmClient(
        URL, auth=TokenFileAuth("slurm", tmp_path / "absent"), api_version="v0.0.42"
    ) as client:
        with pytest.raises(AuthError, match="token file"):
            await client.ping()

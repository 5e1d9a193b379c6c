"""slurmrestd authentication as httpx Auth flows (rest_auth/jwt).

Three ways to hold the credential:

* `StaticTokenAuth(user, token)`: a token given once (e.g. from `scontrol token`);
* `TokenFileAuth(user, path)`: a token file that an operator or a sidecar rotates; it is read again
  whenever its modification time changes, and once more on a 401;
* `JwtKeyAuth(user, key_file)`: the cluster's HS256 key; tokens with claims `sun`, `iat`, `exp`
  are minted here and renewed before they expire (the key file is re-read when it changes).

Each flow sets `X-SLURM-USER-NAME` and `X-SLURM-USER-TOKEN`. Tokens are held in a `Secret`, whose
repr and str never show the value, so they cannot leak into logs, reprs or exception messages.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx
import jwt

USER_HEADER = "X-SLURM-USER-NAME"
TOKEN_HEADER = "X-SLURM-USER-TOKEN"


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class CredentialError(RuntimeError):
    """The credential source cannot produce a token (missing/empty file, unreadable key)."""


def token_expiry(token: Secret, user: str) -> float | None:
    """Check what can be checked without the key: a JWT, for this user, with its `exp`.

    Slurm 22.05 reports a refused token only as "Unspecified error" (-1), so catching an expired
    or foreign token here is what makes that failure clear. Returns the expiry (None if the token
    has no `exp`); raises CredentialError otherwise.
    """
    try:
        claims = jwt.decode(token.reveal(), options={"verify_signature": False})
    except jwt.PyJWTError:
        raise CredentialError("the Slurm token is not a valid JWT") from None
    holder = claims.get("sun")
    if holder is not None and holder != user:
        raise CredentialError(f"the Slurm token is for user {holder!r}, not {user!r}")
    expires = claims.get("exp")
    return float(expires) if isinstance(expires, int | float) else None


class _SlurmAuth(httpx.Auth):
    """Common flow: set the two headers; on a 401, refresh once if the source can."""

    def __init__(self, user: str) -> None:
        if not user:
            raise ValueError("a Slurm user name is required")
        self.user = user
        self._lock = threading.Lock()

    def current_token(self) -> Secret:
        raise NotImplementedError

    def refreshed_token(self) -> Secret | None:
        """A different token to try after a 401, or None when there is nothing new to try."""
        return None

    def _apply(self, request: httpx.Request, token: Secret) -> None:
        request.headers[USER_HEADER] = self.user
        request.headers[TOKEN_HEADER] = token.reveal()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._apply(request, self.current_token())
        response = yield request
        if response.status_code == 401:
            fresh = self.refreshed_token()
            if fresh is not None:
                self._apply(request, fresh)
                yield request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(user={self.user!r})"


def _check_not_expired(expires: float | None, clock: Callable[[], float]) -> None:
    if expires is not None and clock() >= expires:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        raise CredentialError(f"the Slurm token expired at {stamp}")


class StaticTokenAuth(_SlurmAuth):
    """A fixed token; refused locally once it is malformed, foreign or expired."""

    def __init__(self, user: str, token: str | Secret, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(user)
        self._token = token if isinstance(token, Secret) else Secret(token)
        if not self._token.reveal():
            raise ValueError("empty Slurm token")
        self._clock = clock
        self._expires: float | None = None
        self._checked = False

    def current_token(self) -> Secret:
        if not self._checked:
            self._expires = token_expiry(self._token, self.user)
            self._checked = True
        _check_not_expired(self._expires, self._clock)
        return self._token


class TokenFileAuth(_SlurmAuth):
    """Reads the token from `path`; reads it again when the file's mtime (or size) changes."""

    def __init__(
        self, user: str, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(user)
        self.path = Path(path)
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._token: Secret | None = None
        self._expires: float | None = None

    def _read(self) -> Secret:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(f"cannot read Slurm token file {self.path}: {exc.strerror}") from None
        value = text.strip()
        # Accept the `SLURM_JWT=<token>` line that `scontrol token` prints.
        if value.startswith("SLURM_JWT="):
            value = value.removeprefix("SLURM_JWT=")
        if not value:
            raise CredentialError(f"Slurm token file {self.path} is empty")
        return Secret(value)

    def current_token(self) -> Secret:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise CredentialError(f"cannot read Slurm token file {self.path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._token is None or stamp != self._stamp:
                self._token = self._read()
                self._stamp = stamp
                self._expires = token_expiry(self._token, self.user)
            _check_not_expired(self._expires, self._clock)
            return self._token

    def refreshed_token(self) -> Secret | None:
        with self._lock:
            old = self._token
            self._token = self._read()
            self._expires = token_expiry(self._token, self.user)
            return self._token if self._token != old else None


class JwtKeyAuth(_SlurmAuth):
    """Mints HS256 tokens from the cluster's JWT key, as `scontrol token` would.

    A token lives `lifespan` seconds and is replaced once less than `renew_before` seconds (by
    default a fifth of the lifespan) remain, so no request ever carries an expiring token.
    """

    def __init__(
        self,
        user: str,
        key_file: str | os.PathLike[str],
        *,
        lifespan: int = 3600,
        renew_before: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(user)
        if lifespan < 10:
            raise ValueError("lifespan must be at least 10 seconds")
        self.key_file = Path(key_file)
        self.lifespan = lifespan
        self.renew_before = renew_before if renew_before is not None else max(5, lifespan // 5)
        if not 0 < self.renew_before < lifespan:
            raise ValueError("renew_before must be between 0 and the lifespan")
        self._clock = clock
        self._key: bytes | None = None
        self._key_stamp: tuple[int, int] | None = None
        self._token: Secret | None = None
        self._expires_at = 0.0

    def _key_bytes(self) -> bytes:
        try:
            stat = self.key_file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._key is None or stamp != self._key_stamp:
                key = self.key_file.read_bytes()
                if not key:
                    raise CredentialError(f"Slurm JWT key file {self.key_file} is empty")
                if self._key is not None and key != self._key:
                    self._token = None  # the key rotated: tokens signed with the old one are dead
                self._key, self._key_stamp = key, stamp
        except OSError as exc:
            raise CredentialError(f"cannot read Slurm JWT key {self.key_file}: {exc.strerror}") from None
        return self._key

    def _mint(self, key: bytes) -> Secret:
        now = int(self._clock())
        claims = {"sun": self.user, "iat": now, "exp": now + self.lifespan}
        self._expires_at = float(now + self.lifespan)
        return Secret(jwt.encode(claims, key, algorithm="HS256"))

    def current_token(self) -> Secret:
        with self._lock:
            key = self._key_bytes()
            if self._token is None or self._clock() >= self._expires_at - self.renew_before:
                self._token = self._mint(key)
            return self._token

    def refreshed_token(self) -> Secret | None:
        with self._lock:
            old = self._token
            self._key = None  # force a fresh read of the key
            self._token = self._mint(self._key_bytes())
            return self._token if self._token != old else None

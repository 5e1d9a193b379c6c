"""One exception tree for everything that can go wrong talking to the Kubernetes API.

    KubeError
    ├── KubeTransportError        no HTTP answer: connection refused/reset, TLS, client-side timeout
    └── KubeApiError              the server answered with a non-2xx status (parsed from its Status body)
        ├── BadRequest            400
        ├── Unauthorized          401
        ├── Forbidden             403
        ├── NotFound              404
        ├── Conflict              409 (resourceVersion / precondition mismatch, "already assigned")
        │   └── AlreadyExists     409 with reason AlreadyExists
        ├── Gone                  410 (resourceVersion too old: relist)
        ├── Invalid               422 (validation, failed JSON-patch test)
        ├── TooManyRequests       429 (carries retry_after_seconds when the server sent it)
        └── ServerError           5xx

Foreign errors (kubernetes.aio's ApiException, aiohttp's errors) are translated here, at the boundary;
callers branch on classes and fields, never on message text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any


class KubeError(Exception):
    """Base of every error raised by kube_client."""


class KubeTransportError(KubeError):
    """The request got no HTTP answer (network, TLS, timeout)."""


class KubeApiError(KubeError):
    """The API server answered with a failure `Status`."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}
        self.retry_after_seconds = retry_after_seconds


class BadRequest(KubeApiError):
    pass


class Unauthorized(KubeApiError):
    pass


class Forbidden(KubeApiError):
    pass


class NotFound(KubeApiError):
    pass


class Conflict(KubeApiError):
    pass


class AlreadyExists(Conflict):
    pass


class Gone(KubeApiError):
    pass


class Invalid(KubeApiError):
    pass


class TooManyRequests(KubeApiError):
    pass


class ServerError(KubeApiError):
    pass


_CLASS_BY_STATUS: dict[int, type[KubeApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def _error_class(status: int, reason: str) -> type[KubeApiError]:
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists
    if status >= 500:
        return ServerError
    return _CLASS_BY_STATUS.get(status, KubeApiError)


def error_from_status(status_object: Mapping[str, Any], *, http_status: int | None = None) -> KubeApiError:
    """Build the typed error for a decoded `Status` object (a reply body or a watch ERROR event)."""
    raw_code = status_object.get("code")
    code = raw_code if isinstance(raw_code, int) and raw_code > 0 else (http_status or 0)
    reason = str(status_object.get("reason") or "")
    message = str(status_object.get("message") or "")
    details = status_object.get("details")
    retry_after: float | None = None
    if isinstance(details, Mapping):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and seconds > 0:
            retry_after = float(seconds)
    return _error_class(code, reason)(
        code,
        reason,
        message,
        details=details if isinstance(details, Mapping) else None,
        retry_after_seconds=retry_after,
    )


def error_from_response(
    http_status: int,
    body: bytes | str | None,
    *,
    http_reason: str | None = None,
    retry_after_header: str | None = None,
) -> KubeApiError:
    """Translate a non-2xx reply; the body is usually a `Status`, but proxies may answer with anything."""
    decoded: Any = None
    if body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
    if isinstance(decoded, Mapping) and decoded.get("kind") == "Status":
        error = error_from_status(decoded, http_status=http_status)
    else:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        error = _error_class(http_status, "")(http_status, http_reason or "", text.strip()[:500])
    if error.retry_after_seconds is None and retry_after_header:
        with contextlib.suppress(ValueError):
            error.retry_after_seconds = float(retry_after_header)
    return error


def translate_api_exception(exc: Any) -> KubeError:
    """Translate kubernetes.aio's `ApiException` (status 0 means the client failed before an answer)."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or status <= 0:
        return KubeTransportError(str(getattr(exc, "reason", None) or exc))
    headers = getattr(exc, "headers", None)
    retry_after = headers.get("Retry-After") if isinstance(headers, Mapping) else None
    return error_from_response(
        status,
        getattr(exc, "body", None),
        http_reason=getattr(exc, "reason", None),
        retry_after_header=retry_after,
    )

"""Failure replies become one typed error tree, read from the server's Status body (never its text)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.aio.client.exceptions import ApiException

from kube_client import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeApiError,
    KubeTransportError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    error_from_response,
    error_from_status,
    translate_api_exception,
)


def status_body(code: int, reason: str, message: str, **extra: Any) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
            **extra,
        }
    ).encode()


@pytest.mark.parametrize(
    ("http_status", "body", "error_class", "reason"),
    [
        pytest.param(400, status_body(400, "BadRequest", "bad"), BadRequest, "BadRequest", id="400"),
        pytest.param(401, status_body(401, "Unauthorized", "who"), Unauthorized, "Unauthorized", id="401"),
        pytest.param(403, status_body(403, "Forbidden", "no"), Forbidden, "Forbidden", id="403"),
        pytest.param(404, status_body(404, "NotFound", 'pods "x" not found'), NotFound, "NotFound", id="404"),
        pytest.param(409, status_body(409, "Conflict", "modified"), Conflict, "Conflict", id="409-conflict"),
        pytest.param(
            409,
            status_body(409, "AlreadyExists", "exists"),
            AlreadyExists,
            "AlreadyExists",
            id="409-already-exists",
        ),
        pytest.param(410, status_body(410, "Expired", "too old resource version"), Gone, "Expired", id="410"),
        pytest.param(422, status_body(422, "Invalid", "spec.x: Required"), Invalid, "Invalid", id="422"),
        pytest.param(
            429,
            status_body(429, "TooManyRequests", "slow down"),
            TooManyRequests,
            "TooManyRequests",
            id="429",
        ),
        pytest.param(500, status_body(500, "InternalError", "etcd"), ServerError, "InternalError", id="500"),
        pytest.param(
            503, b"<html>proxy says no</html>", ServerError, "Service Unavailable", id="503-not-json"
        ),
        pytest.param(418, status_body(418, "", "teapot"), KubeApiError, "", id="unknown-status"),
    ],
)
def test_status_codes_map_to_classes(
    http_status: int, body: bytes, error_class: type[KubeApiError], reason: str
) -> None:
    error = error_from_response(http_status, body, http_reason="Service Unavailable")
    assert type(error) is error_class
    assert error.status == http_status
    assert error.reason == reason


def test_already_exists_is_a_conflict() -> None:
    assert isinstance(error_from_response(409, status_body(409, "AlreadyExists", "x")), Conflict)


def test_status_fields_are_kept() -> None:
    body = status_body(404, "NotFound", 'pods "p" not found', details={"name": "p", "kind": "pods"})
    error = error_from_response(404, body)
    assert error.message == 'pods "p" not found'
    assert error.details == {"name": "p", "kind": "pods"}
    assert "404 NotFound" in str(error)


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        pytest.param(
            status_body(429, "TooManyRequests", "x", details={"retryAfterSeconds": 3}),
            None,
            3.0,
            id="from-details",
        ),
        pytest.param(status_body(429, "TooManyRequests", "x"), "7", 7.0, id="from-header"),
        pytest.param(status_body(429, "TooManyRequests", "x"), "soon", None, id="bad-header"),
        pytest.param(status_body(429, "TooManyRequests", "x"), None, None, id="absent"),
    ],
)
def test_retry_after(body: bytes, header: str | None, expected: float | None) -> None:
    assert error_from_response(429, body, retry_after_header=header).retry_after_seconds == expected


def test_watch_error_event_status_object() -> None:
    # A watch reports "resourceVersion too old" as an ERROR event carrying a Status object.
    event_object = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version: 1 (2)",
    }
    error = error_from_status(event_object)
    assert isinstance(error, Gone)
    assert error.status == 410


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        pytest.param(
            ApiException(status=404, reason="Not Found", body=status_body(404, "NotFound", "x").decode()),
            NotFound,
            id="404-with-status-body",
        ),
        pytest.param(
            ApiException(status=409, reason="Conflict", body=status_body(409, "AlreadyExists", "x").decode()),
            AlreadyExists,
            id="409-already-exists",
        ),
        pytest.param(
            ApiException(status=502, reason="Bad Gateway", body=None), ServerError, id="502-no-body"
        ),
        pytest.param(
            ApiException(status=0, reason="Unsupported content type"),
            KubeTransportError,
            id="status-0-is-client-side",
        ),
    ],
)
def test_translate_api_exception(exception: ApiException, expected: type[Exception]) -> None:
    assert type(translate_api_exception(exception)) is expected

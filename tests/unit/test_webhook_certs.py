from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from bridge.config import BridgeConfig
from webhook import certs
from webhook.config import WebhookConfig
from webhook.server import serve_webhook

T0 = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
NAMES = {"dns_names": ("svc.ns.svc",), "ip_addresses": ("127.0.0.1",)}


def ensure(directory: Path, now: dt.datetime, **over: Any) -> certs.CertState:
    return certs.ensure_certificates(
        directory,
        now=now,
        serving_days=90,
        ca_days=3650,
        renew_before=dt.timedelta(days=30),
        **{**NAMES, **over},
    )


def serial(directory: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((directory / name).read_bytes()).serial_number


@pytest.mark.parametrize(
    ("later", "over", "serving_rotated", "ca_rotated"),
    [
        pytest.param(dt.timedelta(days=1), {}, False, False, id="fresh-kept"),
        pytest.param(dt.timedelta(days=59), {}, False, False, id="before-renew-window"),
        pytest.param(dt.timedelta(days=61), {}, True, False, id="renewed-30-days-ahead"),
        pytest.param(dt.timedelta(days=1), {"dns_names": ("other.svc",)}, True, False, id="names-changed"),
        pytest.param(dt.timedelta(days=3650 - 100), {}, True, True, id="ca-renewed"),
    ],
)
def test_rotation(
    tmp_path: Path, later: dt.timedelta, over: dict[str, Any], serving_rotated: bool, ca_rotated: bool
) -> None:
    first = ensure(tmp_path, T0)
    assert first.ca_rotated and first.serving_rotated
    before = (serial(tmp_path, certs.CA_CERT), serial(tmp_path, certs.TLS_CERT))
    state = ensure(tmp_path, T0 + later, **over)
    assert (state.serving_rotated, state.ca_rotated) == (serving_rotated, ca_rotated)
    after = (serial(tmp_path, certs.CA_CERT), serial(tmp_path, certs.TLS_CERT))
    assert (before[0] != after[0], before[1] != after[1]) == (ca_rotated, serving_rotated)
    assert state.serving_not_after > T0 + later + dt.timedelta(days=29)


def test_serving_cert_verifies_against_ca(tmp_path: Path) -> None:
    state = ensure(tmp_path, dt.datetime.now(dt.UTC))
    context = ssl.create_default_context(cadata=state.ca_pem.decode())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / certs.TLS_CERT, tmp_path / certs.TLS_KEY)
    assert (tmp_path / certs.TLS_KEY).stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate((tmp_path / certs.TLS_CERT).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    assert context.verify_mode == ssl.CERT_REQUIRED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post(port: int, ca: bytes, path: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    """(status, decoded body, server certificate DER)."""
    context = ssl.create_default_context(cadata=ca.decode())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    raw = await reader.read()
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    decoded = json.loads(payload) if payload.startswith(b"{") else payload
    return int(head.split()[1]), decoded, der


async def test_server_answers_and_reloads_rotated_certificate(tmp_path: Path) -> None:
    port = free_port()
    config = BridgeConfig(
        namespaces=("managed",),
        webhook=WebhookConfig(
            listen_address=f"127.0.0.1:{port}", cert_dir=tmp_path, check_interval_seconds=0.1, **NAMES
        ),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_webhook(config, stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    ca = (tmp_path / certs.CA_CERT).read_bytes()
    review = {
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "managed",
            "userInfo": {"username": "jane"},
            "object": {"metadata": {"labels": {"slurm-bridge.io/scheduling": "true"}}, "spec": {}},
        }
    }
    status, answer, first_der = await post(port, ca, "/mutate-pods", review)
    assert (
        status == 200 and answer["response"]["uid"] == "u1" and answer["response"]["patchType"] == "JSONPatch"
    )
    status, answer, _ = await post(port, ca, "/validate", review)
    assert status == 200 and answer["response"]["allowed"] is True
    status, answer, _ = await post(port, ca, "/validate", {"nope": 1})
    assert status == 400

    # Someone (cert-manager, an operator) replaces the serving certificate: new connections get it.
    for name in (certs.TLS_CERT, certs.TLS_KEY):
        (tmp_path / name).unlink()
    certs.ensure_certificates(
        tmp_path, now=dt.datetime.now(dt.UTC), dns_names=("svc.ns.svc",), ip_addresses=("127.0.0.1",)
    )
    for _ in range(50):
        await asyncio.sleep(0.1)
        _, _, der = await post(port, ca, "/validate", review)
        if der != first_der:
            break
    assert der != first_der
    stop.set()
    await asyncio.wait_for(task, 10)


def test_ca_bundle_patch() -> None:
    from webhook.ca_bundle import ca_bundle_patch

    configuration = {
        "webhooks": [{"name": "a", "clientConfig": {"url": "u"}}, {"name": "b", "clientConfig": {}}]
    }
    bundle = "Q0E="  # base64 of "CA"
    assert ca_bundle_patch(configuration, b"CA") == [
        {"op": "test", "path": "/webhooks/0/name", "value": "a"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle},
        {"op": "test", "path": "/webhooks/1/name", "value": "b"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": bundle},
    ]
    assert ca_bundle_patch({}, b"CA") == []


async def test_new_ca_is_announced_until_it_is_taken(tmp_path: Path) -> None:
    """A rotated CA is handed to on_ca_rotated; a failed hand-over is retried at the next check."""
    port = free_port()
    now = [T0]
    config = BridgeConfig(
        webhook=WebhookConfig(
            listen_address=f"127.0.0.1:{port}", cert_dir=tmp_path, check_interval_seconds=0.05, **NAMES
        ),
    )
    told: list[bytes] = []
    attempts = [0]

    async def rotated(ca: bytes) -> None:
        attempts[0] += 1
        if attempts[0] == 1:
            raise RuntimeError("API server busy")
        told.append(ca)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve_webhook(config, stop, ready=ready, on_ca_rotated=rotated, clock=lambda: now[0])
    )
    await asyncio.wait_for(ready.wait(), 10)
    first_ca = (tmp_path / certs.CA_CERT).read_bytes()
    now[0] = T0 + dt.timedelta(days=3650 - 10)  # the CA is due for renewal
    for _ in range(100):
        await asyncio.sleep(0.05)
        if told:
            break
    stop.set()
    await asyncio.wait_for(task, 10)
    assert attempts[0] >= 2
    assert told and told[0] != first_ca and told[0] == (tmp_path / certs.CA_CERT).read_bytes()

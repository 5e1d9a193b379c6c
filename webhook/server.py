"""The webhook's HTTPS server: asyncio streams, the standard library's ssl, HTTP/1.1 with keep-alive.

Paths (POST, an AdmissionReview in the body):
- ``/mutate-pods``: `admission.mutate_pod`; ``/mutate-pods/namespace-opted-in`` is the path the
  registration gives the webhook whose namespaceSelector matches opted-in namespaces;
- ``/validate``: `admission.validate` (pods, PodGroups, Jobs, JobSets, LeaderWorkerSets, Workloads).
``GET /healthz`` answers ``ok``.

The serving certificate is re-read whenever its files change (checked every
`webhook.check_interval_seconds`) and, with `generate_certificates`, renewed before it expires. New
connections get the new certificate (through the TLS server-name callback, which runs on every
handshake); open ones keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bridge.config import BridgeConfig
from webhook import admission, certs

log = logging.getLogger(__name__)

MUTATE_PODS_PATH: Final = "/mutate-pods"
VALIDATE_PATH: Final = "/validate"
HEALTH_PATH: Final = "/healthz"
# The API server allows no query in a webhook URL: the opted-in namespaces' webhook has its own path.
MUTATE_OPTED_IN_PODS_PATH: Final = "/mutate-pods/namespace-opted-in"
_MAX_HEADER: Final = 64 * 1024
_MAX_BODY: Final = 8 * 1024 * 1024
_IDLE_SECONDS: Final = 120.0

# Namespace name -> the Namespace's labels (for tenant rules by label); None: no lookup, rules by name.
NamespaceLabels = Callable[[str], Awaitable[Mapping[str, str]]]
# Told the new caBundle (PEM) when the CA was replaced, e.g. to patch the webhook configurations.
CaRotated = Callable[[bytes], Awaitable[None]]


class Handler:
    """Bodies in, (status, body) out: the part of the server that needs no socket."""

    def __init__(self, config: BridgeConfig, namespace_labels: NamespaceLabels | None = None) -> None:
        self.config = config
        self._namespace_labels = namespace_labels

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        url = urlsplit(target)
        if method == "GET" and url.path == HEALTH_PATH:
            return 200, b"ok"
        if method != "POST" or url.path not in (MUTATE_PODS_PATH, MUTATE_OPTED_IN_PODS_PATH, VALIDATE_PATH):
            return 404, b"not found"
        try:
            request = admission.Request.from_review(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, f"bad AdmissionReview: {exc}".encode()
        if url.path in (MUTATE_PODS_PATH, MUTATE_OPTED_IN_PODS_PATH):
            opted_in = url.path == MUTATE_OPTED_IN_PODS_PATH
            decision = admission.mutate_pod(request, self.config, namespace_opted_in=opted_in)
        else:
            labels: Mapping[str, str] = {}
            if self._namespace_labels is not None and self.config.tenancy.enabled and request.namespace:
                try:
                    labels = await self._namespace_labels(request.namespace)
                except Exception as exc:  # any failure: the API server's failure policy decides
                    log.warning("cannot read the labels of namespace %s: %s", request.namespace, exc)
                    return 500, f"cannot read the labels of namespace {request.namespace}".encode()
            decision = admission.validate(request, self.config, self.config.webhook.bridge_usernames, labels)
            if not decision.allowed:
                log.info("refused %s %s: %s", request.operation, request.kind, decision.message)
        return 200, json.dumps(admission.response(request.uid, decision)).encode()


class _Certificates:
    """The current TLS context; swapped in on each handshake by the server-name callback."""

    def __init__(self, config: BridgeConfig, clock: Callable[[], dt.datetime]) -> None:
        self._w = config.webhook
        self._clock = clock
        self._stamp: tuple[int, ...] | None = None
        self.current = self._refresh_context()

    @property
    def directory(self) -> Path:
        return self._w.cert_dir

    def ensure(self) -> certs.CertState | None:
        if not self._w.generate_certificates:
            return None
        return certs.ensure_certificates(
            self.directory,
            dns_names=self._w.dns_names,
            ip_addresses=self._w.ip_addresses,
            now=self._clock(),
            serving_days=self._w.serving_cert_days,
            ca_days=self._w.ca_cert_days,
            renew_before=dt.timedelta(days=self._w.renew_before_days),
        )

    def _files_stamp(self) -> tuple[int, ...]:
        stamp: list[int] = []
        for name in (certs.TLS_CERT, certs.TLS_KEY):
            info = (self.directory / name).stat()
            stamp += [info.st_mtime_ns, info.st_size, info.st_ino]
        return tuple(stamp)

    def _refresh_context(self) -> ssl.SSLContext:
        self.ensure()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.directory / certs.TLS_CERT, self.directory / certs.TLS_KEY)
        context.sni_callback = self._pick
        self._stamp = self._files_stamp()
        return context

    def _pick(self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        if connection.context is not self.current:
            connection.context = self.current

    def check(self) -> bytes | None:
        """Renew and reload as needed; the new CA (PEM) when the CA was replaced."""
        state = self.ensure()
        if self._files_stamp() != self._stamp:
            self.current = self._refresh_context()
            log.info("webhook serving certificate reloaded from %s", self.directory)
        return state.ca_pem if state is not None and state.ca_rotated else None


async def serve_webhook(
    config: BridgeConfig,
    stop: asyncio.Event,
    *,
    namespace_labels: NamespaceLabels | None = None,
    on_ca_rotated: CaRotated | None = None,
    ready: asyncio.Event | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    """Serve the admission webhook on `config.webhook.listen_address` until `stop` is set."""
    certificates = _Certificates(config, clock)
    handler = Handler(config, namespace_labels)
    host, _, port = config.webhook.listen_address.rpartition(":")

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve_connection(handler, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except ssl.SSLError as exc:
            log.debug("webhook TLS error: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(
        connection, host or None, int(port), ssl=certificates.current, limit=_MAX_HEADER
    )
    log.info("admission webhook serving on https://%s", config.webhook.listen_address)
    if ready is not None:
        ready.set()
    unannounced_ca: bytes | None = None  # a new CA the registration has not been told about yet
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.webhook.check_interval_seconds)
            if stop.is_set():
                break
            try:
                unannounced_ca = certificates.check() or unannounced_ca
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("webhook certificate check failed: %s", exc)
                continue
            if unannounced_ca is not None and on_ca_rotated is not None:
                try:
                    await on_ca_rotated(unannounced_ca)
                    unannounced_ca = None
                except Exception as exc:  # told again at the next check
                    log.error("cannot update the webhook registration's caBundle: %s", exc)
    finally:
        server.close()
        await server.wait_closed()


async def _serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_SECONDS)
        except asyncio.IncompleteReadError:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = [*lines[0].split(" ", 2), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > _MAX_BODY or headers.get("transfer-encoding"):
            await _reply(writer, 413, b"body too large or chunked", close=True)
            return
        body = await reader.readexactly(length) if length else b""
        status, payload = await handler.handle(method, target, body)
        close = headers.get("connection", "").lower() == "close"
        await _reply(writer, status, payload, close=close)
        if close:
            return


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    500: "Internal Server Error",
}


async def _reply(writer: asyncio.StreamWriter, status: int, payload: bytes, *, close: bool) -> None:
    kind = "application/json" if payload.startswith(b"{") else "text/plain"
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + payload)
    await writer.drain()

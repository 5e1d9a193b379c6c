"""Run the exporter: a poller that keeps a snapshot fresh, and /metrics serving it.

    await serve(slurm, ExporterSettings(interval=2, listen="127.0.0.1:9100"))  # own HTTP server
    await serve(slurm, ExporterSettings(interval=2), registry=r, stop=s)       # inside a process
                                                          # that already serves registry r over HTTP

From a shell: `slurm-bridge exporter --config bridge.yaml` (slurm_bridge/ builds the client and settings).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._collector import CollectorOptions, SlurmCollector
from ._poller import JobFeed, SlurmReader, SnapshotPoller

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 20.0

# A health check served next to /metrics: () -> (healthy, one line saying why).
Probe = Callable[[], tuple[bool, str]]


def default_stale_after(interval: float) -> float:
    """How old a snapshot may get before its series are left out: ten refreshes, at least 30 s."""
    return max(30.0, 10 * interval)


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses) -> (host, port)."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


class _OtherCollectors(Collector):
    """What `registry` holds besides the exporter's own collector."""

    def __init__(self, registry: CollectorRegistry, skip: frozenset[str]) -> None:
        self._registry = registry
        self._skip = skip

    def collect(self) -> Iterator[Metric]:
        return (family for family in self._registry.collect() if family.name not in self._skip)


def metrics_page(registry: CollectorRegistry, collector: SlurmCollector) -> Callable[[], bytes]:
    """The /metrics body: the registry's other collectors, then the collector's cached rendering."""
    others = _OtherCollectors(registry, collector.family_names)
    return lambda: generate_latest(others) + collector.render()


def metrics_app(
    page: Callable[[], bytes], probes: Mapping[str, Probe] | None = None
) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """A WSGI app serving `page()` at /metrics (and /), and each probe at its path (200 or 503)."""
    probes = dict(probes or {})

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/metrics", "/") and path not in probes:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        if path in probes:
            healthy, why = probes[path]()
            text = f"{'ok' if healthy else 'not ok'}: {why}\n".encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [b""] if method == "HEAD" else [text]
        body = page()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    return app


def start_metrics_server(
    host: str, port: int, page: Callable[[], bytes], probes: Mapping[str, Probe] | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `page` (and `probes`) over HTTP from a daemon thread (a thread per request)."""
    server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
    server = make_server(
        host, port, metrics_app(page, probes), server_class=server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True)
    thread.start()
    return server, thread


class Exporter:
    """The poller, its collector registered in `registry`, and optionally an HTTP /metrics server.

    Use as an async context manager (registers, starts the server; unregisters and stops it on
    exit) and `await run(stop)` inside it. The server sends the registry's other collectors and
    the collector's own rendering, cached per snapshot (see `SlurmCollector.render`).
    """

    def __init__(
        self,
        slurm: SlurmReader,
        *,
        registry: CollectorRegistry,
        interval: float,
        listen: str | None = None,
        stale_after: float | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        options: CollectorOptions | None = None,
        probes: Mapping[str, Probe] | None = None,
        job_feed: JobFeed | None = None,
    ) -> None:
        self._registry = registry
        self._probes = probes
        self._listen = parse_listen_address(listen) if listen else None
        self.stale_after = stale_after if stale_after is not None else default_stale_after(interval)
        self.poller = SnapshotPoller(slurm, interval=interval, read_timeout=read_timeout, job_feed=job_feed)
        self.collector = SlurmCollector(
            lambda: self.poller.status, stale_after=self.stale_after, options=options
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._registered = False

    @property
    def address(self) -> tuple[str, int] | None:
        """Where /metrics is served (the real port when asked for port 0), or None."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._registry.register(self.collector)
        self._registered = True
        if self._listen is not None:
            host, port = self._listen
            try:
                self._server, self._thread = start_metrics_server(
                    host, port, metrics_page(self._registry, self.collector), self._probes
                )
            except BaseException:  # e.g. the port is taken: leave the registry as it was
                self.close()
                raise
            log.info("serving Slurm metrics on http://%s:%d/metrics", host, self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._registered:
            self._registry.unregister(self.collector)
            self._registered = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; after each new snapshot, build what scrapes will read in a
        worker thread, so no scrape pays for it."""
        render = self._listen is not None

        async def warm() -> None:
            await asyncio.to_thread(self.collector.warm, render=render)

        await self.poller.run(stop, after_refresh=warm)
        log.info("exporter stopped")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)


@dataclass(frozen=True)
class ExporterSettings:
    """What the exporter itself needs; the composition root (slurm_bridge/) fills it from its config."""

    interval: float  # seconds between refreshes
    listen: str | None = None  # host:port for its own /metrics server; None: serve nothing
    stale_after: float | None = None  # None: default_stale_after(interval)
    options: CollectorOptions = field(default_factory=CollectorOptions)


async def serve(
    slurm: SlurmReader,
    settings: ExporterSettings,
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    probes: Mapping[str, Probe] | None = None,
) -> None:
    """Run the exporter over `slurm` until `stop` is set (SIGTERM/SIGINT when `stop` is None).

    With `settings.listen`, its server sends the Slurm metrics (rendered once per snapshot), every
    other collector of `registry`, and the `probes` (path -> check). The caller owns `slurm`.
    """
    registry = registry if registry is not None else CollectorRegistry()
    stop = stop if stop is not None else _stop_on_signals()
    exporter = Exporter(
        slurm,
        registry=registry,
        interval=settings.interval,
        listen=settings.listen,
        stale_after=settings.stale_after,
        options=settings.options,
        probes=probes,
    )
    async with exporter:
        await exporter.run(stop)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop

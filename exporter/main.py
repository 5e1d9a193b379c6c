"""Run the exporter: a poller that keeps a snapshot fresh, and /metrics serving it.

    await serve(config)                                   # standalone: own client and HTTP server
    await serve(config, registry=r, stop=s, start_server=False)   # inside a process that already
                                                          # serves registry r over HTTP

or from a shell: `python -m exporter --config bridge.yaml --listen 127.0.0.1:9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bridge.config import BridgeConfig, ConfigError, load_config

from ._collector import CollectorOptions, SlurmCollector
from ._poller import SlurmReader, SnapshotPoller

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 20.0


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


def metrics_app(page: Callable[[], bytes]) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """A WSGI app serving `page()` at /metrics (and /)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = page()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    return app


def start_metrics_server(
    host: str, port: int, page: Callable[[], bytes]
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `page` over HTTP from a daemon thread (a thread per request)."""
    server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
    server = make_server(
        host, port, metrics_app(page), server_class=server_class, handler_class=_QuietHandler
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
    ) -> None:
        self._registry = registry
        self._listen = parse_listen_address(listen) if listen else None
        self.stale_after = stale_after if stale_after is not None else default_stale_after(interval)
        self.poller = SnapshotPoller(slurm, interval=interval, read_timeout=read_timeout)
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
                    host, port, metrics_page(self._registry, self.collector)
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


async def serve(
    config: BridgeConfig,
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    listen: str | None = None,
    start_server: bool = True,
    slurm: SlurmReader | None = None,
    interval: float | None = None,
    stale_after: float | None = None,
    options: CollectorOptions | None = None,
) -> None:
    """Run the exporter until `stop` is set (SIGTERM/SIGINT when `stop` is None).

    - `listen` overrides `config.metrics_listen_address` ("" serves nothing). The server sends the
      Slurm metrics (rendered once per snapshot) and every other collector of `registry`.
    - `start_server=False` serves nothing, for a process that already exposes `registry` over HTTP.
    - `slurm` defaults to a client built from `config.slurm` (closed on return).
    - `interval` defaults to `config.poll_interval_seconds`; `stale_after` to ten intervals (>= 30 s).
    """
    registry = registry if registry is not None else CollectorRegistry()
    stop = stop if stop is not None else _stop_on_signals()
    address = (listen if listen is not None else config.metrics_listen_address) if start_server else None
    async with contextlib.AsyncExitStack() as stack:
        if slurm is None:
            from bridge.runner import slurm_client_for  # here: bridge.runner imports this package

            client = slurm_client_for(config)
            stack.push_async_callback(client.aclose)
            slurm = client
        exporter = Exporter(
            slurm,
            registry=registry,
            interval=interval if interval is not None else config.poll_interval_seconds,
            listen=address or None,
            stale_after=stale_after,
            options=options,
        )
        await stack.enter_async_context(exporter)
        await exporter.run(stop)
    log.info("exporter stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter", description="Serve Prometheus metrics read from Slurm's slurmrestd."
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="bridge YAML config")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT", help="override metrics_listen_address")
    parser.add_argument("--interval", type=float, default=None, help="seconds between refreshes")
    parser.add_argument("--stale-after", type=float, default=None, help="drop Slurm series older than this")
    parser.add_argument(
        "--per-user-metrics", action="store_true", help="also slurm_user_jobs_* / slurm_account_jobs_*"
    )
    parser.add_argument("--no-per-node-metrics", action="store_true", help="leave out slurm_node_*{node}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":  # one INFO line per request, four per refresh
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        if args.listen:
            parse_listen_address(args.listen)
    except (ConfigError, ValueError) as exc:
        print(f"exporter: {exc}", file=sys.stderr)
        return 2
    options = CollectorOptions(
        per_user_metrics=args.per_user_metrics, per_node_metrics=not args.no_per_node_metrics
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                config,
                listen=args.listen,
                interval=args.interval,
                stale_after=args.stale_after,
                options=options,
            )
        )
    return 0

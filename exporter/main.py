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
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

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


class Exporter:
    """The poller, its collector registered in `registry`, and optionally an HTTP /metrics server.

    Use as an async context manager (registers, starts the server; unregisters and stops it on
    exit) and `await run(stop)` inside it.
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
            self._server, self._thread = start_http_server(port, addr=host, registry=self._registry)
            log.info("serving Slurm metrics on http://%s:%d/metrics", *self.address_or_listen)

    @property
    def address_or_listen(self) -> tuple[str, int]:
        address = self.address or self._listen
        assert address is not None
        return address

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
        await self.poller.run(stop)

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

    - `listen` overrides `config.metrics_listen_address` ("" serves nothing); `start_server=False`
      serves nothing either, for a process that already exposes `registry` over HTTP.
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

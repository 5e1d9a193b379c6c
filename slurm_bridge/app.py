"""Run the chosen components of the bridge in one process until stopped.

    scheduler + controller   the shim and the workload controller (slurm_bridge/workloads.py); only the
                             leader acts (a coordination.k8s.io Lease), the others keep warm caches
    exporter                 Prometheus metrics from Slurm (exporter/), on every replica
    webhook                  admission: defaults and validation at `kubectl apply` (webhook/), every replica

One HTTP server on `metrics_listen_address` serves /metrics, /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Collection

from prometheus_client import CollectorRegistry, generate_latest

import exporter
from bridge.config import BridgeConfig
from bridge.startup_checks import StartupRefused
from slurm_bridge.clients import slurm_clients
from slurm_bridge.exits import EXIT_LEADERSHIP_LOST, EXIT_OK, EXIT_USAGE, LeaseLost
from slurm_bridge.health import Health
from slurm_client import SlurmClient

log = logging.getLogger(__name__)

WORKLOAD_COMPONENTS = frozenset({"scheduler", "controller"})


def run(config: BridgeConfig, components: set[str]) -> int:
    try:
        asyncio.run(run_async(config, components))
    except KeyboardInterrupt:
        pass
    except StartupRefused as refused:
        print(f"slurm-bridge: refusing to start: {refused}", file=sys.stderr)
        return EXIT_USAGE
    except LeaseLost as lost:
        log.error("%s: stopping (exit %d) to rejoin as a follower", lost, EXIT_LEADERSHIP_LOST)
        return EXIT_LEADERSHIP_LOST
    return EXIT_OK


async def run_async(
    config: BridgeConfig,
    components: Collection[str],
    *,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    identity: str | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when stop is None)."""
    registry = registry if registry is not None else CollectorRegistry()
    stop = stop or _stop_on_signals()
    identity = identity or f"{socket.gethostname()}-{os.getpid()}"
    health = Health()
    async with contextlib.AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        stack.push_async_callback(_cancel_all, tasks)
        tasks.append(asyncio.create_task(health.heartbeat(), name="heartbeat"))
        essential: list[asyncio.Task[None]] = []  # the process ends when one of these fails
        stack.push_async_callback(_cancel_all, essential)
        slurm, operator = await stack.enter_async_context(slurm_clients(config))
        wanted = WORKLOAD_COMPONENTS & set(components)
        # One reader of Slurm: with the workload controller here, its job index is the only job list,
        # and the exporter's nodes/partitions read serves the NodeSet controller.
        shared = None
        if wanted:
            # Imported here, as the workloads below: it knows the controllers' job index.
            from slurm_bridge.shared_view import SharedSlurmView

            shared = SharedSlurmView()
        metrics_server = None
        if "exporter" in components:  # on every replica, leader or not; its server serves everything
            exporter_ = _exporter(config, slurm, registry, health, shared)
            if shared is not None:
                shared.attach_exporter(exporter_.poller)
            await stack.enter_async_context(exporter_)
            tasks.append(asyncio.create_task(exporter_.run(stop), name="exporter"))
        elif config.metrics_listen_address:
            host, port = exporter.parse_listen_address(config.metrics_listen_address)
            metrics_server, _ = exporter.start_metrics_server(
                host, port, lambda: generate_latest(registry), health.probes
            )
            stack.callback(metrics_server.server_close)
            stack.callback(metrics_server.shutdown)
        if "webhook" in components:
            # Imported here: only a process serving admission loads the webhook (TLS, certificates).
            from webhook.entry import run_webhook

            essential.append(asyncio.create_task(run_webhook(config, stop), name="webhook"))
        if wanted:
            # Imported here: a process running only the exporter never loads Kubernetes or the controllers.
            from slurm_bridge.workloads import start_workloads

            essential.append(
                await start_workloads(
                    config, wanted, stack, slurm, operator, registry, identity, health, shared=shared
                )
            )
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, *essential}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        failed = [t for t in done if t is not waiter and not t.cancelled() and t.exception() is not None]
        # Ended here, not by the stack: the stack closes the Kubernetes client first (LIFO), and the
        # leader must hand its Lease back through it, or followers wait for the Lease to expire.
        await _cancel_all(essential)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        log.info("stopping")


def _exporter(
    config: BridgeConfig,
    slurm: SlurmClient,
    registry: CollectorRegistry,
    health: Health,
    job_feed: exporter.JobFeed | None = None,
) -> exporter.Exporter:
    e = config.exporter
    made = exporter.Exporter(
        slurm,
        registry=registry,
        interval=config.poll_interval_seconds,
        listen=config.metrics_listen_address or None,
        stale_after=e.stale_after_seconds,
        options=exporter.CollectorOptions(
            per_user_metrics=e.per_user_metrics, per_node_metrics=e.per_node_metrics
        ),
        probes=health.probes,
        job_feed=job_feed,
    )

    def slurm_answers() -> tuple[bool, str]:
        status = made.poller.status
        return status.last_ok is True, status.last_error or (
            "refreshed" if status.last_ok else "not yet refreshed"
        )

    health.add_readiness_check("exporter", slurm_answers)
    return made


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop

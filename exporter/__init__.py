"""exporter: Prometheus metrics read from Slurm through slurm_client.

    poller = SnapshotPoller(slurm_client, interval=5)        # background refresh -> Snapshot
    registry.register(SlurmCollector(lambda: poller.status, stale_after=30))
    await poller.run(stop)

or all of it, with an HTTP /metrics server: `await serve(slurm_client, ExporterSettings(...))`.
A scrape only reads the last snapshot; it never waits on slurmrestd. Metric names follow Slurm
26.05's own metrics plugin where it has the metric (docs/metrics.md has the table).
"""

from ._collector import (
    DEFAULT_DEMAND_REASONS,
    CollectorOptions,
    SlurmCollector,
    health_families,
    snapshot_families,
)
from ._poller import JobFeed, SlurmReader, SnapshotPoller
from ._snapshot import ErrorKind, JobPoll, Operation, PollerStatus, Snapshot
from .main import (
    Exporter,
    ExporterSettings,
    Probe,
    default_stale_after,
    metrics_page,
    parse_listen_address,
    serve,
    start_metrics_server,
)

__all__ = [
    "DEFAULT_DEMAND_REASONS",
    "CollectorOptions",
    "ErrorKind",
    "Exporter",
    "ExporterSettings",
    "JobFeed",
    "JobPoll",
    "Operation",
    "PollerStatus",
    "Probe",
    "SlurmCollector",
    "SlurmReader",
    "Snapshot",
    "SnapshotPoller",
    "default_stale_after",
    "health_families",
    "metrics_page",
    "parse_listen_address",
    "serve",
    "snapshot_families",
    "start_metrics_server",
]

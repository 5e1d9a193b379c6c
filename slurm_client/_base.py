"""What every adapter shares: paths, the read-only requests, capability detection, submit replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from ._errors import (
    JOB_HELD,
    TARGET_JOB,
    TARGET_NODE,
    TARGET_PARTITION,
    MalformedResponse,
    UnsupportedOperation,
)
from ._models import Capabilities, Diag, JobSpec, JobState, SubmitResult
from ._placeholder import placeholder_script
from ._wire import WireRequest, error_entries, job_state, number, records, text, warning_texts

Body = Mapping[str, Any]

# Diag fields: model name → wire name (identical in every version so far).
_DIAG_FIELDS = {
    "server_thread_count": "server_thread_count",
    "agent_queue_size": "agent_queue_size",
    "jobs_submitted": "jobs_submitted",
    "jobs_started": "jobs_started",
    "jobs_completed": "jobs_completed",
    "jobs_canceled": "jobs_canceled",
    "jobs_failed": "jobs_failed",
    "jobs_pending": "jobs_pending",
    "jobs_running": "jobs_running",
    "schedule_cycle_last_us": "schedule_cycle_last",
    "schedule_cycle_mean_us": "schedule_cycle_mean",
    "bf_cycle_last_us": "bf_cycle_last",
    "bf_cycle_mean_us": "bf_cycle_mean",
    "bf_backfilled_jobs": "bf_backfilled_jobs",
    "bf_last_depth": "bf_last_depth",
}


def version_key(version: str) -> tuple[int, ...]:
    """ "v0.0.42" → (0, 0, 42), for ordering."""
    return tuple(int(part) for part in version.lstrip("v").split("."))


class BaseAdapter:
    """Shared behaviour; subclasses set the class attributes and the version-specific shapes."""

    version: ClassVar[str] = ""
    # v0.0.38 names collections without a trailing slash; v0.0.40+ with one.
    collection_suffix: ClassVar[str] = "/"
    supports_external_job: ClassVar[bool] = False
    supports_batch_signal: ClassVar[bool] = False
    supports_admin_comment: ClassVar[bool] = False
    supports_job_states: ClassVar[bool] = False
    default_node_update: ClassVar[bool] = False
    default_allocate: ClassVar[bool] = False

    def __init__(self, version: str | None = None) -> None:
        # One class may serve several versions with the same shapes (v0.0.37/v0.0.38).
        self._version = version or self.version

    @property
    def name(self) -> str:
        return self._version

    @property
    def prefix(self) -> str:
        return f"/slurm/{self._version}"

    def _collection(self, name: str) -> str:
        return f"{self.prefix}/{name}{self.collection_suffix}"

    def _item(self, kind: str, ident: object) -> str:
        return f"{self.prefix}/{kind}/{quote(str(ident), safe='')}"

    # --- capabilities -------------------------------------------------------------------------

    def _capabilities(self, *, node_update: bool, allocate: bool) -> Capabilities:
        return Capabilities(
            api_version=self._version,
            supports_external_job=self.supports_external_job,
            supports_node_update=node_update,
            supports_allocate=allocate,
            supports_batch_signal=self.supports_batch_signal,
            supports_admin_comment=self.supports_admin_comment,
            supports_job_states=self.supports_job_states,
        )

    def default_capabilities(self) -> Capabilities:
        return self._capabilities(node_update=self.default_node_update, allocate=self.default_allocate)

    def capabilities_from_paths(self, paths: Mapping[str, Any]) -> Capabilities:
        """Capabilities read from the server's own OpenAPI `paths` (what it really serves)."""

        def methods(path: str) -> set[str]:
            for candidate in (path, path.rstrip("/"), path.rstrip("/") + "/"):
                entry = paths.get(candidate)
                if isinstance(entry, Mapping):
                    return {str(key).lower() for key in entry}
            return set()

        return self._capabilities(
            node_update="post" in methods(f"{self.prefix}/node/{{node_name}}"),
            allocate="post" in methods(f"{self.prefix}/job/allocate"),
        )

    # --- read-only requests shared by all versions ----------------------------------------------

    def ping(self) -> WireRequest:
        return WireRequest("GET", self._collection("ping"))

    def diag(self) -> WireRequest:
        return WireRequest("GET", self._collection("diag"))

    def parse_diag(self, body: Body) -> Diag:
        stats = body.get("statistics")
        if not isinstance(stats, Mapping):
            raise MalformedResponse(f"GET {self._collection('diag')}: no 'statistics' object")
        return Diag(**{model: number(stats.get(wire)) for model, wire in _DIAG_FIELDS.items()})

    def list_jobs(self, update_time: int | None) -> WireRequest:
        params = (("update_time", str(update_time)),) if update_time is not None else ()
        return WireRequest("GET", self._collection("jobs"), params=params)

    def job_states(self, job_ids: tuple[int, ...]) -> WireRequest:
        # One `job_id` parameter per job: the CSV value the OpenAPI text describes is refused (24.11: 400,
        # 26.05: 422).
        return WireRequest(
            "GET", self._collection("jobs/state"), params=tuple(("job_id", str(i)) for i in job_ids)
        )

    def parse_job_states(self, body: Mapping[str, Any], what: str) -> dict[int, JobState]:
        states: dict[int, JobState] = {}
        for entry in records(body, "jobs", what):
            states[int(entry["job_id"])] = job_state(entry.get("state"))[0]
        return states

    def get_job(self, job_id: int) -> WireRequest:
        return WireRequest("GET", self._item("job", job_id), target=TARGET_JOB, lookup=True)

    def list_nodes(self) -> WireRequest:
        return WireRequest("GET", self._collection("nodes"))

    def get_node(self, name: str) -> WireRequest:
        return WireRequest("GET", self._item("node", name), target=TARGET_NODE, lookup=True)

    def list_partitions(self) -> WireRequest:
        return WireRequest("GET", self._collection("partitions"))

    def get_partition(self, name: str) -> WireRequest:
        return WireRequest("GET", self._item("partition", name), target=TARGET_PARTITION, lookup=True)

    # --- submit ---------------------------------------------------------------------------------

    def _unsupported(self, what: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{what} is not available in Slurm REST API {self._version}")

    def batch_script(self, spec: JobSpec) -> str | None:
        """The script to send: the spec's, else the placeholder where EXTERNAL_JOB is missing."""
        if spec.script is not None:
            return spec.script
        return None if self.supports_external_job else placeholder_script()

    def batch_output(self, spec: JobSpec) -> str | None:
        """Where the batch script's output goes: the spec's; /dev/null for the client's placeholder."""
        if spec.script is not None:
            return spec.standard_output
        return None if self.supports_external_job else "/dev/null"

    def submit_request(self, path: str, body: dict[str, Any], *, hold: bool) -> WireRequest:
        return WireRequest(
            "POST",
            path,
            body=body,
            idempotent=False,
            benign_errors=frozenset({JOB_HELD}) if hold else frozenset(),
        )

    def parse_submit(self, body: Body, what: str) -> SubmitResult:
        job_id = number(body.get("job_id"))
        if job_id is None or job_id <= 0:
            raise MalformedResponse(f"{what}: the answer has no job_id")
        notes: list[str] = []
        message = text(body.get("job_submit_user_msg") or body.get("job_submit_user_message"))
        if message:
            notes.append(message)
        notes.extend(warning_texts(body))
        notes.extend(str(entry) for entry in error_entries(body) if entry.number == JOB_HELD)
        return SubmitResult(job_id=job_id, warnings=tuple(notes))

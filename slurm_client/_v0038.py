"""Slurm 22.05's REST API v0.0.38 (the same shapes serve v0.0.37 and v0.0.36).

Shapes that differ from v0.0.40+: collections have no trailing slash; `job_state` is one string
(which may name a flag such as COMPLETING instead of the base state); times and limits are plain
numbers (`time_limit` null when unlimited, partition `max_time_limit` -1); `exit_code` is the raw
wait status; `environment` is an object; submit/update options are sbatch option names
(`nodes`, `exclude_nodes`, `gres`, `exclusive: "exclusive"`). There is no node update, no
allocate, no admin_comment, and a DELETE always signals the whole job (no BATCH_JOB flag).
Unchanged job lists come back as HTTP 304.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import BaseAdapter, Body
from ._errors import TARGET_JOB
from ._hostlist import expand_hostlist
from ._models import (
    Job,
    JobSpec,
    JobUpdate,
    Node,
    NodeUpdate,
    Partition,
    Ping,
)
from ._wire import (
    WireRequest,
    exit_status,
    gres_counts,
    gres_in_use,
    gres_request,
    job_state,
    minutes,
    node_state,
    number,
    reason,
    records,
    string_list,
    text,
    timestamp,
)


def _node_count(min_nodes: int, max_nodes: int | None) -> int | str:
    if max_nodes is None or max_nodes == min_nodes:
        return min_nodes
    return f"{min_nodes}-{max_nodes}"


class V0038Adapter(BaseAdapter):
    version = "v0.0.38"
    collection_suffix = ""

    # --- reading ----------------------------------------------------------------------------------

    def parse_ping(self, body: Body) -> tuple[Ping, ...]:
        return tuple(
            Ping(
                hostname=text(entry.get("hostname")) or "",
                responding=str(entry.get("ping", "")).upper() == "UP",
                mode=text(entry.get("mode")),
            )
            for entry in records(body, "pings", f"GET {self._collection('ping')}")
        )

    def parse_jobs(self, body: Body, what: str) -> list[Job]:
        return [self._job(entry) for entry in records(body, "jobs", what)]

    def unchanged_since(self, body: Body) -> bool:
        return False  # v0.0.38 answers "nothing changed" with HTTP 304

    def server_time(self, body: Body) -> int | None:
        return None  # v0.0.38's job list carries no last_update

    def _job(self, d: Mapping[str, Any]) -> Job:
        state, flags = job_state(d.get("job_state"))
        code, signal = exit_status(d.get("exit_code"))
        return Job(
            job_id=int(d["job_id"]),
            name=text(d.get("name")) or "",
            state=state,
            state_flags=flags,
            state_reason=reason(d.get("state_reason")),
            nodes=tuple(expand_hostlist(text(d.get("nodes")))),
            node_count=number(d.get("node_count")),
            partition=text(d.get("partition")),
            account=text(d.get("account")),
            qos=text(d.get("qos")),
            user_name=text(d.get("user_name")),
            time_limit_minutes=minutes(d.get("time_limit")),
            submit_time=timestamp(d.get("submit_time")),
            start_time=timestamp(d.get("start_time")),
            end_time=timestamp(d.get("end_time")),
            comment=text(d.get("comment")),
            admin_comment=text(d.get("admin_comment")),
            priority=number(d.get("priority")),
            exit_code=code if state.is_finished else None,
            exit_signal=signal if state.is_finished else None,
            batch=d.get("batch_flag") if isinstance(d.get("batch_flag"), bool) else None,
            job_flags=frozenset(string_list(d.get("flags"))),
            state_description=text(d.get("state_description")),
            cpus=number(d.get("cpus")),
            tasks=number(d.get("tasks")),
            working_directory=text(d.get("current_working_directory")),
        )

    def parse_nodes(self, body: Body, what: str) -> list[Node]:
        nodes = []
        for d in records(body, "nodes", what):
            state, flags = node_state(d.get("state"), d.get("state_flags"))
            nodes.append(
                Node(
                    name=str(d.get("name", "")),
                    state=state,
                    state_flags=flags,
                    reason=text(d.get("reason")),
                    cpus_total=number(d.get("cpus")) or 0,
                    cpus_allocated=number(d.get("alloc_cpus")) or 0,
                    memory_total_mb=number(d.get("real_memory")) or 0,
                    memory_allocated_mb=number(d.get("alloc_memory")) or 0,
                    gres=(gres := gres_counts(d.get("gres"))),
                    gres_used=gres_in_use(d.get("gres_used"), gres),
                    partitions=string_list(d.get("partitions")),
                    comment=text(d.get("comment")),
                    features=string_list(d.get("features")),
                )
            )
        return nodes

    def parse_partitions(self, body: Body, what: str) -> list[Partition]:
        return [
            Partition(
                name=str(d.get("name", "")),
                nodes=tuple(expand_hostlist(text(d.get("nodes")))),
                total_nodes=number(d.get("total_nodes")) or 0,
                total_cpus=number(d.get("total_cpus")) or 0,
                state=text(d.get("state")),
                max_time_minutes=minutes(d.get("max_time_limit")),
                default="DEFAULT" in {flag.upper() for flag in string_list(d.get("flags"))},
            )
            for d in records(body, "partitions", what)
        ]

    # --- writing ----------------------------------------------------------------------------------

    def _properties(self, spec: JobSpec) -> dict[str, Any]:
        if spec.admin_comment is not None:
            raise self._unsupported("admin_comment")
        job: dict[str, Any] = {
            "name": spec.name,
            "nodes": _node_count(spec.min_nodes, spec.max_nodes),
            "environment": dict(spec.environment),
            "current_working_directory": spec.working_directory,
        }
        optional: dict[str, Any] = {
            "partition": spec.partition,
            "account": spec.account,
            "qos": spec.qos,
            "time_limit": spec.time_limit_minutes,
            "tasks": spec.tasks,
            "cpus_per_task": spec.cpus_per_task,
            "memory_per_node": spec.memory_per_node_mb,
            "gres": gres_request(spec.gres_per_node, tres_style=False),
            "exclusive": "exclusive" if spec.exclusive else None,
            "constraints": spec.constraints,
            "reservation": spec.reservation,
            "licenses": spec.licenses,
            "wckey": spec.wckey,
            "priority": spec.priority,
            "nice": spec.nice,
            "exclude_nodes": ",".join(spec.excluded_nodes) or None,
            "comment": spec.comment,
            "hold": True if spec.hold else None,
        }
        job.update({key: value for key, value in optional.items() if value is not None})
        return job

    def submit_job(self, spec: JobSpec) -> WireRequest:
        job = self._properties(spec)
        if (output := self.batch_output(spec)) is not None:
            job["standard_output"] = job["standard_error"] = output
        body = {"script": self.batch_script(spec), "job": job}
        return self.submit_request(f"{self.prefix}/job/submit", body, hold=spec.hold)

    def allocate(self, spec: JobSpec, immediate: bool) -> WireRequest:
        raise self._unsupported("job/allocate")

    def update_job(self, job_id: int, update: JobUpdate) -> WireRequest:
        if update.admin_comment is not None:
            raise self._unsupported("admin_comment")
        fields: dict[str, Any] = {
            "hold": update.hold,
            "name": update.name,
            "partition": update.partition,
            "account": update.account,
            "qos": update.qos,
            "time_limit": update.time_limit_minutes,
            "priority": update.priority,
            "nice": update.nice,
            "comment": update.comment,
            "nodes": update.min_nodes,
            "exclude_nodes": ",".join(update.excluded_nodes) if update.excluded_nodes is not None else None,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        return WireRequest("POST", self._item("job", job_id), body=body, target=TARGET_JOB)

    def cancel_job(self, job_id: int, signal: str | None, batch_only: bool) -> WireRequest:
        # v0.0.38 always signals every step of the job (KILL_FULL_JOB); a batch script that traps
        # the signal still decides the outcome.
        params = (("signal", signal),) if signal else ()
        return WireRequest("DELETE", self._item("job", job_id), params=params, target=TARGET_JOB)

    def update_node(self, name: str, update: NodeUpdate) -> WireRequest:
        raise self._unsupported("node update (drain/resume)")

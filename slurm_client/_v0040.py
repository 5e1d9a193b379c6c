"""REST API v0.0.40 (Slurm 23.11/24.05/24.11), the base of every data_parser version after it.

Shapes that differ from v0.0.38: collections end with a slash; `job_state` and node `state` are
lists (base state plus flags); optional numbers are `{set, infinite, number}` structs (times,
limits, priority, memory); `exit_code` is `{status[], return_code, signal{id, name}}`;
`environment` is a list of "K=V"; job options use job_desc_msg names (`minimum_nodes`,
`maximum_nodes`, `tres_per_node`, `excluded_nodes` list, `shared: ["none"]` for exclusive).
Nodes can be updated (POST node/{name}); DELETE takes `flags=BATCH_JOB`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._base import BaseAdapter, Body
from ._errors import TARGET_JOB, TARGET_NODE
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
    no_val,
    node_state,
    number,
    reason,
    records,
    string_list,
    text,
    timestamp,
    warning_texts,
)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class V0040Adapter(BaseAdapter):
    version = "v0.0.40"
    supports_batch_signal = True
    supports_admin_comment = True
    default_node_update = True
    default_allocate = False

    # --- reading ----------------------------------------------------------------------------------

    def parse_ping(self, body: Body) -> tuple[Ping, ...]:
        pings = []
        for entry in records(body, "pings", f"GET {self._collection('ping')}"):
            responding = entry.get("responding")
            if not isinstance(responding, bool):
                responding = str(entry.get("pinged", "")).upper() == "UP"
            mode = text(entry.get("mode"))
            if mode is None and isinstance(entry.get("primary"), bool):
                mode = "primary" if entry["primary"] else "backup"
            pings.append(Ping(hostname=text(entry.get("hostname")) or "", responding=responding, mode=mode))
        return tuple(pings)

    def parse_jobs(self, body: Body, what: str) -> list[Job]:
        return [self._job(entry) for entry in records(body, "jobs", what)]

    def unchanged_since(self, body: Body) -> bool:
        # Nothing changed: HTTP 200, no jobs, a warning "No job changes since update_time[...]" and
        # last_update 0 (24.11 and 26.05 alike). No jobs with a real last_update means no jobs.
        return bool(warning_texts(body)) or number(body.get("last_update")) == 0

    def server_time(self, body: Body) -> int | None:
        # slurmctld's clock when it packed the list (0 on an "unchanged" answer).
        seconds = number(body.get("last_update"))
        return seconds if seconds is not None and seconds > 0 else None

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
            state, flags = node_state(d.get("state"))
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
        partitions = []
        for d in records(body, "partitions", what):
            nodes = _mapping(d.get("nodes"))
            states = string_list(_mapping(d.get("partition")).get("state"))
            flags = {flag.upper() for flag in (*string_list(d.get("flags")), *states)}
            partitions.append(
                Partition(
                    name=str(d.get("name", "")),
                    nodes=tuple(expand_hostlist(text(nodes.get("configured")))),
                    total_nodes=number(nodes.get("total")) or 0,
                    total_cpus=number(_mapping(d.get("cpus")).get("total")) or 0,
                    state=states[0] if states else None,
                    max_time_minutes=minutes(_mapping(d.get("maximums")).get("time")),
                    default="DEFAULT" in flags,
                )
            )
        return partitions

    # --- writing ----------------------------------------------------------------------------------

    def external_job(self, spec: JobSpec) -> bool:
        return spec.script is None and self.supports_external_job

    def _job_desc(self, spec: JobSpec, *, script: str | None, flags: list[str]) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": spec.name,
            "minimum_nodes": spec.min_nodes,
            "maximum_nodes": spec.max_nodes if spec.max_nodes is not None else spec.min_nodes,
        }
        if script is not None:
            # A batch job: the script runs somewhere, so it needs an environment and a directory.
            job["script"] = script
            job["environment"] = [f"{key}={value}" for key, value in spec.environment.items()]
            job["current_working_directory"] = spec.working_directory
        if flags:
            job["flags"] = flags
        optional: dict[str, Any] = {
            "partition": spec.partition,
            "account": spec.account,
            "qos": spec.qos,
            "time_limit": no_val(spec.time_limit_minutes) if spec.time_limit_minutes else None,
            "tasks": spec.tasks,
            "cpus_per_task": spec.cpus_per_task,
            "memory_per_node": no_val(spec.memory_per_node_mb) if spec.memory_per_node_mb else None,
            "tres_per_node": gres_request(spec.gres_per_node, tres_style=True),
            "shared": ["none"] if spec.exclusive else None,
            "constraints": spec.constraints,
            "reservation": spec.reservation,
            "licenses": spec.licenses,
            "wckey": spec.wckey,
            "priority": no_val(spec.priority) if spec.priority is not None else None,
            "nice": spec.nice,
            "excluded_nodes": list(spec.excluded_nodes) or None,
            "comment": spec.comment,
            "admin_comment": spec.admin_comment,
            "hold": True if spec.hold else None,
        }
        job.update({key: value for key, value in optional.items() if value is not None})
        return job

    def submit_job(self, spec: JobSpec) -> WireRequest:
        if self.external_job(spec):
            desc = self._job_desc(spec, script=None, flags=["EXTERNAL_JOB"])
        else:
            desc = self._job_desc(spec, script=self.batch_script(spec), flags=[])
            if (output := self.batch_output(spec)) is not None:
                desc["standard_output"] = desc["standard_error"] = output
        return self.submit_request(f"{self.prefix}/job/submit", {"job": desc}, hold=spec.hold)

    def allocate(self, spec: JobSpec, immediate: bool) -> WireRequest:
        desc = self._job_desc(spec, script=None, flags=[])
        # An allocation runs nothing, but slurmctld still wants somewhere to point it.
        desc["environment"] = [f"{key}={value}" for key, value in spec.environment.items()]
        desc["current_working_directory"] = spec.working_directory
        if immediate:
            desc["immediate"] = True
        return self.submit_request(f"{self.prefix}/job/allocate", {"job": desc}, hold=spec.hold)

    def update_job(self, job_id: int, update: JobUpdate) -> WireRequest:
        fields: dict[str, Any] = {
            "hold": update.hold,
            "name": update.name,
            "partition": update.partition,
            "account": update.account,
            "qos": update.qos,
            "time_limit": no_val(update.time_limit_minutes)
            if update.time_limit_minutes is not None
            else None,
            "priority": no_val(update.priority) if update.priority is not None else None,
            "nice": update.nice,
            "comment": update.comment,
            "admin_comment": update.admin_comment,
            "minimum_nodes": update.min_nodes,
            "excluded_nodes": list(update.excluded_nodes) if update.excluded_nodes is not None else None,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        return WireRequest("POST", self._item("job", job_id), body=body, target=TARGET_JOB)

    def cancel_job(self, job_id: int, signal: str | None, batch_only: bool) -> WireRequest:
        params: list[tuple[str, str]] = []
        if signal:
            params.append(("signal", signal))
        if batch_only:
            params.append(("flags", "BATCH_JOB"))
        return WireRequest("DELETE", self._item("job", job_id), params=tuple(params), target=TARGET_JOB)

    def update_node(self, name: str, update: NodeUpdate) -> WireRequest:
        body: dict[str, Any] = {}
        if update.state is not None:
            body["state"] = [update.state.upper()]
        if update.reason is not None:
            body["reason"] = update.reason
        if update.comment is not None:
            body["comment"] = update.comment
        return WireRequest("POST", self._item("node", name), body=body, target=TARGET_NODE)

"""Per-version adapters, without I/O: the requests they build and how they read each version's JSON.

The v0.0.38 fixtures were recorded from the testbed's Slurm 22.05.8; the v0.0.42/v0.0.45 ones
follow the OpenAPI shapes of 24.11 and 26.05 (lists for states, {set, infinite, number} structs).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from slurm_client import (
    JobSpec,
    JobState,
    JobUpdate,
    NodeState,
    NodeUpdate,
    UnsupportedOperation,
    placeholder_script,
)
from slurm_client._versions import (
    SUPPORTED_VERSIONS,
    adapter_for,
    choose_version,
    normalize_version,
    offered_versions,
    spec_paths,
)
from slurm_client._wire import exit_status, gres_counts, job_state, node_state, number, timestamp

FIXTURES = Path(__file__).parent / "slurm_fixtures"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


FULL_SPEC = JobSpec(
    name="pod-x",
    partition="slurm-bridge",
    account="acct",
    qos="normal",
    time_limit_minutes=30,
    min_nodes=2,
    max_nodes=3,
    tasks=4,
    cpus_per_task=2,
    memory_per_node_mb=1024,
    gres_per_node={"gpu": 2},
    exclusive=True,
    constraints="fast",
    reservation="resv",
    licenses="lic:1",
    wckey="wk",
    priority=100,
    nice=5,
    excluded_nodes=["slurm-bridge-3"],
    comment="bridge",
    hold=True,
    environment={"PATH": "/bin", "A": "1"},
    working_directory="/work",
    script="#!/bin/sh\ntrue\n",
)


# --- versions and discovery ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        pytest.param("v0.0.42", "v0.0.42", id="canonical"),
        pytest.param("0.0.38", "v0.0.38", id="no-v"),
        pytest.param("v0045", "v0.0.45", id="compact"),
        pytest.param(" V0.0.41 ", "v0.0.41", id="spaces-case"),
    ],
)
def test_normalize_version(raw: str, normal: str) -> None:
    assert normalize_version(raw) == normal


def test_normalize_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a Slurm REST API version"):
        normalize_version("latest")


@pytest.mark.parametrize(
    ("spec_file", "chosen", "node_update", "allocate", "external"),
    [
        pytest.param("v0038_openapi_paths.json", "v0.0.38", False, False, False, id="slurm-22.05"),
        pytest.param("v0042_openapi_paths.json", "v0.0.42", True, True, False, id="slurm-24.11"),
        pytest.param("v0045_openapi_paths.json", "v0.0.45", True, True, True, id="slurm-26.05"),
    ],
)
def test_discovery_from_paths(
    spec_file: str, chosen: str, node_update: bool, allocate: bool, external: bool
) -> None:
    paths = spec_paths(fixture(spec_file))
    version = choose_version(offered_versions(paths))
    assert version == chosen
    capabilities = adapter_for(chosen).capabilities_from_paths(paths)
    assert capabilities.api_version == chosen
    assert capabilities.supports_node_update is node_update
    assert capabilities.supports_allocate is allocate
    assert capabilities.supports_external_job is external


def test_v0040_without_allocate_path() -> None:
    paths = spec_paths(fixture("v0042_openapi_paths.json"))
    capabilities = adapter_for("v0.0.40").capabilities_from_paths(paths)
    assert capabilities.supports_allocate is False
    assert capabilities.supports_node_update is True


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        pytest.param({"v0.0.39", "v0.0.38"}, "v0.0.38", id="23.02-falls-back"),
        pytest.param({"v0.0.46", "v0.0.45"}, "v0.0.45", id="future-version-ignored"),
        pytest.param({"v0.0.35"}, None, id="nothing-usable"),
    ],
)
def test_choose_version(offered: set[str], chosen: str | None) -> None:
    assert choose_version(offered) == chosen


def test_supported_versions_are_ordered() -> None:
    assert SUPPORTED_VERSIONS[0] == "v0.0.36"
    assert SUPPORTED_VERSIONS[-1] == "v0.0.45"


# --- building requests --------------------------------------------------------------------------


def test_v0038_submit_body() -> None:
    request = adapter_for("v0.0.38").submit_job(FULL_SPEC)
    assert (request.method, request.path) == ("POST", "/slurm/v0.0.38/job/submit")
    assert request.idempotent is False
    assert request.benign_errors == frozenset({2042})
    assert request.body == {
        "script": "#!/bin/sh\ntrue\n",
        "job": {
            "name": "pod-x",
            "nodes": "2-3",
            "environment": {"PATH": "/bin", "A": "1"},
            "current_working_directory": "/work",
            "partition": "slurm-bridge",
            "account": "acct",
            "qos": "normal",
            "time_limit": 30,
            "tasks": 4,
            "cpus_per_task": 2,
            "memory_per_node": 1024,
            "gres": "gpu:2",
            "exclusive": "exclusive",
            "constraints": "fast",
            "reservation": "resv",
            "licenses": "lic:1",
            "wckey": "wk",
            "priority": 100,
            "nice": 5,
            "exclude_nodes": "slurm-bridge-3",
            "comment": "bridge",
            "hold": True,
        },
    }


@pytest.mark.parametrize("version", ["v0.0.41", "v0.0.42", "v0.0.45"])
def test_data_parser_submit_body(version: str) -> None:
    request = adapter_for(version).submit_job(FULL_SPEC)
    assert request.path == f"/slurm/{version}/job/submit"
    assert request.body == {
        "job": {
            "name": "pod-x",
            "minimum_nodes": 2,
            "maximum_nodes": 3,
            "script": "#!/bin/sh\ntrue\n",
            "environment": ["PATH=/bin", "A=1"],
            "current_working_directory": "/work",
            "partition": "slurm-bridge",
            "account": "acct",
            "qos": "normal",
            "time_limit": {"set": True, "infinite": False, "number": 30},
            "tasks": 4,
            "cpus_per_task": 2,
            "memory_per_node": {"set": True, "infinite": False, "number": 1024},
            "tres_per_node": "gres/gpu:2",
            "shared": ["none"],
            "constraints": "fast",
            "reservation": "resv",
            "licenses": "lic:1",
            "wckey": "wk",
            "priority": {"set": True, "infinite": False, "number": 100},
            "nice": 5,
            "excluded_nodes": ["slurm-bridge-3"],
            "comment": "bridge",
            "hold": True,
        }
    }


@pytest.mark.parametrize(
    ("version", "external"),
    [
        pytest.param("v0.0.38", False, id="v0.0.38-placeholder"),
        pytest.param("v0.0.40", False, id="v0.0.40-placeholder"),
        pytest.param("v0.0.42", False, id="v0.0.42-placeholder"),
        pytest.param("v0.0.43", True, id="v0.0.43-external"),
        pytest.param("v0.0.45", True, id="v0.0.45-external"),
    ],
)
def test_scriptless_spec(version: str, external: bool) -> None:
    spec = JobSpec(name="holder", partition="slurm-bridge", min_nodes=2)
    body = adapter_for(version).submit_job(spec).body
    assert body is not None
    if version == "v0.0.38":
        assert body["script"] == placeholder_script()
        return
    job = body["job"]
    if external:
        assert job == {
            "name": "holder",
            "minimum_nodes": 2,
            "maximum_nodes": 2,
            "flags": ["EXTERNAL_JOB"],
            "partition": "slurm-bridge",
        }
    else:
        assert job["script"] == placeholder_script()
        assert "flags" not in job


def test_placeholder_script_traps_signals() -> None:
    script = placeholder_script(120)
    assert script.startswith("#!/bin/sh\n")
    assert "trap 'finish 0' USR1" in script
    assert "trap failed USR2" in script
    assert "sleep 120 &" in script
    assert 'wait "$child"' in script


def test_v0038_refuses_admin_comment() -> None:
    adapter = adapter_for("v0.0.38")
    with pytest.raises(UnsupportedOperation):
        adapter.submit_job(JobSpec(name="x", admin_comment="marker"))
    with pytest.raises(UnsupportedOperation):
        adapter.update_job(1, JobUpdate(admin_comment="marker"))


@pytest.mark.parametrize(
    ("version", "update", "body"),
    [
        pytest.param("v0.0.38", JobUpdate(hold=True), {"hold": True}, id="v0.0.38-hold"),
        pytest.param("v0.0.38", JobUpdate(hold=False), {"hold": False}, id="v0.0.38-release"),
        pytest.param(
            "v0.0.38",
            JobUpdate(time_limit_minutes=10, comment="c", excluded_nodes=["a", "b"], min_nodes=2),
            {"time_limit": 10, "comment": "c", "exclude_nodes": "a,b", "nodes": 2},
            id="v0.0.38-fields",
        ),
        pytest.param("v0.0.42", JobUpdate(hold=False), {"hold": False}, id="v0.0.42-release"),
        pytest.param(
            "v0.0.42",
            JobUpdate(time_limit_minutes=10, priority=7, admin_comment="m", excluded_nodes=["a"]),
            {
                "time_limit": {"set": True, "infinite": False, "number": 10},
                "priority": {"set": True, "infinite": False, "number": 7},
                "admin_comment": "m",
                "excluded_nodes": ["a"],
            },
            id="v0.0.42-fields",
        ),
    ],
)
def test_update_job_body(version: str, update: JobUpdate, body: dict[str, Any]) -> None:
    request = adapter_for(version).update_job(42, update)
    assert (request.method, request.path, request.body) == ("POST", f"/slurm/{version}/job/42", body)
    assert request.idempotent


@pytest.mark.parametrize(
    ("version", "signal", "batch_only", "params"),
    [
        pytest.param("v0.0.38", None, False, (), id="v0.0.38-cancel"),
        pytest.param("v0.0.38", "USR1", True, (("signal", "USR1"),), id="v0.0.38-signal-no-flags"),
        pytest.param("v0.0.45", None, False, (), id="v0.0.45-cancel"),
        pytest.param(
            "v0.0.45", "USR1", True, (("signal", "USR1"), ("flags", "BATCH_JOB")), id="v0.0.45-batch-signal"
        ),
    ],
)
def test_cancel_request(version: str, signal: str | None, batch_only: bool, params: tuple[Any, ...]) -> None:
    request = adapter_for(version).cancel_job(7, signal, batch_only)
    assert (request.method, request.path, request.params) == ("DELETE", f"/slurm/{version}/job/7", params)


@pytest.mark.parametrize(
    ("update", "body"),
    [
        pytest.param(
            NodeUpdate(state="drain", reason="bridge: cordon"),
            {"state": ["DRAIN"], "reason": "bridge: cordon"},
            id="drain",
        ),
        pytest.param(NodeUpdate(state="RESUME"), {"state": ["RESUME"]}, id="resume"),
        pytest.param(NodeUpdate(comment="hello"), {"comment": "hello"}, id="comment"),
    ],
)
def test_update_node_body(update: NodeUpdate, body: dict[str, Any]) -> None:
    request = adapter_for("v0.0.42").update_node("slurm-bridge-1", update)
    assert (request.method, request.path, request.body) == (
        "POST",
        "/slurm/v0.0.42/node/slurm-bridge-1",
        body,
    )


def test_v0038_has_no_node_update_nor_allocate() -> None:
    adapter = adapter_for("v0.0.38")
    with pytest.raises(UnsupportedOperation):
        adapter.update_node("n", NodeUpdate(state="DRAIN", reason="r"))
    with pytest.raises(UnsupportedOperation):
        adapter.allocate(JobSpec(name="x"), True)


def test_allocate_body() -> None:
    request = adapter_for("v0.0.42").allocate(JobSpec(name="alloc", partition="p"), True)
    assert request.path == "/slurm/v0.0.42/job/allocate"
    assert request.idempotent is False
    assert request.body is not None
    assert request.body["job"]["immediate"] is True
    assert "script" not in request.body["job"]


@pytest.mark.parametrize(
    ("version", "path"),
    [
        pytest.param("v0.0.38", "/slurm/v0.0.38/jobs", id="v0.0.38-no-slash"),
        pytest.param("v0.0.42", "/slurm/v0.0.42/jobs/", id="v0.0.42-slash"),
    ],
)
def test_collection_paths(version: str, path: str) -> None:
    request = adapter_for(version).list_jobs(1795441000)
    assert (request.path, request.params) == (path, (("update_time", "1795441000"),))


def test_names_are_quoted_in_paths() -> None:
    assert adapter_for("v0.0.42").get_node("a/b c").path == "/slurm/v0.0.42/node/a%2Fb%20c"


# --- reading replies ------------------------------------------------------------------------------


def test_v0038_jobs_recorded() -> None:
    jobs = adapter_for("v0.0.38").parse_jobs(fixture("v0038_jobs.json"), "GET jobs")
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.job_id, job.name, job.state) == (1, "smoke", JobState.COMPLETED)
    assert job.nodes == ("slurm-bridge-0", "slurm-bridge-1")
    assert job.node_count == 2
    assert job.partition == "slurm-bridge"
    assert job.state_reason is None
    assert job.time_limit_minutes is None
    assert job.exit_code == 0
    assert job.exit_signal is None
    assert job.start_time == datetime.fromtimestamp(1795441013, UTC)
    assert job.batch is True
    assert job.user_name == "slurm"


def _v0038_job(**changes: Any) -> dict[str, Any]:
    body = fixture("v0038_jobs.json")
    body["jobs"][0].update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "state", "flags", "exit_code", "exit_signal"),
    [
        pytest.param(
            {"job_state": "RUNNING", "exit_code": 0}, JobState.RUNNING, set(), None, None, id="running"
        ),
        pytest.param(
            {"job_state": "FAILED", "exit_code": 3 << 8}, JobState.FAILED, set(), 3, None, id="failed-3"
        ),
        pytest.param(
            {"job_state": "CANCELLED", "exit_code": 15}, JobState.CANCELLED, set(), 0, 15, id="sigterm"
        ),
        pytest.param(
            {"job_state": "COMPLETING"},
            JobState.UNKNOWN,
            {"COMPLETING"},
            None,
            None,
            id="completing-hides-base",
        ),
        pytest.param(
            {"job_state": "CONFIGURING"}, JobState.RUNNING, {"CONFIGURING"}, None, None, id="configuring"
        ),
        pytest.param({"job_state": "REQUEUED"}, JobState.PENDING, {"REQUEUED"}, None, None, id="requeued"),
    ],
)
def test_v0038_job_states(
    changes: dict[str, Any], state: JobState, flags: set[str], exit_code: int | None, exit_signal: int | None
) -> None:
    job = adapter_for("v0.0.38").parse_jobs(_v0038_job(**changes), "GET jobs")[0]
    assert job.state is state
    assert job.state_flags == flags
    assert (job.exit_code, job.exit_signal) == (exit_code, exit_signal)


def test_v0038_nodes_recorded() -> None:
    nodes = adapter_for("v0.0.38").parse_nodes(fixture("v0038_nodes.json"), "GET nodes")
    assert [n.name for n in nodes] == [f"slurm-bridge-{i}" for i in range(4)]
    gpu = nodes[2]
    assert gpu.state is NodeState.IDLE
    assert not gpu.drained
    assert (gpu.cpus_total, gpu.memory_total_mb) == (4, 8192)
    assert gpu.gres == {"gpu": 2}
    assert gpu.gres_used == {"gpu": 0}
    assert nodes[0].gres == {}
    assert nodes[0].gres_used == {}
    assert gpu.partitions == ("slurm-bridge",)


def test_v0038_drained_node() -> None:
    body = fixture("v0038_nodes.json")
    body["nodes"][1].update({"state": "idle", "state_flags": ["DRAIN"], "reason": "maintenance"})
    node = adapter_for("v0.0.38").parse_nodes(body, "GET nodes")[1]
    assert node.drained
    assert node.reason == "maintenance"


def test_v0038_partitions_recorded() -> None:
    partitions = adapter_for("v0.0.38").parse_partitions(fixture("v0038_partitions.json"), "GET partitions")
    main = partitions[0]
    assert main.name == "slurm-bridge"
    assert main.default
    assert main.nodes == tuple(f"slurm-bridge-{i}" for i in range(4))
    assert (main.total_nodes, main.total_cpus, main.state, main.max_time_minutes) == (4, 16, "UP", None)
    assert not partitions[1].default


def test_v0038_diag_recorded() -> None:
    diag = adapter_for("v0.0.38").parse_diag(fixture("v0038_diag.json"))
    assert (diag.jobs_submitted, diag.jobs_completed, diag.server_thread_count) == (1, 1, 3)
    assert diag.schedule_cycle_mean_us == 384


def test_v0042_jobs() -> None:
    jobs = {j.job_id: j for j in adapter_for("v0.0.42").parse_jobs(fixture("v0042_jobs.json"), "GET jobs/")}
    running = jobs[11]
    assert running.state is JobState.RUNNING
    assert running.state_flags == frozenset()
    assert running.nodes == ("slurm-bridge-0", "slurm-bridge-1")
    assert (running.node_count, running.time_limit_minutes, running.cpus, running.tasks) == (2, 60, 2, 2)
    assert running.exit_code is None
    assert running.comment == "bridge pod default/a"
    assert running.priority == 4294901757
    pending = jobs[12]
    assert pending.state is JobState.PENDING
    assert pending.state_reason == "Resources"
    assert pending.nodes == ()
    assert pending.start_time is None
    assert pending.time_limit_minutes is None
    assert (jobs[13].state, jobs[13].exit_code) == (JobState.COMPLETED, 0)
    assert (jobs[14].state, jobs[14].exit_code, jobs[14].state_reason) == (
        JobState.FAILED,
        3,
        "NonZeroExitCode",
    )
    cancelled = jobs[15]
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.state_flags == {"COMPLETING"}
    assert cancelled.exit_signal == 9
    assert cancelled.nodes == ("gpu-01", "gpu-02")


def test_v0042_unchanged_answer() -> None:
    adapter = adapter_for("v0.0.42")
    assert adapter.unchanged_since(fixture("v0042_jobs_unchanged.json"))
    assert adapter.unchanged_since({"jobs": [], "last_update": {"set": True, "number": 0}, "warnings": []})
    really_empty = {"jobs": [], "last_update": {"set": True, "number": 1795442589}, "warnings": []}
    assert not adapter.unchanged_since(really_empty)


def test_v0042_nodes() -> None:
    nodes = {n.name: n for n in adapter_for("v0.0.42").parse_nodes(fixture("v0042_nodes.json"), "GET nodes/")}
    assert nodes["slurm-bridge-0"].state is NodeState.MIXED
    assert (nodes["slurm-bridge-0"].cpus_allocated, nodes["slurm-bridge-0"].memory_allocated_mb) == (1, 256)
    drained = nodes["slurm-bridge-1"]
    assert drained.state is NodeState.IDLE
    assert drained.drained
    assert (drained.reason, drained.comment) == ("bridge: cordoned", "owned by bridge")
    assert nodes["slurm-bridge-2"].gres == {"gpu": 2}
    assert nodes["slurm-bridge-2"].gres_used == {"gpu": 1}
    down = nodes["slurm-bridge-3"]
    assert down.state is NodeState.DOWN
    assert down.state_flags == {"NOT_RESPONDING"}
    assert down.gres == {"gpu:a100": 2}
    assert down.gres_used == {"gpu:a100": 0}
    assert down.features == ("fast", "ssd")


def test_v0042_partitions() -> None:
    partitions = adapter_for("v0.0.42").parse_partitions(fixture("v0042_partitions.json"), "GET partitions/")
    assert partitions[0].name == "slurm-bridge"
    assert partitions[0].nodes == tuple(f"slurm-bridge-{i}" for i in range(4))
    assert (partitions[0].total_nodes, partitions[0].total_cpus, partitions[0].state) == (4, 16, "UP")
    assert partitions[0].max_time_minutes is None
    assert partitions[1].max_time_minutes == 120


def test_v0042_ping_and_diag() -> None:
    adapter = adapter_for("v0.0.42")
    ping = adapter.parse_ping(fixture("v0042_ping.json"))[0]
    assert (ping.hostname, ping.responding, ping.mode) == ("vm", True, "primary")
    diag = adapter.parse_diag(fixture("v0042_diag.json"))
    assert (diag.jobs_running, diag.bf_cycle_last_us, diag.bf_last_depth) == (2, 180, 2)


def test_v0045_external_and_held_jobs() -> None:
    jobs = {j.job_id: j for j in adapter_for("v0.0.45").parse_jobs(fixture("v0045_jobs.json"), "GET jobs/")}
    external = jobs[21]
    assert external.state is JobState.RUNNING
    assert external.batch is False
    assert "EXTERNAL_JOB" in external.job_flags
    assert external.nodes == ("slurm-bridge-2", "slurm-bridge-3")
    held = jobs[22]
    assert (held.state, held.state_reason, held.priority) == (JobState.PENDING, "JobHeldUser", 0)


def test_submit_reply_notes() -> None:
    adapter = adapter_for("v0.0.38")
    result = adapter.parse_submit(
        {
            "job_id": 9,
            "step_id": "BATCH",
            "job_submit_user_msg": "",
            "errors": [{"error_code": 2042, "error": "Job is held"}],
        },
        "POST job/submit",
    )
    assert result.job_id == 9
    assert result.warnings == ("[2042] Job is held",)


# --- wire helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(5, 5, id="int"),
        pytest.param("12", 12, id="numeric-string"),
        pytest.param({"set": True, "infinite": False, "number": 7}, 7, id="struct"),
        pytest.param({"set": False, "infinite": False, "number": 0}, None, id="unset"),
        pytest.param({"set": True, "infinite": True, "number": 0}, None, id="infinite"),
        pytest.param(4294967294, None, id="no-val-sentinel"),
        pytest.param(None, None, id="null"),
        pytest.param(True, None, id="bool-is-not-a-number"),
    ],
)
def test_number(value: object, expected: int | None) -> None:
    assert number(value) == expected


def test_timestamp() -> None:
    assert timestamp(0) is None
    assert timestamp({"set": True, "infinite": False, "number": 60}) == datetime(1970, 1, 1, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(["RUNNING"], (JobState.RUNNING, set()), id="list"),
        pytest.param(["COMPLETED", "COMPLETING"], (JobState.COMPLETED, {"COMPLETING"}), id="list-with-flag"),
        pytest.param("PENDING", (JobState.PENDING, set()), id="string"),
        pytest.param("SOMETHING_NEW", (JobState.UNKNOWN, {"SOMETHING_NEW"}), id="unknown"),
        pytest.param(None, (JobState.UNKNOWN, set()), id="missing"),
    ],
)
def test_job_state(value: object, expected: tuple[JobState, set[str]]) -> None:
    state, flags = job_state(value)
    assert (state, set(flags)) == expected


def test_node_state_merges_v0038_flags() -> None:
    assert node_state("mixed", ["DRAIN"]) == (NodeState.MIXED, frozenset({"DRAIN"}))
    assert node_state(["IDLE", "DYNAMIC_NORM", "EXTERNAL"]) == (
        NodeState.IDLE,
        frozenset({"DYNAMIC_NORM", "EXTERNAL"}),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, (0, None), id="v0038-ok"),
        pytest.param(256, (1, None), id="v0038-exit-1"),
        pytest.param(9, (0, 9), id="v0038-killed"),
        pytest.param(
            {"status": ["PENDING"], "return_code": {"set": False, "infinite": False, "number": 0}},
            (None, None),
            id="pending",
        ),
        pytest.param(
            {"status": ["ERROR"], "return_code": {"set": True, "infinite": False, "number": 2}},
            (2, None),
            id="error-2",
        ),
        pytest.param(
            {"status": ["SIGNALED"], "return_code": 0, "signal": {"id": 15, "name": "TERM"}},
            (0, 15),
            id="signaled-plain-numbers",
        ),
    ],
)
def test_exit_status(value: object, expected: tuple[int | None, int | None]) -> None:
    assert exit_status(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("gpu:2", {"gpu": 2}, id="simple"),
        pytest.param("gpu:a100:2(S:0-1),nic:1(IDX:0,2)", {"gpu:a100": 2, "nic": 1}, id="typed-with-index"),
        pytest.param("gres/gpu=4", {"gpu": 4}, id="tres-style"),
        pytest.param("N/A", {}, id="na"),
        pytest.param("", {}, id="empty"),
        pytest.param("gpu", {"gpu": 1}, id="bare-name"),
    ],
)
def test_gres_counts(value: str, expected: dict[str, int]) -> None:
    assert gres_counts(value) == expected


# --- answers recorded from the testbed's 24.11 (v0.0.42) and 26.05 (v0.0.45) -------------------


@pytest.mark.parametrize(("version", "tag"), [("v0.0.42", "v0042"), ("v0.0.45", "v0045")])
def test_recorded_answers(version: str, tag: str) -> None:
    adapter = adapter_for(version)
    jobs = adapter.parse_jobs(fixture(f"{tag}_recorded_jobs.json"), "GET jobs/")
    smoke = jobs[0]
    assert smoke.state is JobState.CANCELLED
    assert (smoke.exit_code, smoke.exit_signal) == (0, 15)
    assert smoke.nodes == ("slurm-bridge-0", "slurm-bridge-1")
    assert smoke.node_count == 2
    assert smoke.time_limit_minutes is None
    nodes = adapter.parse_nodes(fixture(f"{tag}_recorded_nodes.json"), "GET nodes/")
    assert [n.name for n in nodes] == [f"slurm-bridge-{i}" for i in range(4)]
    assert nodes[2].gres == {"gpu": 2}
    assert all(n.cpus_total == 4 and n.memory_total_mb == 8192 for n in nodes)
    partitions = adapter.parse_partitions(fixture(f"{tag}_recorded_partitions.json"), "GET partitions/")
    assert partitions[0].nodes == tuple(f"slurm-bridge-{i}" for i in range(4))
    assert partitions[0].state == "UP"
    ping = adapter.parse_ping(fixture(f"{tag}_recorded_ping.json"))[0]
    assert ping.responding
    assert ping.mode == "primary"
    assert adapter.parse_diag(fixture(f"{tag}_recorded_diag.json")).jobs_submitted == 1


def test_recorded_default_partition_flag() -> None:
    # 26.05 reports flags=["DEFAULT"]; 24.11's v0.0.42 has no such field (default reads False).
    assert adapter_for("v0.0.45").parse_partitions(fixture("v0045_recorded_partitions.json"), "x")[0].default
    assert (
        not adapter_for("v0.0.42").parse_partitions(fixture("v0042_recorded_partitions.json"), "x")[0].default
    )


@pytest.mark.parametrize(
    ("version", "script", "output", "sent"),
    [
        pytest.param("v0.0.38", None, None, "/dev/null", id="v0038-client-placeholder"),
        pytest.param("v0.0.38", "#!/bin/sh\ntrue\n", None, None, id="v0038-own-script-slurm-default"),
        pytest.param(
            "v0.0.38", "#!/bin/sh\ntrue\n", "/dev/null", "/dev/null", id="v0038-own-script-discarded"
        ),
        pytest.param("v0.0.41", None, None, "/dev/null", id="v0041-client-placeholder"),
        pytest.param(
            "v0.0.45", "#!/bin/sh\ntrue\n", "/dev/null", "/dev/null", id="v0045-own-script-discarded"
        ),
        pytest.param("v0.0.45", None, None, None, id="v0045-external-job-has-no-output"),
    ],
)
def test_batch_output_goes_where_the_spec_says(
    version: str, script: str | None, output: str | None, sent: str | None
) -> None:
    """A placeholder prints nothing: its output goes to /dev/null, so a stale slurm-<id>.out owned by
    another user can never kill it at launch (seen on 22.05 after a test ran sbatch as root)."""
    spec = JobSpec(name="p", script=script, standard_output=output)
    body = adapter_for(version).submit_job(spec).body
    assert body is not None
    job = body["job"]
    assert job.get("standard_output") == sent
    assert job.get("standard_error") == sent

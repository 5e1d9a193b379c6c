"""SlurmClient over respx: version discovery, every operation's HTTP, and every fault."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx

from slurm_client import (
    AuthError,
    CancelOutcome,
    InvalidRequest,
    JobNotFound,
    JobSpec,
    JobState,
    JobUpdate,
    MalformedResponse,
    NodeNotFound,
    NodeUpdate,
    PartitionNotFound,
    ResourcesUnavailable,
    RetryPolicy,
    ServerBusy,
    SlurmApi,
    SlurmApiError,
    SlurmClient,
    SlurmTimeout,
    SlurmTransportError,
    StaticTokenAuth,
    UnsupportedOperation,
)
from slurm_client._wire import loads_in_pieces

URL = "http://slurmrestd.test"
TOKEN = jwt.encode(
    {"sun": "slurm", "iat": int(time.time()), "exp": int(time.time()) + 3600}, b"k" * 32, "HS256"
)
FIXTURES = Path(__file__).parent / "slurm_fixtures"
SPEC = JobSpec(name="pod-a", partition="slurm-bridge", script="#!/bin/sh\ntrue\n")


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


async def no_sleep(_: float) -> None:
    return None


def make_client(version: str | None = "v0.0.42", **kwargs: Any) -> SlurmClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=4, deadline=5.0))
    return SlurmClient(
        URL, auth=StaticTokenAuth("slurm", TOKEN), api_version=version, sleep=no_sleep, **kwargs
    )


@pytest.fixture
async def v42() -> AsyncIterator[SlurmClient]:
    async with make_client("v0.0.42") as client:
        yield client


@pytest.fixture
async def v38() -> AsyncIterator[SlurmClient]:
    async with make_client("v0.0.38") as client:
        yield client


def ok(body: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"errors": [], "warnings": [], **(body or {})})


def slurm_error(number: int, text: str, status: int = 500) -> httpx.Response:
    return httpx.Response(
        status, json={"errors": [{"error_number": number, "error": text, "description": "", "source": "x"}]}
    )


# --- discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec_file", "version"),
    [
        pytest.param("v0038_openapi_paths.json", "v0.0.38", id="slurm-22.05"),
        pytest.param("v0042_openapi_paths.json", "v0.0.42", id="slurm-24.11"),
        pytest.param("v0045_openapi_paths.json", "v0.0.45", id="slurm-26.05"),
    ],
)
@respx.mock
async def test_discovery_picks_newest_supported(spec_file: str, version: str) -> None:
    respx.get(f"{URL}/openapi/v3").mock(return_value=httpx.Response(200, json=fixture(spec_file)))
    async with make_client(None) as client:
        assert client.api_version == version
        assert isinstance(client, SlurmApi)


@respx.mock
async def test_discovery_without_usable_version() -> None:
    respx.get(f"{URL}/openapi/v3").mock(
        return_value=httpx.Response(200, json={"paths": {"/slurm/v0.0.35/jobs": {"get": {}}}})
    )
    client = make_client(None)
    with pytest.raises(UnsupportedOperation, match=r"offers v0\.0\.35"):
        await client.__aenter__()
    assert client.closed


@respx.mock
async def test_discovery_falls_back_to_openapi_json() -> None:
    respx.get(f"{URL}/openapi/v3").mock(return_value=httpx.Response(404, text="not found"))
    respx.get(f"{URL}/openapi.json").mock(
        return_value=httpx.Response(200, json=fixture("v0038_openapi_paths.json"))
    )
    async with make_client(None) as client:
        assert client.api_version == "v0.0.38"


@respx.mock
async def test_configured_version_skips_discovery() -> None:
    spec_route = respx.get(f"{URL}/openapi/v3")
    async with make_client("v0.0.41") as client:
        assert client.capabilities.api_version == "v0.0.41"
        assert client.capabilities.supports_allocate
    assert not spec_route.called


async def test_unsupported_configured_version() -> None:
    with pytest.raises(UnsupportedOperation, match=r"v0\.0\.39"):
        async with make_client("v0.0.39"):
            pass


async def test_capabilities_need_discovery() -> None:
    client = make_client("v0.0.42")
    with pytest.raises(RuntimeError):
        _ = client.capabilities
    await client.aclose()
    assert client.closed


# --- reads ----------------------------------------------------------------------------------------


@respx.mock
async def test_headers_and_pooling(v42: SlurmClient) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(
        return_value=httpx.Response(200, json=fixture("v0042_ping.json"))
    )
    for _ in range(3):
        await v42.ping()
    request = route.calls.last.request
    assert request.headers["X-SLURM-USER-NAME"] == "slurm"
    assert request.headers["X-SLURM-USER-TOKEN"] == TOKEN
    assert route.call_count == 3


@respx.mock
async def test_list_jobs_full_then_not_modified_304(v38: SlurmClient) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.38/jobs").mock(
        side_effect=[httpx.Response(200, json=fixture("v0038_jobs.json")), httpx.Response(304)]
    )
    first = await v38.list_jobs()
    assert not first.not_modified
    assert [j.job_id for j in first.jobs] == [1]
    assert first.next_update_time <= datetime.now(UTC)
    second = await v38.list_jobs(update_time=first.next_update_time)
    assert second.not_modified
    assert second.jobs == ()
    assert route.calls.last.request.url.params["update_time"] == str(int(first.next_update_time.timestamp()))


@respx.mock
async def test_list_jobs_unchanged_warning_is_not_modified(v42: SlurmClient) -> None:
    respx.get(f"{URL}/slurm/v0.0.42/jobs/").mock(
        return_value=httpx.Response(200, json=fixture("v0042_jobs_unchanged.json"))
    )
    result = await v42.list_jobs(update_time=1795441170)
    assert result.not_modified


@respx.mock
async def test_list_jobs_really_empty_is_not_not_modified(v42: SlurmClient) -> None:
    respx.get(f"{URL}/slurm/v0.0.42/jobs/").mock(return_value=ok({"jobs": []}))
    result = await v42.list_jobs(update_time=1795441170)
    assert not result.not_modified
    assert result.jobs == ()


async def _longest_stall_while(work: Callable[[], Awaitable[Any]]) -> float:
    """The longest the event loop went without running a 10 ms ticker while `work()` ran."""
    longest = 0.0
    done = False

    async def tick() -> None:
        nonlocal longest
        last = time.monotonic()
        while not done:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest, last = max(longest, now - last), now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    try:
        await work()
    finally:
        done = True
        await ticker
    return longest


@respx.mock
async def test_a_big_job_list_is_read_off_the_event_loop(
    v42: SlurmClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading a few hundred jobs took seconds on a loaded leader and starved its Lease renewals.
    body = fixture("v0042_jobs.json")
    body["jobs"] = [{**body["jobs"][0], "job_id": n} for n in range(1, 301)]
    assert len(json.dumps(body)) > 64 * 1024  # the client reads answers this big in a thread
    respx.get(f"{URL}/slurm/v0.0.42/jobs/").mock(return_value=httpx.Response(200, json=body))
    api = await v42._api()
    read_jobs = api.parse_jobs

    def slow_parse(*args: Any) -> Any:
        time.sleep(0.3)  # stands for a slow read of a big answer
        return read_jobs(*args)

    monkeypatch.setattr(api, "parse_jobs", slow_parse)
    listed: list[int] = []

    async def list_jobs() -> None:
        listed.extend(job.job_id for job in (await v42.list_jobs()).jobs)

    assert await _longest_stall_while(list_jobs) < 0.25  # on the loop: >= 0.3 (margin for a loaded machine)
    assert listed == list(range(1, 301))


@respx.mock
async def test_a_big_answer_is_decoded_without_stopping_the_event_loop(v42: SlurmClient) -> None:
    # json's decoder holds the GIL throughout: in a thread as one call it stops the loop all the same.
    body = fixture("v0042_jobs.json")
    body["jobs"] = [{**body["jobs"][0], "job_id": n, "comment": "x" * 4000} for n in range(1, 3001)]
    raw = json.dumps(body).encode()
    started = time.perf_counter()
    json.loads(raw)
    decoding = time.perf_counter() - started  # what a decode in one piece would stop the loop for
    respx.get(f"{URL}/slurm/v0.0.42/jobs/").mock(return_value=httpx.Response(200, content=raw))
    listed: list[int] = []

    async def list_jobs() -> None:
        listed.extend(job.job_id for job in (await v42.list_jobs()).jobs)

    # (A full garbage collection stops the loop too, whichever thread triggered it: not measured here.)
    gc.disable()
    try:
        stall = await _longest_stall_while(list_jobs)
    finally:
        gc.enable()
    assert stall < max(0.03, decoding / 2)
    assert listed == list(range(1, 3001))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b' \n{ "jobs" : [ ] }\n', id="blanks-everywhere"),
        pytest.param(
            b'{"jobs": [{"job_id": 1, "nodes": ["a", "b"]}, {"job_id": 2}], "meta": {"v": 1}}', id="lists"
        ),
        pytest.param(b'{"a": 1, "a": [2]}', id="repeated-member-last-wins"),
        pytest.param(b'{"jobs": null, "errors": [[], [1.5e3, true, "\\u00e9"]]}', id="nested"),
        pytest.param(b"[1, 2]", id="top-level-list"),
        pytest.param(b'"text"', id="top-level-string"),
        pytest.param('{"name": "caf\u00e9"}'.encode(), id="utf-8"),
        pytest.param('{"name": "x"}'.encode("utf-16"), id="utf-16"),
    ],
)
def test_decoding_in_pieces_reads_what_json_reads(text: bytes) -> None:
    assert loads_in_pieces(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"a": 1,}',
        b'{"a" 1}',
        b'{"a": [1,]}',
        b'{"a": [1 2]}',
        b"{} x",
        b"{1: 2}",
        b'{"a": 1 "b": 2}',
    ],
)
def test_decoding_in_pieces_refuses_what_json_refuses(text: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        json.loads(text)
    with pytest.raises(ValueError, match=r"."):
        loads_in_pieces(text)


async def test_list_jobs_needs_aware_datetime(v42: SlurmClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await v42.list_jobs(update_time=datetime(2026, 1, 1))


@respx.mock
async def test_get_job(v42: SlurmClient) -> None:
    body = fixture("v0042_jobs.json")
    body["jobs"] = [body["jobs"][0]]
    respx.get(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=httpx.Response(200, json=body))
    job = await v42.get_job(11)
    assert job.state is JobState.RUNNING
    assert job.nodes == ("slurm-bridge-0", "slurm-bridge-1")


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(
            httpx.Response(500, json=fixture("v0038_job_not_found.json")), id="recorded-2017-in-500"
        ),
        pytest.param(slurm_error(2017, "Invalid job id specified", status=200), id="2017-in-200"),
        pytest.param(ok({"jobs": []}), id="empty-list-in-200"),
        pytest.param(httpx.Response(404, text="Not Found"), id="http-404"),
    ],
)
@respx.mock
async def test_job_not_found_is_never_success(v38: SlurmClient, response: httpx.Response) -> None:
    respx.get(f"{URL}/slurm/v0.0.38/job/999999").mock(return_value=response)
    with pytest.raises(JobNotFound):
        await v38.get_job(999999)


@pytest.mark.parametrize(
    ("version", "tag", "status"),
    [
        pytest.param("v0.0.42", "v0042", {"job": 404, "node": 200, "partition": 422}, id="slurm-24.11"),
        pytest.param("v0.0.45", "v0045", {"job": 404, "node": 200, "partition": 200}, id="slurm-26.05"),
    ],
)
@respx.mock
async def test_recorded_not_found_shapes(version: str, tag: str, status: dict[str, int]) -> None:
    respx.get(f"{URL}/slurm/{version}/job/999999").mock(
        return_value=httpx.Response(status["job"], json=fixture(f"{tag}_recorded_job_not_found.json"))
    )
    respx.get(f"{URL}/slurm/{version}/node/nope").mock(
        return_value=httpx.Response(status["node"], json=fixture(f"{tag}_recorded_node_not_found.json"))
    )
    respx.get(f"{URL}/slurm/{version}/partition/nope").mock(
        return_value=httpx.Response(
            status["partition"], json=fixture(f"{tag}_recorded_partition_not_found.json")
        )
    )
    async with make_client(version) as client:
        with pytest.raises(JobNotFound):
            await client.get_job(999999)
        with pytest.raises(NodeNotFound):
            await client.get_node("nope")
        with pytest.raises(PartitionNotFound):
            await client.get_partition("nope")


@respx.mock
async def test_unexplained_error_on_update_is_not_not_found(v42: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.42/job/5").mock(
        return_value=httpx.Response(200, json={"errors": [{"error_number": 0, "error": "No error"}]})
    )
    with pytest.raises(SlurmApiError) as caught:
        await v42.update_job(5, JobUpdate(hold=True))
    assert type(caught.value) is SlurmApiError


@respx.mock
async def test_node_and_partition_not_found(v38: SlurmClient) -> None:
    respx.get(f"{URL}/slurm/v0.0.38/node/nope").mock(
        return_value=httpx.Response(500, json=fixture("v0038_node_not_found.json"))
    )
    respx.get(f"{URL}/slurm/v0.0.38/partition/nope").mock(
        return_value=httpx.Response(500, json=fixture("v0038_partition_not_found.json"))
    )
    with pytest.raises(NodeNotFound):
        await v38.get_node("nope")
    with pytest.raises(PartitionNotFound):
        await v38.get_partition("nope")


@respx.mock
async def test_nodes_partitions_diag(v42: SlurmClient) -> None:
    respx.get(f"{URL}/slurm/v0.0.42/nodes/").mock(
        return_value=httpx.Response(200, json=fixture("v0042_nodes.json"))
    )
    respx.get(f"{URL}/slurm/v0.0.42/partitions/").mock(
        return_value=httpx.Response(200, json=fixture("v0042_partitions.json"))
    )
    respx.get(f"{URL}/slurm/v0.0.42/diag/").mock(
        return_value=httpx.Response(200, json=fixture("v0042_diag.json"))
    )
    assert len(await v42.list_nodes()) == 4
    assert [p.name for p in await v42.list_partitions()] == ["slurm-bridge", "nodeset"]
    assert (await v42.diag()).jobs_submitted == 15


# --- faults on idempotent calls: bounded retries --------------------------------------------------


def sequence(*steps: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    remaining = list(steps)

    def answer(request: httpx.Request) -> httpx.Response:
        step = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(step, Exception):
            raise step
        return step

    return answer


PING_OK = httpx.Response(200, json=fixture("v0042_ping.json"))


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(httpx.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
        pytest.param(httpx.ConnectError("connection refused"), id="connect-refused"),
        pytest.param(httpx.RemoteProtocolError("peer closed"), id="protocol-error"),
        pytest.param(httpx.Response(503, text="busy"), id="http-503"),
        pytest.param(httpx.Response(502, text="bad gateway"), id="http-502"),
        pytest.param(httpx.Response(429, text="slow down"), id="http-429"),
        pytest.param(httpx.Response(500, text="oops"), id="bare-500"),
        pytest.param(slurm_error(1800, "Unable to contact slurm controller"), id="slurmctld-unreachable"),
        pytest.param(httpx.Response(200, text="{not json"), id="malformed-json"),
    ],
)
@respx.mock
async def test_get_retries_transient_faults(v42: SlurmClient, first: httpx.Response | Exception) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(side_effect=sequence(first, PING_OK))
    pings = await v42.ping()
    assert pings[0].responding
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        pytest.param(httpx.ReadTimeout("read timed out"), SlurmTimeout, id="timeout"),
        pytest.param(httpx.ConnectError("refused"), SlurmTransportError, id="connect"),
        pytest.param(httpx.Response(503, text="busy"), ServerBusy, id="http-503"),
        pytest.param(httpx.Response(200, text="<html>"), MalformedResponse, id="malformed"),
        pytest.param(httpx.Response(200, json=["not", "an", "object"]), MalformedResponse, id="wrong-shape"),
    ],
)
@respx.mock
async def test_retries_are_bounded(
    v42: SlurmClient, fault: httpx.Response | Exception, raised: type[Exception]
) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(side_effect=sequence(fault))
    with pytest.raises(raised):
        await v42.ping()
    assert route.call_count == 4


@pytest.mark.parametrize(
    ("response", "raised"),
    [
        pytest.param(httpx.Response(401, text="Authentication failure"), AuthError, id="expired-token"),
        pytest.param(
            slurm_error(2002, "Access/permission denied", status=200), AuthError, id="denied-in-200"
        ),
        pytest.param(
            slurm_error(9001, "Unable to parse query", status=400), InvalidRequest, id="bad-request"
        ),
        pytest.param(
            httpx.Response(200, json={"pings": [], "errors": [{"error": "unexplained"}]}),
            SlurmApiError,
            id="unnumbered-error-in-200",
        ),
    ],
)
@respx.mock
async def test_permanent_failures_are_not_retried(
    v42: SlurmClient, response: httpx.Response, raised: type[Exception]
) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(return_value=response)
    with pytest.raises(raised):
        await v42.ping()
    assert route.call_count == 1


@respx.mock
async def test_timeout_is_configured_on_every_request() -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return PING_OK

    respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(side_effect=answer)
    async with make_client("v0.0.42", timeout=2.5) as client:
        await client.ping()
    assert seen == [{"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}]


# --- submit: never blindly re-sent ----------------------------------------------------------------

SUBMITTED = ok({"job_id": 77, "step_id": "batch", "job_submit_user_msg": ""})


@pytest.mark.parametrize(
    ("first", "calls"),
    [
        pytest.param(httpx.ConnectError("refused"), 2, id="connect-refused-resent"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), 2, id="connect-timeout-resent"),
        pytest.param(httpx.Response(429, text="slow down"), 2, id="http-429-resent"),
        pytest.param(
            slurm_error(1800, "Unable to contact slurm controller"), 2, id="ctld-unreachable-resent"
        ),
    ],
)
@respx.mock
async def test_submit_resent_only_when_proven_unsent(
    v42: SlurmClient, first: httpx.Response | Exception, calls: int
) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/submit").mock(side_effect=sequence(first, SUBMITTED))
    result = await v42.submit_job(SPEC)
    assert result.job_id == 77
    assert route.call_count == calls


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        pytest.param(httpx.ReadTimeout("read timed out"), SlurmTimeout, id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("peer closed"), SlurmTransportError, id="connection-dropped"),
        pytest.param(httpx.Response(503, text="busy"), ServerBusy, id="http-503"),
        pytest.param(httpx.Response(500, text="oops"), SlurmApiError, id="bare-500"),
        pytest.param(
            slurm_error(1802, "Unable to receive from slurm controller"), ServerBusy, id="ctld-receive"
        ),
        pytest.param(httpx.Response(200, text="{garbage"), MalformedResponse, id="malformed"),
    ],
)
@respx.mock
async def test_submit_not_resent_after_ambiguous_failure(
    v42: SlurmClient, fault: httpx.Response | Exception, raised: type[Exception]
) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/submit").mock(side_effect=sequence(fault, SUBMITTED))
    with pytest.raises(raised):
        await v42.submit_job(SPEC)
    assert route.call_count == 1


@respx.mock
async def test_held_submit_with_2042_note_succeeds(v38: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.38/job/submit").mock(
        return_value=httpx.Response(
            200,
            json={"job_id": 5, "step_id": "BATCH", "errors": [{"error_code": 2042, "error": "Job is held"}]},
        )
    )
    result = await v38.submit_job(SPEC.model_copy(update={"hold": True}))
    assert result.job_id == 5
    assert result.warnings == ("[2042] Job is held",)


@respx.mock
async def test_2042_on_unheld_submit_is_a_failure(v38: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.38/job/submit").mock(
        return_value=slurm_error(2042, "Job is held", status=200)
    )
    with pytest.raises(InvalidRequest):
        await v38.submit_job(SPEC)


@respx.mock
async def test_submit_rejected_in_200(v42: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.42/job/submit").mock(
        return_value=slurm_error(2063, "Job current working directory missing", status=200)
    )
    with pytest.raises(InvalidRequest) as caught:
        await v42.submit_job(SPEC)
    assert caught.value.error_numbers == (2063,)


@respx.mock
async def test_submit_body_sent(v42: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/submit").mock(return_value=SUBMITTED)
    await v42.submit_job(SPEC)
    sent = json.loads(route.calls.last.request.content)
    assert sent["job"]["script"] == "#!/bin/sh\ntrue\n"
    assert sent["job"]["environment"] == ["PATH=/bin:/usr/bin"]


# --- update, cancel, nodes, allocate ----------------------------------------------------------------


@respx.mock
async def test_update_and_hold_release(v42: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=ok({"job_id": 11, "results": []}))
    await v42.hold_job(11)
    await v42.release_job(11)
    await v42.update_job(11, JobUpdate(comment="hi"))
    assert [json.loads(c.request.content) for c in route.calls] == [
        {"hold": True},
        {"hold": False},
        {"comment": "hi"},
    ]


@respx.mock
async def test_update_failure_in_results(v42: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.42/job/11").mock(
        return_value=ok(
            {"results": [{"job_id": 11, "error_code": 2021, "error": "Job/step already completing"}]}
        )
    )
    with pytest.raises(SlurmApiError) as caught:
        await v42.update_job(11, JobUpdate(hold=True))
    assert caught.value.error_numbers == (2021,)


@respx.mock
async def test_update_is_retried_as_idempotent(v42: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/11").mock(
        side_effect=sequence(httpx.ReadTimeout("slow"), ok({"results": []}))
    )
    await v42.update_job(11, JobUpdate(hold=True))
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        pytest.param(ok(), CancelOutcome.SIGNALLED, id="signalled"),
        pytest.param(
            slurm_error(2021, "Job/step already completing or completed"),
            CancelOutcome.ALREADY_FINISHED,
            id="already-done",
        ),
    ],
)
@respx.mock
async def test_cancel_outcomes(v42: SlurmClient, response: httpx.Response, outcome: CancelOutcome) -> None:
    respx.delete(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=response)
    assert await v42.cancel_job(11) is outcome


def kill_status(code: int, message: str, job_id: int) -> httpx.Response:
    """A DELETE answer of 24.11/26.05 as recorded: HTTP 200, errors [], the failure in status[]."""
    return httpx.Response(
        200,
        json={
            "status": [
                {
                    "error": {"string": message, "code": code, "message": message},
                    "step_id": str(job_id),
                    "job_id": {
                        "set": code != 2017,
                        "infinite": False,
                        "number": job_id if code != 2017 else 0,
                    },
                    "federation": {"sibling": ""},
                }
            ],
            "errors": [],
            "warnings": [],
        },
    )


@pytest.mark.parametrize("version", ["v0.0.42", "v0.0.45"])
@respx.mock
async def test_cancel_status_list_is_read(version: str) -> None:
    respx.delete(f"{URL}/slurm/{version}/job/99999").mock(
        return_value=kill_status(2017, "Invalid job id specified", 99999)
    )
    respx.delete(f"{URL}/slurm/{version}/job/8").mock(
        return_value=kill_status(2021, "Job/step already completing or completed", 8)
    )
    respx.delete(f"{URL}/slurm/{version}/job/9").mock(return_value=ok({"status": []}))
    async with make_client(version) as client:
        with pytest.raises(JobNotFound):
            await client.cancel_job(99999)
        assert await client.cancel_job(8) is CancelOutcome.ALREADY_FINISHED
        assert await client.cancel_job(9) is CancelOutcome.SIGNALLED


@respx.mock
async def test_cancel_unknown_job(v42: SlurmClient) -> None:
    respx.delete(f"{URL}/slurm/v0.0.42/job/11").mock(
        return_value=slurm_error(2017, "Invalid job id specified")
    )
    with pytest.raises(JobNotFound):
        await v42.cancel_job(11)


@pytest.mark.parametrize(
    ("signal", "batch_only", "query"),
    [
        pytest.param("SIGUSR1", True, {"signal": "USR1", "flags": "BATCH_JOB"}, id="batch-usr1"),
        pytest.param(12, False, {"signal": "12"}, id="numeric"),
        pytest.param(None, False, {}, id="plain-cancel"),
    ],
)
@respx.mock
async def test_cancel_signal_query(
    v42: SlurmClient, signal: str | int | None, batch_only: bool, query: dict[str, str]
) -> None:
    route = respx.delete(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=ok())
    await v42.cancel_job(11, signal, batch_only=batch_only)
    assert dict(route.calls.last.request.url.params) == query


@respx.mock
async def test_node_update_v0042(v42: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/node/slurm-bridge-1").mock(return_value=ok())
    await v42.drain_node("slurm-bridge-1", "bridge: cordoned")
    await v42.resume_node("slurm-bridge-1")
    await v42.update_node("slurm-bridge-1", NodeUpdate(comment="c"))
    assert [json.loads(c.request.content) for c in route.calls] == [
        {"state": ["DRAIN"], "reason": "bridge: cordoned"},
        {"state": ["RESUME"]},
        {"comment": "c"},
    ]


@respx.mock
async def test_node_update_unknown_node(v42: SlurmClient) -> None:
    respx.post(f"{URL}/slurm/v0.0.42/node/nope").mock(
        return_value=slurm_error(2018, "Invalid node name specified")
    )
    with pytest.raises(NodeNotFound):
        await v42.drain_node("nope", "r")


@respx.mock
async def test_v0038_node_update_unsupported_without_request(v38: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.38/node/slurm-bridge-1")
    with pytest.raises(UnsupportedOperation):
        await v38.drain_node("slurm-bridge-1", "r")
    with pytest.raises(UnsupportedOperation):
        await v38.allocate(SPEC)
    assert not route.called


@respx.mock
async def test_allocate(v42: SlurmClient) -> None:
    route = respx.post(f"{URL}/slurm/v0.0.42/job/allocate").mock(
        side_effect=sequence(
            slurm_error(2078, "Job can not start immediately", status=200), ok({"job_id": 9})
        )
    )
    with pytest.raises(ResourcesUnavailable):
        await v42.allocate(SPEC)
    assert (await v42.allocate(SPEC)).job_id == 9
    assert route.call_count == 2
    assert route.calls.last.request.extensions["timeout"]["read"] == 60.0


@respx.mock
async def test_closed_after_context() -> None:
    respx.get(f"{URL}/slurm/v0.0.42/ping/").mock(return_value=PING_OK)
    async with make_client("v0.0.42") as client:
        await client.ping()
        assert not client.closed
    assert client.closed


@pytest.mark.parametrize(
    ("variables", "auth_type"),
    [
        pytest.param({"SLURM_JWT_KEY_26_05": "/k", "SLURM_JWT_26_05": TOKEN}, "JwtKeyAuth", id="key-first"),
        pytest.param(
            {"SLURM_JWT_FILE_26_05": "/t", "SLURM_JWT_26_05": TOKEN}, "TokenFileAuth", id="file-next"
        ),
        pytest.param({"SLURM_JWT_26_05": TOKEN}, "StaticTokenAuth", id="static-last"),
    ],
)
async def test_from_env_picks_credential(variables: dict[str, str], auth_type: str) -> None:
    env = {"SLURMRESTD_URL_26_05": "http://127.0.0.1:17250", **variables}
    client = SlurmClient.from_env("26.05", env=env, api_version="v0.0.45")
    try:
        assert type(client._http.auth).__name__ == auth_type
        assert client.base_url == "http://127.0.0.1:17250"
        assert TOKEN not in repr(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="no-url"),
        pytest.param({"SLURMRESTD_URL": "http://127.0.0.1:1"}, id="no-credential"),
    ],
)
def test_from_env_requires_url_and_credential(env: dict[str, str]) -> None:
    with pytest.raises(KeyError, match="SLURM"):
        SlurmClient.from_env(env=env)


def test_client_satisfies_the_protocol_statically() -> None:
    def accepts(api: SlurmApi) -> SlurmApi:
        return api

    client = make_client("v0.0.42")
    assert accepts(client) is client  # mypy checks the structural match here


@pytest.mark.parametrize(
    ("exit_code", "comment", "sent_comment", "query"),
    [
        pytest.param(0, "m", None, {"signal": "USR1", "flags": "BATCH_JOB"}, id="success-usr1-no-update"),
        pytest.param(3, "m", "m exit=3", {"signal": "USR2", "flags": "BATCH_JOB"}, id="exit-3"),
        pytest.param(137, "m exit=3", "m exit=137", {"signal": "USR2", "flags": "BATCH_JOB"}, id="replaces"),
        pytest.param(256, "m", "m exit=1", {"signal": "USR2", "flags": "BATCH_JOB"}, id="wraps-to-1"),
        pytest.param(-2, "m", "m exit=254", {"signal": "USR2", "flags": "BATCH_JOB"}, id="negative"),
    ],
)
@respx.mock
async def test_end_placeholder_writes_the_exit_code_then_signals(
    v42: SlurmClient, exit_code: int, comment: str, sent_comment: str | None, query: dict[str, str]
) -> None:
    update = respx.post(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=ok())
    cancel = respx.delete(f"{URL}/slurm/v0.0.42/job/11").mock(return_value=ok())
    await v42.end_placeholder(11, exit_code, comment=comment)
    if sent_comment is None:
        assert not update.called
    else:
        assert json.loads(update.calls.last.request.content)["comment"] == sent_comment
    assert dict(cancel.calls.last.request.url.params) == query


# --- jobs/state: the state of only the jobs named ------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "answer", "expected"),
    [
        (
            [7, 8],
            [{"job_id": "7", "state": ["RUNNING"]}, {"job_id": "8", "state": ["PENDING"]}],
            {7: JobState.RUNNING, 8: JobState.PENDING},
        ),
        ([7], [{"job_id": 7, "state": ["COMPLETED", "COMPLETING"]}], {7: JobState.COMPLETED}),
        ([9], [], {}),
    ],
    ids=["two-jobs", "flags-dropped", "unknown-job-missing"],
)
@respx.mock
async def test_job_states_asks_with_one_job_id_parameter_per_job(
    v42: SlurmClient, ids: list[int], answer: list[dict[str, Any]], expected: dict[int, JobState]
) -> None:
    route = respx.get(f"{URL}/slurm/v0.0.42/jobs/state/").mock(return_value=ok({"jobs": answer}))
    assert await v42.job_states(ids) == expected
    assert route.calls.last.request.url.params.get_list("job_id") == [str(i) for i in ids]


async def test_job_states_needs_rest_v0042(v38: SlurmClient) -> None:
    assert not v38.capabilities.supports_job_states
    with pytest.raises(UnsupportedOperation):
        await v38.job_states([1])


async def test_job_states_of_no_job_asks_nothing(v42: SlurmClient) -> None:
    assert v42.capabilities.supports_job_states
    assert await v42.job_states([]) == {}

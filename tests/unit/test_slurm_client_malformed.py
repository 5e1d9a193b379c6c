"""Answers a real slurmrestd does not give on demand: a 200 without its list, a null list, and the
`update_time` cursor taken from Slurm's own clock (issue 16)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import respx

from slurm_client import (
    MalformedResponse,
    MissingCollection,
    RetryPolicy,
    SlurmClient,
    StaticTokenAuth,
)

URL = "http://slurmrestd.test"
TOKEN = jwt.encode({"sun": "slurm", "iat": 1, "exp": int(time.time()) + 3600}, b"k" * 32, "HS256")


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(params=["v0.0.38", "v0.0.42", "v0.0.45"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[SlurmClient]:
    version: str = request.param
    async with SlurmClient(
        URL,
        auth=StaticTokenAuth("slurm", TOKEN),
        api_version=version,
        sleep=no_sleep,
        retry=RetryPolicy(attempts=2, deadline=5.0),
    ) as c:
        yield c


def path(client: SlurmClient, collection: str) -> str:
    suffix = "" if client.api_version == "v0.0.38" else "/"
    return f"{URL}/slurm/{client.api_version}/{collection}{suffix}"


BAD_BODIES = [
    pytest.param({"errors": [], "warnings": []}, id="list-missing"),
    pytest.param({"errors": []}, id="list-missing-no-warnings"),
    pytest.param({}, id="empty-object"),
    pytest.param("NULL", id="list-null"),
]


def bad_body(template: object, key: str) -> dict[str, Any]:
    if template == "NULL":
        return {key: None, "errors": [], "warnings": []}
    assert isinstance(template, dict)
    return dict(template)


@pytest.mark.parametrize("template", BAD_BODIES)
@pytest.mark.parametrize("since", [None, 1795441170], ids=["full", "since"])
@respx.mock
async def test_jobs_answer_without_its_list_is_an_error(
    client: SlurmClient, template: object, since: int | None
) -> None:
    respx.get(path(client, "jobs")).mock(return_value=httpx.Response(200, json=bad_body(template, "jobs")))
    with pytest.raises(MissingCollection, match="jobs"):
        await client.list_jobs(update_time=since)


@pytest.mark.parametrize("template", BAD_BODIES)
@respx.mock
async def test_nodes_answer_without_its_list_is_an_error(client: SlurmClient, template: object) -> None:
    respx.get(path(client, "nodes")).mock(return_value=httpx.Response(200, json=bad_body(template, "nodes")))
    with pytest.raises(MissingCollection, match="nodes"):
        await client.list_nodes()


@pytest.mark.parametrize("template", BAD_BODIES)
@respx.mock
async def test_partitions_answer_without_its_list_is_an_error(client: SlurmClient, template: object) -> None:
    respx.get(path(client, "partitions")).mock(
        return_value=httpx.Response(200, json=bad_body(template, "partitions"))
    )
    with pytest.raises(MissingCollection, match="partitions"):
        await client.list_partitions()


def test_missing_collection_is_a_malformed_response() -> None:
    assert issubclass(MissingCollection, MalformedResponse)


@respx.mock
async def test_a_really_empty_list_is_still_empty(client: SlurmClient) -> None:
    respx.get(path(client, "jobs")).mock(
        return_value=httpx.Response(200, json={"jobs": [], "errors": [], "warnings": []})
    )
    answer = await client.list_jobs()
    assert answer.jobs == ()
    assert not answer.not_modified


# --- the update_time cursor -----------------------------------------------------------------------


def _last_update(seconds: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": seconds}


@pytest.mark.parametrize("version", ["v0.0.42", "v0.0.45"])
@respx.mock
async def test_cursor_is_slurms_last_update_not_the_local_clock(version: str) -> None:
    # slurmctld's clock is an hour behind ours: a local-clock cursor would hide every change of that hour.
    slurm_now = int(time.time()) - 3600
    respx.get(f"{URL}/slurm/{version}/jobs/").mock(
        return_value=httpx.Response(
            200, json={"jobs": [], "last_update": _last_update(slurm_now), "errors": [], "warnings": []}
        )
    )
    async with SlurmClient(URL, auth=StaticTokenAuth("slurm", TOKEN), api_version=version) as c:
        answer = await c.list_jobs()
    assert answer.next_update_time == datetime.fromtimestamp(slurm_now, UTC)


@pytest.mark.parametrize("version", ["v0.0.42", "v0.0.45"])
@respx.mock
async def test_unchanged_answer_keeps_the_cursor(version: str) -> None:
    since = int(time.time()) - 3600
    respx.get(f"{URL}/slurm/{version}/jobs/").mock(
        return_value=httpx.Response(
            200,
            json={
                "jobs": [],
                "last_update": _last_update(0),
                "errors": [],
                "warnings": [{"description": "No job changes since update_time[1]", "source": "x"}],
            },
        )
    )
    async with SlurmClient(URL, auth=StaticTokenAuth("slurm", TOKEN), api_version=version) as c:
        answer = await c.list_jobs(update_time=since)
    assert answer.not_modified
    assert answer.next_update_time == datetime.fromtimestamp(since, UTC)


@respx.mock
async def test_304_keeps_the_cursor() -> None:
    since = int(time.time()) - 3600
    respx.get(f"{URL}/slurm/v0.0.38/jobs").mock(return_value=httpx.Response(304))
    async with SlurmClient(URL, auth=StaticTokenAuth("slurm", TOKEN), api_version="v0.0.38") as c:
        answer = await c.list_jobs(update_time=since)
    assert answer.not_modified
    assert answer.next_update_time == datetime.fromtimestamp(since, UTC)


@respx.mock
async def test_without_last_update_the_local_clock_with_a_margin() -> None:
    # REST v0.0.38 (22.05) sends no last_update: the local clock, minus a safety margin.
    respx.get(f"{URL}/slurm/v0.0.38/jobs").mock(
        return_value=httpx.Response(200, json={"jobs": [], "errors": []})
    )
    async with SlurmClient(URL, auth=StaticTokenAuth("slurm", TOKEN), api_version="v0.0.38") as c:
        before = int(time.time())
        answer = await c.list_jobs()
    assert answer.next_update_time.timestamp() <= before - 5

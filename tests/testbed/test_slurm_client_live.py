"""slurm_client against the real testbed clusters (22.05 / 24.11 / 26.05), one run per version.

Each test talks to slurmrestd through the client and checks what Slurm itself says with the
cluster's own CLI (squeue/scontrol/sinfo). Every job a test submits is named `slc-live-*` and
cancelled when the test ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable

import jwt
import pytest

from slurm_client import (
    NO_RETRY,
    AuthError,
    CancelOutcome,
    Job,
    JobNotFound,
    JobSpec,
    JobState,
    JobUpdate,
    JwtKeyAuth,
    NodeNotFound,
    NodeUpdate,
    SlurmApiError,
    SlurmClient,
    StaticTokenAuth,
    TokenFileAuth,
    UnsupportedOperation,
    placeholder_script,
)
from tests.testbed_env import SlurmCluster

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio(loop_scope="session")]

EXPECTED_API = {"22.05": "v0.0.38", "24.11": "v0.0.42", "26.05": "v0.0.45"}
SLEEPER = "#!/bin/sh\nsleep 300\n"


class Jobs:
    """Submits through the client and remembers every job, to cancel them all at the end."""

    def __init__(self, client: SlurmClient, cluster: SlurmCluster) -> None:
        self.client = client
        self.cluster = cluster
        self.ids: list[int] = []

    def spec(self, **fields: object) -> JobSpec:
        base: dict[str, object] = {
            "name": f"slc-live-{uuid.uuid4().hex[:8]}",
            "partition": self.cluster.partition,
            "time_limit_minutes": 5,
        }
        base.update(fields)
        return JobSpec.model_validate(base)

    async def submit(self, **fields: object) -> int:
        result = await self.client.submit_job(self.spec(**fields))
        self.ids.append(result.job_id)
        return result.job_id

    async def wait(self, job_id: int, done: Callable[[Job], bool], within: float = 30.0) -> Job:
        deadline = time.monotonic() + within
        job = await self.client.get_job(job_id)
        while not done(job):
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job.state} ({job.state_reason}) after {within} s")
            await asyncio.sleep(0.2)
            job = await self.client.get_job(job_id)
        return job

    async def cleanup(self) -> None:
        for job_id in self.ids:
            with contextlib.suppress(JobNotFound):
                await self.client.cancel_job(job_id)

    def scontrol_field(self, job_id: int, field: str) -> str:
        out = self.cluster.cli("scontrol", "show", "job", str(job_id))
        return out.split(f"{field}=", 1)[1].split()[0]


@pytest.fixture
async def client(slurm_cluster: SlurmCluster) -> AsyncIterator[SlurmClient]:
    async with SlurmClient(
        slurm_cluster.url, auth=JwtKeyAuth(slurm_cluster.user, slurm_cluster.jwt_key_file)
    ) as slurm:
        yield slurm


@pytest.fixture
async def jobs(client: SlurmClient, slurm_cluster: SlurmCluster) -> AsyncIterator[Jobs]:
    tracker = Jobs(client, slurm_cluster)
    try:
        yield tracker
    finally:
        await tracker.cleanup()


def running(job: Job) -> bool:
    return job.state is JobState.RUNNING


def finished(job: Job) -> bool:
    return job.state.is_finished and "COMPLETING" not in job.state_flags


async def test_discovery_ping_diag_partitions(client: SlurmClient, slurm_cluster: SlurmCluster) -> None:
    capabilities = client.capabilities
    assert capabilities.api_version == EXPECTED_API[slurm_cluster.version]
    assert capabilities.supports_node_update is (slurm_cluster.version != "22.05")
    assert capabilities.supports_allocate is (slurm_cluster.version != "22.05")
    assert capabilities.supports_external_job is (slurm_cluster.version == "26.05")
    pings = await client.ping()
    assert pings
    assert all(p.responding for p in pings)
    diag = await client.diag()
    assert diag.server_thread_count is not None
    partition = await client.get_partition(slurm_cluster.partition)
    assert partition.nodes == slurm_cluster.nodes
    assert partition.total_nodes == len(slurm_cluster.nodes)
    assert partition.state == "UP"
    assert slurm_cluster.partition in {p.name for p in await client.list_partitions()}


async def test_nodes(client: SlurmClient, slurm_cluster: SlurmCluster) -> None:
    nodes = {node.name: node for node in await client.list_nodes()}
    assert set(slurm_cluster.nodes) <= set(nodes)
    for name in slurm_cluster.nodes:
        node = nodes[name]
        assert (node.cpus_total, node.memory_total_mb) == (4, 8192)
        assert slurm_cluster.partition in node.partitions
        assert node.gres.get("gpu", 0) == (2 if name in slurm_cluster.gpu_nodes else 0)
    single = await client.get_node(slurm_cluster.nodes[0])
    assert single.name == slurm_cluster.nodes[0]
    with pytest.raises(NodeNotFound):
        await client.get_node("no-such-node")


async def test_submit_run_get_update_cancel(
    jobs: Jobs, client: SlurmClient, slurm_cluster: SlurmCluster
) -> None:
    job_id = await jobs.submit(min_nodes=2, tasks=2, comment="slurm_client live", script=SLEEPER)
    job = await jobs.wait(job_id, running)
    assert job.node_count == 2
    assert len(job.nodes) == 2
    assert set(job.nodes) <= set(slurm_cluster.nodes)
    assert job.partition == slurm_cluster.partition
    assert job.time_limit_minutes == 5
    assert job.start_time is not None
    assert job.user_name == slurm_cluster.user
    assert job.batch is True
    count, nodelist = slurm_cluster.cli("squeue", "-h", "-j", str(job_id), "-o", "%D %N").split()
    assert int(count) == 2
    assert slurm_cluster.cli("scontrol", "show", "hostnames", nodelist).split() == list(job.nodes)

    # A user may shorten a limit and change the comment (lengthening needs an operator).
    await client.update_job(job_id, JobUpdate(time_limit_minutes=4, comment="changed"))
    job = await client.get_job(job_id)
    assert job.time_limit_minutes == 4
    assert job.comment == "changed"
    assert jobs.scontrol_field(job_id, "TimeLimit") == "00:04:00"

    assert await client.cancel_job(job_id) is CancelOutcome.SIGNALLED
    job = await jobs.wait(job_id, finished)
    assert job.state is JobState.CANCELLED
    assert (
        slurm_cluster.cli("squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T").strip() == "CANCELLED"
    )
    # Cancelling again is harmless and says so (v0.0.38 reports plain success).
    again = await client.cancel_job(job_id)
    expected = CancelOutcome.SIGNALLED if slurm_cluster.version == "22.05" else CancelOutcome.ALREADY_FINISHED
    assert again is expected


async def test_hold_and_release(jobs: Jobs, client: SlurmClient, slurm_cluster: SlurmCluster) -> None:
    job_id = await jobs.submit(hold=True, script=SLEEPER)
    job = await client.get_job(job_id)
    assert job.state is JobState.PENDING
    assert job.state_reason == "JobHeldUser"
    assert slurm_cluster.cli("squeue", "-h", "-j", str(job_id), "-o", "%r").strip() == "JobHeldUser"
    await client.release_job(job_id)
    job = await jobs.wait(job_id, running)
    assert job.nodes
    await client.cancel_job(job_id)


async def test_unknown_job(client: SlurmClient) -> None:
    with pytest.raises(JobNotFound):
        await client.get_job(987654)
    with pytest.raises(JobNotFound):
        await client.cancel_job(987654)


async def test_list_jobs_with_update_time(jobs: Jobs, client: SlurmClient) -> None:
    """Not modified, then changed. The testbed is shared (other suites submit jobs), so "nothing
    changed" is asked about a moment slurmctld cannot have seen changes after: the near future."""
    listing = await client.list_jobs()
    assert not listing.not_modified
    unchanged = await client.list_jobs(update_time=int(time.time()) + 30)
    assert unchanged.not_modified
    assert unchanged.jobs == ()

    job_id = await jobs.submit(hold=True, script=SLEEPER)
    changed = await client.list_jobs(update_time=listing.next_update_time)
    assert not changed.not_modified
    ids = {job.job_id for job in changed.jobs}
    assert job_id in ids
    older = {job.job_id for job in listing.jobs}
    if older:  # the FULL list comes back, not only what changed
        assert older & ids
    # Polling with the cursor it hands back: this job's submit is never missed.
    follow_up = await client.list_jobs(update_time=changed.next_update_time)
    assert follow_up.not_modified or job_id in {job.job_id for job in follow_up.jobs}


@pytest.mark.parametrize(
    ("signal", "state", "exit_code"),
    [
        pytest.param("USR1", JobState.COMPLETED, 0, id="usr1-completed"),
        pytest.param("USR2", JobState.FAILED, 1, id="usr2-failed"),
    ],
)
async def test_placeholder_ends_with_signal(
    jobs: Jobs, client: SlurmClient, signal: str, state: JobState, exit_code: int
) -> None:
    job_id = await jobs.submit(script=placeholder_script())
    await jobs.wait(job_id, running)
    await asyncio.sleep(1.0)  # let the batch shell install its traps
    assert await client.cancel_job(job_id, signal, batch_only=True) is CancelOutcome.SIGNALLED
    job = await jobs.wait(job_id, finished)
    assert job.state is state
    assert job.exit_code == exit_code
    assert jobs.scontrol_field(job_id, "JobState") == state.value
    assert jobs.scontrol_field(job_id, "ExitCode") == f"{exit_code}:0"


async def test_scriptless_job(jobs: Jobs, client: SlurmClient) -> None:
    """script=None: an EXTERNAL_JOB where the API has it, the placeholder batch script elsewhere."""
    job_id = await jobs.submit(min_nodes=2)
    job = await jobs.wait(job_id, running)
    assert len(job.nodes) == 2
    if client.capabilities.supports_external_job:
        assert "EXTERNAL_JOB" in job.job_flags
        assert job.batch is False
        assert jobs.scontrol_field(job_id, "BatchFlag") == "0"
    else:
        assert job.batch is True
    await client.cancel_job(job_id)
    assert (await jobs.wait(job_id, finished)).state is JobState.CANCELLED


async def test_allocate(jobs: Jobs, client: SlurmClient) -> None:
    if not client.capabilities.supports_allocate:
        with pytest.raises(UnsupportedOperation):
            await client.allocate(jobs.spec())
        return
    result = await client.allocate(jobs.spec(), immediate=True)
    jobs.ids.append(result.job_id)
    job = await jobs.wait(result.job_id, running)
    assert job.batch is False
    assert len(job.nodes) == 1


async def test_drain_and_resume(client: SlurmClient, slurm_cluster: SlurmCluster) -> None:
    """Drain with a reason, comment, resume. Node updates are for Slurm operators: the testbed's
    `slurm` user is refused with a clear AuthError (2010), so the change itself is made with a
    token minted for the SlurmUser (root) from the same key."""
    node = slurm_cluster.nodes[1]
    reason = "slurm_client live test"
    if not client.capabilities.supports_node_update:
        with pytest.raises(UnsupportedOperation):
            await client.drain_node(node, reason)
        return
    refusal: AuthError | None = None
    try:
        await client.drain_node(node, reason)
    except AuthError as refused:
        refusal = refused
    async with contextlib.AsyncExitStack() as stack:
        operator = client
        if refusal is not None:
            assert 2010 in refusal.error_numbers
            operator = await stack.enter_async_context(
                SlurmClient(slurm_cluster.url, auth=JwtKeyAuth("root", slurm_cluster.jwt_key_file))
            )
        try:
            await operator.drain_node(node, reason)
            drained = await client.get_node(node)
            assert drained.drained
            assert drained.reason == reason
            assert slurm_cluster.cli("sinfo", "-h", "-n", node, "-o", "%T").strip() in ("drained", "draining")
            await operator.update_node(node, NodeUpdate(comment="slurm_client was here"))
            assert (await client.get_node(node)).comment == "slurm_client was here"
        finally:
            await operator.resume_node(node)
            await operator.update_node(node, NodeUpdate(comment=""))
    resumed = await client.get_node(node)
    assert not resumed.drained
    assert resumed.comment is None


@pytest.mark.parametrize("how", ["static-token", "token-file", "key-minted"])
async def test_every_credential_source(slurm_cluster: SlurmCluster, how: str) -> None:
    auth = {
        "static-token": StaticTokenAuth(slurm_cluster.user, slurm_cluster.token),
        "token-file": TokenFileAuth(slurm_cluster.user, slurm_cluster.token_file),
        "key-minted": JwtKeyAuth(slurm_cluster.user, slurm_cluster.jwt_key_file, lifespan=60),
    }[how]
    async with SlurmClient(slurm_cluster.url, auth=auth) as slurm:
        assert (await slurm.ping())[0].responding


@pytest.mark.parametrize("how", ["garbage", "expired", "wrong-key"])
async def test_bad_token_is_a_clear_auth_error(slurm_cluster: SlurmCluster, how: str) -> None:
    """Malformed and expired tokens are refused before sending; a token signed with another key is
    refused by slurmctld: AuthError (HTTP 511, error 1007) on 24.11/26.05. 22.05 reports that case
    only as "-1 Unspecified error", which the client cannot tell from an unreachable slurmctld: it
    raises a SlurmApiError whose message says so."""
    now = int(time.time())
    key = slurm_cluster.jwt_key_file.read_bytes()
    claims = {"sun": slurm_cluster.user, "iat": now, "exp": now + 600}
    token = {
        "garbage": "not-a-token-at-all",
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, key, "HS256"),
        "wrong-key": jwt.encode(claims, b"x" * 32, "HS256"),
    }[how]
    auth = StaticTokenAuth(slurm_cluster.user, token)
    version = EXPECTED_API[slurm_cluster.version]
    async with SlurmClient(slurm_cluster.url, auth=auth, api_version=version, retry=NO_RETRY) as slurm:
        with pytest.raises(SlurmApiError) as caught:
            await slurm.list_jobs()
    failure = caught.value
    assert token not in str(failure)
    if how == "wrong-key" and slurm_cluster.version == "22.05":
        assert type(failure) is SlurmApiError
        assert "token signed with another key" in str(failure)
    elif how == "wrong-key":
        assert isinstance(failure, AuthError)
        assert failure.status == 511
        assert 1007 in failure.error_numbers
    else:
        assert isinstance(failure, AuthError)
        assert failure.status is None  # refused locally, nothing sent

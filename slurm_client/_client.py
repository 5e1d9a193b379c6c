"""SlurmClient: one async client for every supported slurmrestd.

It owns the HTTP connection pool, the timeouts, the retry policy and the translation of every
failure into the `_errors` tree; what to send and how to read the answer is the adapter's job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from ._api import Adapter
from ._auth import CredentialError, JwtKeyAuth, StaticTokenAuth, TokenFileAuth
from ._errors import (
    AuthError,
    JobAlreadyFinished,
    JobNotFound,
    MalformedResponse,
    MissingCollection,
    NodeNotFound,
    PartitionNotFound,
    SlurmError,
    SlurmTimeout,
    SlurmTransportError,
    UnsupportedOperation,
    error_for_reply,
    is_transient,
    was_not_processed,
)
from ._models import (
    CancelOutcome,
    Capabilities,
    Diag,
    Job,
    JobList,
    JobSpec,
    JobState,
    JobUpdate,
    Node,
    NodeUpdate,
    Partition,
    Ping,
    SubmitResult,
)
from ._placeholder import FAILURE_SIGNAL, SUCCESS_SIGNAL, with_exit_code
from ._versions import (
    SUPPORTED_VERSIONS,
    adapter_for,
    choose_version,
    normalize_version,
    offered_versions,
    spec_paths,
)
from ._wire import JsonDict, WireRequest, error_entries, loads_in_pieces, result_errors, warning_texts

_log = logging.getLogger("slurm_client")

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# job/allocate blocks until the allocation is granted (or refused, with immediate=True).
ALLOCATE_TIMEOUT = 60.0
# Answers at least this big are decoded and read in a worker thread: a job list of a few hundred jobs
# (about 5 KiB each) read on the event loop holds up everything else, Lease renewals included.
OFF_LOOP_BYTES = 64 * 1024
_SPEC_PATHS = ("/openapi/v3", "/openapi.json", "/openapi")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter.

    Idempotent requests (GET, update, cancel) are retried on transient failures; a submit or
    allocate only when the failure proves the request never reached slurmctld.
    """

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.2
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: JsonDict
    size: int = 0  # bytes on the wire


def _epoch(value: datetime | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("update_time must be timezone-aware (UTC)")
        return int(value.timestamp())
    return int(value)


_T = TypeVar("_T")


def _parsed(what: str, parse: Callable[..., _T], *args: Any) -> _T:
    """An adapter's reading of a reply; content it cannot read is a MalformedResponse, never a crash."""
    try:
        return parse(*args)
    except SlurmError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        if len(detail) > 200:
            detail = detail[:200] + "..."
        raise MalformedResponse(
            f"{what}: the answer has content this client cannot read ({detail})"
        ) from None


# How far behind our own clock the update_time cursor is set when Slurm does not say its time.
LOCAL_CURSOR_MARGIN_SECONDS = 5


def _cursor(since: int | None, asked_at: int) -> datetime:
    return datetime.fromtimestamp(since if since is not None else asked_at - LOCAL_CURSOR_MARGIN_SECONDS, UTC)


def _signal_name(signal: str | int | None) -> str | None:
    if signal is None:
        return None
    if isinstance(signal, int):
        if signal < 1:
            raise ValueError(f"bad signal number {signal}")
        return str(signal)
    name = signal.strip().upper().removeprefix("SIG")
    if not name:
        raise ValueError("empty signal name")
    return name


def _describe(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class SlurmClient:
    """Async client for slurmrestd (REST API v0.0.38 … v0.0.45).

    Use it as an async context manager (it discovers the API version on entry and closes its
    connections on exit), or call `discover()` and `aclose()` yourself. Every HTTP request has
    the client's timeout (`timeout`, seconds or an httpx.Timeout; `allocate_timeout` for the
    blocking job/allocate); wrap a call in `asyncio.timeout()` for an overall deadline.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        api_version: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        allocate_timeout: float = ALLOCATE_TIMEOUT,
        max_connections: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        off_loop_bytes: int = OFF_LOOP_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._requested_version = normalize_version(api_version) if api_version else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "slurm-client/0.1"},
        )
        self._sleep = sleep
        self._off_loop_bytes = off_loop_bytes
        self._allocate_timeout = allocate_timeout
        self._adapter: Adapter | None = None
        self._capabilities: Capabilities | None = None
        self._discovery = asyncio.Lock()

    @classmethod
    def from_env(
        cls,
        slurm_version: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> SlurmClient:
        """A client from the testbed-style variables.

        `SLURMRESTD_URL`, the user in `SLURM_USER` (default "slurm") and the first credential
        found of `SLURM_JWT_KEY` (key file: minted tokens), `SLURM_JWT_FILE` (token file) and
        `SLURM_JWT` (static token). With `slurm_version="26.05"` the `_26_05`-suffixed variables
        are used.
        """
        source = os.environ if env is None else env
        suffix = "_" + slurm_version.replace(".", "_") if slurm_version else ""

        def get(name: str) -> str | None:
            value = source.get(name + suffix)
            return value or None

        url = get("SLURMRESTD_URL")
        if url is None:
            raise KeyError(f"SLURMRESTD_URL{suffix} is not set")
        user = get("SLURM_USER") or "slurm"
        auth: httpx.Auth
        if (key := get("SLURM_JWT_KEY")) is not None:
            auth = JwtKeyAuth(user, Path(key))
        elif (token_file := get("SLURM_JWT_FILE")) is not None:
            auth = TokenFileAuth(user, Path(token_file))
        elif (token := get("SLURM_JWT")) is not None:
            auth = StaticTokenAuth(user, token)
        else:
            raise KeyError(f"none of SLURM_JWT_KEY{suffix}, SLURM_JWT_FILE{suffix}, SLURM_JWT{suffix} is set")
        return cls(url, auth=auth, **kwargs)

    def __repr__(self) -> str:
        version = self._adapter.name if self._adapter else self._requested_version or "?"
        return f"SlurmClient({self.base_url!r}, api_version={version!r})"

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.discover()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    # --- version discovery ----------------------------------------------------------------------

    async def discover(self) -> Capabilities:
        """Choose the API version (the configured one, or the newest the server offers that this
        client supports) and learn what it can do. Later calls return the cached answer."""
        async with self._discovery:
            if self._adapter is not None and self._capabilities is not None:
                return self._capabilities
            if self._requested_version is not None:
                try:
                    adapter = adapter_for(self._requested_version)
                except KeyError:
                    raise UnsupportedOperation(
                        f"API {self._requested_version} is not supported by this client "
                        f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
                    ) from None
                capabilities = adapter.default_capabilities()
            else:
                paths = await self._fetch_spec_paths()
                offered = offered_versions(paths)
                version = choose_version(offered)
                if version is None:
                    raise UnsupportedOperation(
                        f"{self.base_url} offers {', '.join(sorted(offered)) or 'no slurmctld API'}; "
                        f"this client supports {', '.join(SUPPORTED_VERSIONS)}"
                    )
                adapter = adapter_for(version)
                capabilities = adapter.capabilities_from_paths(paths)
            self._adapter, self._capabilities = adapter, capabilities
            _log.info("slurmrestd %s: using API %s", self.base_url, adapter.name)
            return capabilities

    async def _fetch_spec_paths(self) -> Mapping[str, Any]:
        last: SlurmError | None = None
        for path in _SPEC_PATHS:
            try:
                reply = await self._execute(WireRequest("GET", path), http_timeout=30.0)
            except UnsupportedOperation as exc:  # 404: try the next well-known place
                last = exc
                continue
            paths = spec_paths(reply.body)
            if paths:
                return paths
            last = MalformedResponse(f"GET {path}: the OpenAPI document has no paths", status=reply.status)
        assert last is not None
        raise last

    @property
    def capabilities(self) -> Capabilities:
        """What the chosen API version can do (after `discover()` or entering the context)."""
        if self._capabilities is None:
            raise RuntimeError("call `await client.discover()` (or use `async with`) first")
        return self._capabilities

    @property
    def api_version(self) -> str:
        return self.capabilities.api_version

    async def _api(self) -> Adapter:
        if self._adapter is None:
            await self.discover()
        assert self._adapter is not None
        return self._adapter

    # --- sending --------------------------------------------------------------------------------

    @staticmethod
    def _may_retry(request: WireRequest, exc: BaseException) -> bool:
        if not isinstance(exc, SlurmError):
            return False
        return is_transient(exc) if request.idempotent else was_not_processed(exc)

    def _retrying(self, request: WireRequest) -> AsyncRetrying:
        policy = self._retry

        def retryable(exc: BaseException) -> bool:
            return self._may_retry(request, exc)

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            failure = outcome.exception() if outcome is not None else None
            _log.warning(
                "%s failed (attempt %d/%d), retrying: %s",
                request.what,
                state.attempt_number,
                policy.attempts,
                failure,
            )

        extra: dict[str, Any] = {"sleep": self._sleep} if self._sleep is not None else {}
        return AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
            ),
            retry=retry_if_exception(retryable),
            reraise=True,
            before_sleep=before_sleep,
            **extra,
        )

    async def _execute(self, request: WireRequest, *, http_timeout: float | None = None) -> _Reply:
        # The first attempt runs outside tenacity: nearly every call succeeds at once, and
        # tenacity's bookkeeping costs about a third of a loopback request.
        try:
            return await self._send(request, http_timeout)
        except SlurmError as exc:
            if self._retry.attempts < 2 or not self._may_retry(request, exc):
                raise
            failed_first: SlurmError | None = exc
        async for attempt in self._retrying(request):
            with attempt:
                if failed_first is not None:  # replay it, so tenacity counts it and backs off
                    replay, failed_first = failed_first, None
                    raise replay
                return await self._send(request, http_timeout)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _send(self, request: WireRequest, http_timeout: float | None) -> _Reply:
        started = time.perf_counter()
        try:
            response = await self._http.request(
                request.method,
                request.path,
                params=request.params or None,
                json=request.body,
                timeout=http_timeout if http_timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SlurmTimeout(f"{request.what}: {_describe(exc)}", sent=False) from exc
        except httpx.TimeoutException as exc:
            raise SlurmTimeout(f"{request.what}: {_describe(exc)}", sent=True) from exc
        except httpx.ConnectError as exc:
            raise SlurmTransportError(f"{request.what}: {_describe(exc)}", sent=False) from exc
        except httpx.TransportError as exc:
            raise SlurmTransportError(f"{request.what}: {_describe(exc)}", sent=True) from exc
        except CredentialError as exc:
            raise AuthError(f"{request.what}: {exc}") from None

        status = response.status_code
        _log.debug("%s -> %d in %.1f ms", request.what, status, (time.perf_counter() - started) * 1000)
        if status == 304:
            return _Reply(status, {})
        body: object = None
        size = len(response.content)
        if size:
            try:
                body = await self._decode(response.content)
            except (ValueError, RecursionError):
                if status < 400:
                    raise MalformedResponse(
                        f"{request.what}: the answer is not JSON", status=status
                    ) from None
        elif status < 400 and request.method != "GET":
            body = {}
        failure = error_for_reply(
            what=request.what,
            status=status,
            errors=error_entries(body) + result_errors(body),
            target=request.target,
            benign=request.benign_errors,
            lookup=request.lookup,
        )
        if failure is not None:
            raise failure
        if not isinstance(body, dict):
            raise MalformedResponse(f"{request.what}: expected a JSON object", status=status)
        return _Reply(status, body, size)

    async def _decode(self, content: bytes) -> object:
        """The JSON body; a big one decoded piece by piece in a worker thread (see `loads_in_pieces`)."""
        if len(content) < self._off_loop_bytes:
            return json.loads(content)
        return await asyncio.to_thread(loads_in_pieces, content)

    async def _off_loop_if_big(self, size: int, work: Callable[..., _T], *args: Any) -> _T:
        """`work(*args)`, in a worker thread when the answer is big (the loop keeps serving the rest)."""
        if size < self._off_loop_bytes:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    async def _read(self, reply: _Reply, what: str, parse: Callable[..., _T], *args: Any) -> _T:
        """The adapter's reading of `reply` (see `_parsed`), off the event loop when it is big."""
        return await self._off_loop_if_big(reply.size, _parsed, what, parse, *args)

    # --- operations -----------------------------------------------------------------------------

    async def ping(self) -> tuple[Ping, ...]:
        api = await self._api()
        reply = await self._execute(api.ping())
        return _parsed("ping", api.parse_ping, reply.body)

    async def diag(self) -> Diag:
        api = await self._api()
        reply = await self._execute(api.diag())
        return _parsed("diag", api.parse_diag, reply.body)

    async def list_jobs(self, *, update_time: datetime | int | None = None) -> JobList:
        """All jobs, or — with `update_time` — only if something changed since then.

        The answer says `not_modified=True` when nothing changed; otherwise `jobs` is the full
        list. Poll with `update_time=previous.next_update_time`.
        """
        api = await self._api()
        since = _epoch(update_time)
        asked_at = int(time.time())
        request = api.list_jobs(since)
        reply = await self._execute(request)
        if reply.status == 304:
            # Nothing changed since `since`: keep it (Slurm's own clock decided, not ours).
            return JobList(not_modified=True, next_update_time=_cursor(since, asked_at))
        jobs = await self._read(reply, request.what, api.parse_jobs, reply.body, request.what)
        if since is not None and not jobs and api.unchanged_since(reply.body):
            return JobList(not_modified=True, next_update_time=_cursor(since, asked_at))
        # slurmctld's own time of this answer; it compares `update_time - 1` with its last change, so
        # a change in that very second is seen by the next poll. Without it (REST v0.0.38), our clock
        # minus a margin: a bridge clock slightly ahead of slurmctld's must not hide a change.
        server_time = api.server_time(reply.body)
        next_update = server_time if server_time is not None else asked_at - LOCAL_CURSOR_MARGIN_SECONDS
        await self._off_loop_if_big(reply.size, reply.body.clear)  # freeing a big answer takes time too
        return JobList(jobs=tuple(jobs), next_update_time=datetime.fromtimestamp(next_update, UTC))

    async def job_states(self, job_ids: Sequence[int]) -> dict[int, JobState]:
        """The state of only the jobs named (REST v0.0.42+, `GET jobs/state`): slurmctld packs no job
        details, so this costs by the jobs asked about, not by the queue. A job Slurm no longer knows
        is missing from the answer."""
        api = await self._api()
        if not self.capabilities.supports_job_states:
            raise UnsupportedOperation(f"jobs/state is not available in Slurm REST API {api.name}")
        if not job_ids:
            return {}
        request = api.job_states(tuple(job_ids))
        reply = await self._execute(request)
        return _parsed(request.what, api.parse_job_states, reply.body, request.what)

    async def get_job(self, job_id: int) -> Job:
        api = await self._api()
        request = api.get_job(job_id)
        reply = await self._execute(request)
        jobs = await self._read(reply, request.what, api.parse_jobs, reply.body, request.what)
        for job in jobs:
            if job.job_id == job_id:
                return job
        raise JobNotFound(f"{request.what}: job {job_id} is not in the answer", status=reply.status)

    async def submit_job(self, spec: JobSpec) -> SubmitResult:
        """Submit a job. Never re-sent after an ambiguous failure (it could run twice)."""
        api = await self._api()
        request = api.submit_job(spec)
        reply = await self._execute(request)
        return _parsed(request.what, api.parse_submit, reply.body, request.what)

    async def allocate(self, spec: JobSpec, *, immediate: bool = True) -> SubmitResult:
        """An allocation with no batch script (job/allocate, v0.0.41+).

        The HTTP call BLOCKS until Slurm grants the allocation. With `immediate=True` (default)
        Slurm answers at once, raising ResourcesUnavailable when it cannot start now; a queued
        allocation (immediate=False) may end FAILED when granted if slurmrestd runs with
        SLURM_JWT=daemon. Prefer submit_job for queued work.
        """
        api = await self._api()
        if not self.capabilities.supports_allocate:
            raise UnsupportedOperation(f"job/allocate is not available in Slurm REST API {api.name}")
        request = api.allocate(spec, immediate)
        reply = await self._execute(request, http_timeout=self._allocate_timeout)
        return _parsed(request.what, api.parse_submit, reply.body, request.what)

    async def update_job(self, job_id: int, update: JobUpdate) -> None:
        """Change the fields set in `update` (hold/release, limits, comment, ...)."""
        api = await self._api()
        await self._execute(api.update_job(job_id, update))

    async def hold_job(self, job_id: int) -> None:
        await self.update_job(job_id, JobUpdate(hold=True))

    async def release_job(self, job_id: int) -> None:
        await self.update_job(job_id, JobUpdate(hold=False))

    async def cancel_job(
        self,
        job_id: int,
        signal: str | int | None = None,
        *,
        batch_only: bool = False,
    ) -> CancelOutcome:
        """Cancel a job, or send it `signal` ("USR1", 10, ...).

        `batch_only=True` signals only the batch shell (flags=BATCH_JOB; on v0.0.38, which cannot,
        every step gets it). Returns ALREADY_FINISHED when the job had already ended (v0.0.38
        reports that as plain success); raises JobNotFound when Slurm no longer knows the job.
        """
        api = await self._api()
        request = api.cancel_job(job_id, _signal_name(signal), batch_only)
        try:
            await self._execute(request)
        except JobAlreadyFinished:
            return CancelOutcome.ALREADY_FINISHED
        return CancelOutcome.SIGNALLED

    async def end_placeholder(
        self, job_id: int, exit_code: int, *, comment: str | None = None
    ) -> CancelOutcome:
        """End a batch placeholder (`placeholder_script`) so Slurm records `exit_code` as the job's.

        0 → USR1 (COMPLETED 0:0). Otherwise the code (taken modulo 256, 1 when that is 0) is appended
        to the job's comment as ``exit=N`` - `comment` is the job's current comment, read from Slurm
        when not given - and the batch shell gets USR2 (FAILED N:0). A job that ended meanwhile gives
        ALREADY_FINISHED; JobNotFound when Slurm no longer knows it.
        """
        if exit_code == 0:
            return await self.cancel_job(job_id, SUCCESS_SIGNAL, batch_only=True)
        code = exit_code % 256 or 1
        if comment is None:
            comment = (await self.get_job(job_id)).comment
        try:
            await self.update_job(job_id, JobUpdate(comment=with_exit_code(comment, code)))
        except JobAlreadyFinished:
            return CancelOutcome.ALREADY_FINISHED
        return await self.cancel_job(job_id, FAILURE_SIGNAL, batch_only=True)

    async def list_nodes(self) -> tuple[Node, ...]:
        api = await self._api()
        request = api.list_nodes()
        reply = await self._execute(request)
        return tuple(await self._read(reply, request.what, api.parse_nodes, reply.body, request.what))

    async def get_node(self, name: str) -> Node:
        api = await self._api()
        request = api.get_node(name)
        reply = await self._execute(request)
        for node in await self._read(reply, request.what, api.parse_nodes, reply.body, request.what):
            if node.name == name:
                return node
        raise NodeNotFound(f"{request.what}: node {name!r} is not in the answer", status=reply.status)

    async def update_node(self, name: str, update: NodeUpdate) -> None:
        """Drain (state="DRAIN" with a reason), resume, or comment a node (v0.0.40+)."""
        api = await self._api()
        if not self.capabilities.supports_node_update:
            raise UnsupportedOperation(f"node update is not available in Slurm REST API {api.name}")
        await self._execute(api.update_node(name, update))

    async def drain_node(self, name: str, reason: str) -> None:
        await self.update_node(name, NodeUpdate(state="DRAIN", reason=reason))

    async def resume_node(self, name: str) -> None:
        await self.update_node(name, NodeUpdate(state="RESUME"))

    async def list_partitions(self) -> tuple[Partition, ...]:
        api = await self._api()
        request = api.list_partitions()
        reply = await self._execute(request)
        return tuple(await self._read(reply, request.what, api.parse_partitions, reply.body, request.what))

    async def get_partition(self, name: str) -> Partition:
        api = await self._api()
        request = api.get_partition(name)
        reply = await self._execute(request)
        try:
            partitions = await self._read(reply, request.what, api.parse_partitions, reply.body, request.what)
        except MissingCollection:
            # 26.05 answers an unknown partition with HTTP 200, no list and a warning saying so;
            # without that warning a missing list stays an error, never a "not found".
            if not warning_texts(reply.body):
                raise
            partitions = []
        for partition in partitions:
            if partition.name == name:
                return partition
        raise PartitionNotFound(
            f"{request.what}: partition {name!r} is not in the answer", status=reply.status
        )

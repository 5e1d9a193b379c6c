"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

Safety rests on three durations: a follower takes a lease over only after it has seen the same
record unchanged for `lease_duration` (measured on its own clock, so clocks need not agree), while the
leader gives up (cancels its work) once it has failed to renew for `renew_deadline` < `lease_duration`.
Every write is a compare-and-swap on the Lease's resourceVersion, so two electors can't both win a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ._client import utc_now_rfc3339
from ._errors import Conflict, KubeError, NotFound
from ._resources import LEASES, KubeObject, ResourceRef

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeadershipLost(Exception):
    """The lease was lost while leading; the leading work was cancelled."""


class LeaseStore(Protocol):
    """The Lease calls an elector needs (KubeClient fits; tests pass a fake)."""

    async def get(
        self, ref: ResourceRef, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> KubeObject: ...

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> KubeObject: ...

    async def replace(
        self,
        ref: ResourceRef,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> KubeObject: ...


@dataclass(frozen=True)
class LeaderElectionConfig:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_exit: bool = True

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("identity must not be empty")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")


class LeaderElector:
    """Contend for one Lease. Lead with `async with elector.leading(): ...` or `await elector.run(work)`.

    Losing the lease cancels the leading work; `leading()` then raises `LeadershipLost`.
    """

    def __init__(
        self,
        store: LeaseStore,
        config: LeaderElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._lease: KubeObject | None = None  # last version read or written
        self._observed_record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renewed = 0.0
        self._is_leader = False

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @property
    def observed_holder(self) -> str:
        """Holder identity in the last Lease seen ("" when free or unknown)."""
        return str(((self._lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def leading(self) -> _Leadership:
        """Async context manager: waits to become leader, keeps the lease renewed while the body runs."""
        return _Leadership(self)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Become leader, run `work()` while leading, release when it returns."""
        async with self.leading():
            return await work()

    # ---- acquiring and renewing ----------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until this elector holds the lease."""
        while True:
            if await self._try_acquire_or_renew():
                log.info(
                    "%s: became leader of lease %s/%s",
                    self.config.identity,
                    self.config.namespace,
                    self.config.lease_name,
                )
                return
            await asyncio.sleep(self.config.retry_period * (1 + 0.2 * self._rng.random()))

    async def _try_acquire_or_renew(self, *, only_ours: bool = False) -> bool:
        """One round: create, take over (expired), or renew; False when the Lease is not ours to take.

        `only_ours`: renew only a Lease that still names this identity (never re-take a free one).
        """
        config = self.config
        attempt_started = self._clock()  # before the write: the followers' timers start after it
        now = utc_now_rfc3339(micro=True)
        duration = math.ceil(config.lease_duration)
        try:
            lease = await self._store.get(LEASES, config.lease_name, namespace=config.namespace)
        except NotFound:
            if only_ours:
                return False
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.lease_name, "namespace": config.namespace},
                "spec": {
                    "holderIdentity": config.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = await self._store.create(LEASES, body, namespace=config.namespace)
            except Conflict:
                return False  # another elector created it first
            self._took(created, attempt_started)
            return True
        self._observe(lease)
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or ""
        if only_ours and holder != config.identity:
            return False
        if holder and holder != config.identity and not self._observed_expired():
            return False
        if holder != config.identity:
            spec["holderIdentity"] = config.identity
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["renewTime"] = now
        spec["leaseDurationSeconds"] = duration
        try:
            updated = await self._store.replace(
                LEASES, config.lease_name, {**lease, "spec": spec}, namespace=config.namespace
            )
        except Conflict:
            return False  # someone wrote in between (compare-and-swap on resourceVersion)
        self._took(updated, attempt_started)
        return True

    def _took(self, lease: KubeObject, attempt_started: float) -> None:
        self._observe(lease)
        self._last_renewed = attempt_started
        self._is_leader = True

    def _observe(self, lease: KubeObject) -> None:
        self._lease = lease
        spec = lease.get("spec") or {}
        record = tuple(
            spec.get(field)
            for field in (
                "holderIdentity",
                "renewTime",
                "acquireTime",
                "leaseDurationSeconds",
                "leaseTransitions",
            )
        )
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = self._clock()

    def _observed_expired(self) -> bool:
        spec = (self._lease or {}).get("spec") or {}
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        return self._clock() >= self._observed_at + duration

    async def _keep_renewed(self, on_lost: Callable[[str], None]) -> None:
        """Renew every retry period; call `on_lost(why)` once the Lease is lost."""
        config = self.config
        while True:
            await asyncio.sleep(config.retry_period)
            if await self._renew_before_deadline():
                continue
            self._is_leader = False
            holder = self.observed_holder
            taken = holder not in ("", config.identity)
            on_lost(
                f"{'taken by ' + repr(holder) if taken else 'not renewed'} "
                f"{self._clock() - self._last_renewed:.1f} s after the last renewal"
            )
            return

    async def _renew_before_deadline(self) -> bool:
        """Renew, retrying failures until the renew deadline; False once the Lease is lost.

        A Lease read back as held by another identity is lost at once. One still held by us is not:
        a Conflict there only means an earlier write of ours (timed out here) landed, and a renewal
        that succeeds after the deadline (a busy event loop woke the renewer late) is kept, since the
        compare-and-swap proves nobody took the Lease in between.
        """
        config = self.config
        while True:
            remaining = self._last_renewed + config.renew_deadline - self._clock()
            if remaining <= 0:
                return await self._renew_late()
            # One attempt may not take the whole deadline: a request hung on a dead connection would.
            if await self._attempt(min(remaining, max(2 * config.retry_period, config.renew_deadline / 3))):
                return True
            if self._taken_by_another():
                return False
            await asyncio.sleep(min(config.retry_period / 4, remaining))

    async def _renew_late(self) -> bool:
        """One last renewal past the renew deadline, kept only if the Lease is still ours."""
        config = self.config
        if self.observed_holder != config.identity:
            return False
        late = self._clock() - self._last_renewed - config.renew_deadline
        # Wait for the answer no later than halfway between the renew deadline and the Lease's expiry:
        # a follower may take the Lease at its expiry, and our work must have stopped by then. (A loop
        # that was blocked past that point gets one short try: only an answer proves anything.)
        margin = (config.lease_duration - config.renew_deadline) / 2
        window = self._last_renewed + config.lease_duration - margin - self._clock()
        renewed = await self._attempt(
            window if window > 0 else min(config.retry_period, margin), only_ours=True
        )
        if renewed:
            log.warning(
                "%s: renewed lease %s/%s %.1f s past the renew deadline (the event loop was busy?)",
                config.identity,
                config.namespace,
                config.lease_name,
                late,
            )
        return renewed

    async def _attempt(self, within: float, *, only_ours: bool = False) -> bool:
        """One renewal within `within` seconds; a failure is logged with its type (some say nothing else)."""
        try:
            async with asyncio.timeout(within):
                return await self._try_acquire_or_renew(only_ours=only_ours)
        except TimeoutError:
            why = f"no answer within {within:.1f} s"
        except Exception as exc:  # any: a renewer that died would let the Lease expire unseen
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("%s: renewing lease failed (retrying until the deadline): %s", self.config.identity, why)
        return False

    def _taken_by_another(self) -> bool:
        return self.observed_holder not in ("", self.config.identity)

    async def release(self) -> None:
        """Hand the lease back (holder cleared) so a follower can take over at once."""
        was_leader, self._is_leader = self._is_leader, False
        if not was_leader or self._lease is None:
            return
        config = self.config
        lease = self._lease
        for _ in range(2):
            spec = dict(lease.get("spec") or {})
            if (spec.get("holderIdentity") or "") != config.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = utc_now_rfc3339(micro=True)
            try:
                self._lease = await self._store.replace(
                    LEASES, config.lease_name, {**lease, "spec": spec}, namespace=config.namespace
                )
                log.info("%s: released lease %s/%s", config.identity, config.namespace, config.lease_name)
                return
            except Conflict:
                lease = await self._store.get(LEASES, config.lease_name, namespace=config.namespace)


class _Leadership:
    """`async with elector.leading():` — the body runs in the caller's task and is cancelled on loss."""

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector
        self._task: asyncio.Task[Any] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._body_running = False
        self._cancel_sent = False
        self._why = ""

    async def __aenter__(self) -> LeaderElector:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("leading() must be used inside a task")
        await self._elector.acquire()
        self._body_running = True
        self._renewer = asyncio.create_task(
            self._elector._keep_renewed(self._on_lost), name=f"lease-renew:{self._elector.config.identity}"
        )
        return self._elector

    def _on_lost(self, why: str) -> None:
        # Runs in the renewer task; the flag is checked synchronously, so a body that already
        # finished is never cancelled by mistake.
        self._why = why
        if self._body_running and self._task is not None:
            self._cancel_sent = True
            self._task.cancel(msg="leader election lease lost")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._body_running = False
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._cancel_sent:
            assert self._task is not None
            if self._task.uncancel() == 0 and (
                exc_type is None or issubclass(exc_type, asyncio.CancelledError)
            ):
                config = self._elector.config
                raise LeadershipLost(
                    f"lease {config.namespace}/{config.lease_name} lost by {config.identity}: {self._why}"
                ) from exc
            return
        if self._elector.config.release_on_exit:
            try:
                await self._elector.release()
            except KubeError as release_error:
                log.warning("releasing the lease failed (it will expire): %s", release_error)
        else:
            self._elector._is_leader = False

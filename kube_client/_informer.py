"""A client-go style informer: list once, watch from there, keep a cache, tell handlers which keys changed.

Handlers get only a key ("ns/name"); the reconciler re-reads the cache, so a missed or merged
notification costs nothing as long as the key arrives once more. Watches do drop events now and then:
the periodic resync re-delivers every cached key as the level-based safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from ._client import ObjectList
from ._errors import Gone, KubeError, error_from_status
from ._resources import KubeObject, ResourceRef, object_key
from ._watch import WatchStream

log = logging.getLogger(__name__)

ChangeHandler = Callable[[str], object]
# (old, new): old is None for an add, new is None for a delete; both are the cached object on resync.
ChangePredicate = Callable[[KubeObject | None, KubeObject | None], bool]
IndexFunc = Callable[[KubeObject], Iterable[str]]


class ObjectSource(Protocol):
    """What an informer needs from the API (KubeClient fits; tests pass a fake)."""

    async def list_objects(
        self,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> ObjectList: ...

    async def open_watch(
        self,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> WatchStream: ...


@dataclass
class InformerStats:
    """Counters for tests, logs and benchmarks."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    expired: int = 0  # 410 Gone: the resourceVersion was compacted, so a relist followed
    errors: int = 0
    resyncs: int = 0
    last_list_seconds: float = 0.0
    last_list_items: int = 0


@dataclass(frozen=True, slots=True)
class _Handler:
    on_change: ChangeHandler
    predicate: ChangePredicate | None


class Informer:
    """Cache of one resource (optionally one namespace / selector), kept current by list + watch.

    Use: create, `add_handler`/`add_index`, then `async with informer:` (or `start()`/`stop()`), and
    `await informer.wait_synced()` before trusting the cache. Handlers are called synchronously from
    the informer's task: they must be quick and must not block (enqueue the key, nothing more).
    """

    def __init__(
        self,
        source: ObjectSource,
        ref: ResourceRef,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_period: float | None = 300.0,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if namespace is not None and not ref.namespaced:
            raise ValueError(f"{ref.plural} is cluster-scoped; no namespace allowed")
        self._source = source
        self.ref = ref
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.watch_timeout_seconds = watch_timeout_seconds
        self.page_size = page_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.name = name or (f"{ref.plural}@{namespace}" if namespace else ref.plural)
        self._rng = rng or random.Random()
        self._cache: dict[str, KubeObject] = {}
        self._handlers: list[_Handler] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._indexed_values: dict[str, dict[str, tuple[str, ...]]] = {}
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._task: asyncio.Task[None] | None = None
        self.stats = InformerStats()

    # ---- configuration -------------------------------------------------------------------------------

    def add_handler(self, on_change: ChangeHandler, *, predicate: ChangePredicate | None = None) -> None:
        """Call `on_change(key)` for every add/update/delete (and resync) that passes `predicate`."""
        self._handlers.append(_Handler(on_change, predicate))

    def add_index(self, name: str, index_func: IndexFunc) -> None:
        """Maintain an index: `index_func(obj)` yields the values the object is found under."""
        if name in self._index_funcs:
            raise ValueError(f"index {name!r} exists")
        self._index_funcs[name] = index_func
        self._indices[name] = {}
        self._indexed_values[name] = {}
        for key, obj in self._cache.items():
            self._index_object(name, key, obj)

    # ---- reading the cache ---------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list has filled the cache (stays True across relists)."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait for the first full list (bound it with `asyncio.timeout`)."""
        await self._synced.wait()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._resource_version

    def get(self, key: str) -> KubeObject | None:
        """The cached object for "ns/name" (or "name"), or None. Treat it as read-only."""
        return self._cache.get(key)

    def keys(self) -> list[str]:
        return list(self._cache)

    def objects(self) -> list[KubeObject]:
        return list(self._cache.values())

    def __len__(self) -> int:
        return len(self._cache)

    def keys_by_index(self, index_name: str, value: str) -> set[str]:
        return set(self._indices[index_name].get(value, ()))

    def by_index(self, index_name: str, value: str) -> list[KubeObject]:
        return [self._cache[key] for key in self._indices[index_name].get(value, ())]

    def index_values(self, index_name: str) -> list[str]:
        return list(self._indices[index_name])

    # ---- running -------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer:{self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """List, then watch forever (relisting on 410 Gone, backing off on errors) until cancelled."""
        resync_task = (
            asyncio.create_task(self._resync_forever(), name=f"informer-resync:{self.name}")
            if self.resync_period
            else None
        )
        backoff = self.backoff_initial
        need_list = True
        try:
            while True:
                try:
                    if need_list:
                        await self._relist()
                        need_list = False
                    if await self._watch_once():
                        backoff = self.backoff_initial
                        continue
                    # The stream ended without a single event right away: don't spin.
                except Gone:
                    self.stats.expired += 1
                    log.info(
                        "informer %s: resourceVersion %s expired, relisting",
                        self.name,
                        self._resource_version,
                    )
                    need_list = True
                    continue
                except KubeError as exc:
                    self.stats.errors += 1
                    log.warning("informer %s: %s; retrying in ~%.1fs", self.name, exc, backoff)
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, self.backoff_max)
        finally:
            if resync_task is not None:
                resync_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resync_task

    def resync(self) -> None:
        """Deliver every cached key to the handlers now (what the periodic resync does)."""
        self.stats.resyncs += 1
        for key, obj in list(self._cache.items()):
            self._deliver(key, obj, obj)

    async def _resync_forever(self) -> None:
        assert self.resync_period
        while True:
            await asyncio.sleep(self.resync_period * (0.9 + 0.2 * self._rng.random()))
            if self.has_synced:
                self.resync()

    async def _relist(self) -> None:
        started = time.perf_counter()
        listing = await self._source.list_objects(
            self.ref,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self.page_size,
        )
        self.stats.lists += 1
        self.stats.last_list_seconds = time.perf_counter() - started
        self.stats.last_list_items = len(listing.items)
        fresh = {object_key(obj): obj for obj in listing.items}
        changes: list[tuple[str, KubeObject | None, KubeObject | None]] = []
        for key, cached in self._cache.items():
            if key not in fresh:
                changes.append((key, cached, None))
        for key, listed in fresh.items():
            previous = self._cache.get(key)
            if previous is None or _resource_version_of(previous) != _resource_version_of(listed):
                changes.append((key, previous, listed))
        for key, _, new in changes:
            self._store(key, new)
        self._resource_version = listing.resource_version
        self._synced.set()
        for key, old, new in changes:
            self._deliver(key, old, new)

    async def _watch_once(self) -> bool:
        """Follow one watch stream to its end; True if it made progress (a reason to reset backoff)."""
        self.stats.watches += 1
        started = time.monotonic()
        progressed = False
        stream = await self._source.open_watch(
            self.ref,
            namespace=self.namespace,
            resource_version=self._resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=self._watch_timeout(),
        )
        async with stream:
            async for event in stream:
                progressed = True
                self._handle_event(event)
        return progressed or time.monotonic() - started > 1.0

    def _watch_timeout(self) -> int:
        # Spread reconnects of many informers; client-go picks [timeout, 2*timeout) the same way.
        return int(self.watch_timeout_seconds * (1 + self._rng.random()))

    def _handle_event(self, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        if event_type == "ERROR":
            raise error_from_status(obj)
        resource_version = _resource_version_of(obj)
        if event_type == "BOOKMARK":
            self.stats.bookmarks += 1
            if resource_version:
                self._resource_version = resource_version
            return
        self.stats.events += 1
        obj.setdefault("apiVersion", self.ref.api_version)
        if self.ref.kind:
            obj.setdefault("kind", self.ref.kind)
        key = object_key(obj)
        old = self._cache.get(key)
        if event_type == "DELETED":
            self._store(key, None)
            new = None
        elif event_type in ("ADDED", "MODIFIED"):
            self._store(key, obj)
            new = obj
        else:
            log.debug("informer %s: ignoring event type %r", self.name, event_type)
            return
        if resource_version:
            self._resource_version = resource_version
        if old is None and new is None:
            return
        self._deliver(key, old, new)

    def _store(self, key: str, obj: KubeObject | None) -> None:
        if obj is None:
            self._cache.pop(key, None)
        else:
            self._cache[key] = obj
        for index_name in self._index_funcs:
            self._unindex(index_name, key)
            if obj is not None:
                self._index_object(index_name, key, obj)

    def _index_object(self, index_name: str, key: str, obj: KubeObject) -> None:
        try:
            values = tuple(dict.fromkeys(self._index_funcs[index_name](obj)))
        except Exception:
            log.exception("informer %s: index %s failed on %s", self.name, index_name, key)
            return
        if not values:
            return
        self._indexed_values[index_name][key] = values
        index = self._indices[index_name]
        for value in values:
            index.setdefault(value, set()).add(key)

    def _unindex(self, index_name: str, key: str) -> None:
        values = self._indexed_values[index_name].pop(key, ())
        index = self._indices[index_name]
        for value in values:
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    def _deliver(self, key: str, old: KubeObject | None, new: KubeObject | None) -> None:
        for handler in self._handlers:
            try:
                if handler.predicate is None or handler.predicate(old, new):
                    handler.on_change(key)
            except Exception:
                # One broken handler must not stop the cache (or the other handlers).
                log.exception("informer %s: handler failed for %s", self.name, key)


def _resource_version_of(obj: KubeObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def label_index(label: str) -> IndexFunc:
    """Index function: objects by the value of one label (objects without it are not indexed)."""

    def values(obj: KubeObject) -> Iterable[str]:
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(label)
        return (value,) if value is not None else ()

    return values


def field_index(*path: str) -> IndexFunc:
    """Index function: objects by a string field, e.g. `field_index("spec", "nodeName")`."""

    def values(obj: KubeObject) -> Iterable[str]:
        node: Any = obj
        for part in path:
            if not isinstance(node, dict):
                return ()
            node = node.get(part)
        return (node,) if isinstance(node, str) and node else ()

    return values

"""A small HTTP proxy in front of the real slurmrestd that answers wrongly on demand.

It runs its own event loop in a thread, so a synchronous test can switch faults while a bridge process
talks to it. Without a fault it forwards every request unchanged (keep-alive connections included).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future

import httpx

# GET .../jobs (the list the job index polls), not .../job/<id> or .../job/submit
_JOB_LIST = re.compile(r"^/slurm/v[0-9.]+/jobs/?$")
_HOP_BY_HOP = frozenset(
    {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "accept-encoding"}
)


class Fault(enum.StrEnum):
    NONE = "none"
    DROP = "drop"  # every request: the connection closed without an answer (slurmrestd gone)
    ERROR_500 = "http-500"  # every request: 500 with a body that is not JSON
    UNAUTHORIZED = "http-401"  # every request: 401, as for a token slurmrestd does not accept
    JOBS_NULL = "jobs-null"  # the job list: 200 {"jobs": null, ...}; everything else forwarded
    EMPTY_OBJECT = "empty-object"  # the job list: 200 {}; everything else forwarded
    EMPTY_LIST = "empty-list"  # the job list: 200 with no jobs at all (a wrong or freshly reset slurmctld)
    SLOW = "slow"  # every request: forwarded after `slow_seconds` (past the bridge's request timeout)


class FaultProxy:
    def __init__(self, upstream: str, *, slow_seconds: float = 4.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.slow_seconds = slow_seconds
        self.fault = Fault.NONE
        self.injected: Counter[Fault] = Counter()  # answers the fault changed, by fault
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        done: Future[None] = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        done.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set(self, fault: Fault) -> None:
        with self._lock:
            self.fault = fault

    def count(self, fault: Fault) -> int:
        with self._lock:
            return self.injected[fault]

    async def _start(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.upstream, timeout=30.0)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._http is not None:
            await self._http.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [
                    (key.strip(), value.strip())
                    for key, colon, value in (line.partition(":") for line in lines)
                    if colon
                ]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length) if length else b""
                status, content_type, content = await self._answer(method, target, headers, body)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(content)}\r\nConnection: keep-alive\r\n\r\n".encode("latin-1")
                    + content
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, bytes]:
        with self._lock:
            fault = self.fault
            job_list = method == "GET" and bool(_JOB_LIST.match(target.split("?", 1)[0]))
            changed = fault in (Fault.DROP, Fault.ERROR_500, Fault.UNAUTHORIZED, Fault.SLOW) or (
                job_list and fault in (Fault.JOBS_NULL, Fault.EMPTY_OBJECT, Fault.EMPTY_LIST)
            )
            if changed:
                self.injected[fault] += 1
        if fault is Fault.DROP:
            raise ConnectionResetError("fault proxy: dropped")
        if fault is Fault.ERROR_500:
            return 500, "text/plain", b"Internal Server Error (fault proxy)"
        if fault is Fault.UNAUTHORIZED:
            return 401, "text/plain", b"Authentication failure (fault proxy)"
        if job_list and fault is Fault.JOBS_NULL:
            return 200, "application/json", json.dumps({"jobs": None, "errors": [], "warnings": []}).encode()
        if job_list and fault is Fault.EMPTY_OBJECT:
            return 200, "application/json", b"{}"
        if job_list and fault is Fault.EMPTY_LIST:
            empty = {"jobs": [], "last_update": {"set": True, "infinite": False, "number": int(time.time())}}
            return 200, "application/json", json.dumps({**empty, "errors": [], "warnings": []}).encode()
        if fault is Fault.SLOW:
            await asyncio.sleep(self.slow_seconds)  # then it still happens, as on a slow server
        assert self._http is not None
        forwarded = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        try:
            reply = await self._http.request(method, target, headers=forwarded, content=body)
        except httpx.HTTPError as error:
            return 502, "text/plain", f"fault proxy: upstream failed: {error!r}".encode()
        return reply.status_code, reply.headers.get("content-type", "application/json"), reply.content

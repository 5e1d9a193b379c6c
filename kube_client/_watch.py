"""A watch response body as an async iterator of decoded events (one JSON document per line)."""

from __future__ import annotations

import json
from typing import Any, Protocol, Self

import aiohttp

from ._errors import KubeTransportError

WatchEvent = dict[str, Any]


class _ByteSource(Protocol):
    async def readany(self) -> bytes: ...


class StreamResponse(Protocol):
    """The part of aiohttp.ClientResponse a watch needs (a seam for tests)."""

    @property
    def content(self) -> _ByteSource: ...

    def close(self) -> None: ...


class WatchStream:
    """Iterate for `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}`; always `close()`.

    Lines are split here rather than with StreamReader.readline, which refuses lines over its buffer
    limit: one huge object must not kill the watch.
    """

    def __init__(self, response: StreamResponse) -> None:
        self._response = response
        self._buffer = bytearray()
        self._scan_from = 0
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            newline = self._buffer.find(b"\n", self._scan_from)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                self._scan_from = 0
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise KubeTransportError(f"undecodable watch event: {line[:200]!r}") from exc
                if not isinstance(event, dict):
                    raise KubeTransportError(f"unexpected watch event: {line[:200]!r}")
                return event
            self._scan_from = len(self._buffer)
            if self._closed:
                raise StopAsyncIteration
            try:
                chunk = await self._response.content.readany()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise KubeTransportError(f"watch stream broke: {exc!r}") from exc
            if not chunk:
                # The server ended the stream (timeoutSeconds elapsed); a last line may lack "\n".
                self._closed = True
                if self._buffer.strip():
                    self._buffer.extend(b"\n")
                    continue
                raise StopAsyncIteration
            self._buffer.extend(chunk)

    def close(self) -> None:
        """Drop the connection: an unfinished chunked body cannot go back to the pool."""
        self._closed = True
        self._response.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

"""The load driver's HTTP client: HTTP/1.1 keep-alive over asyncio streams, and nothing else.

The driver shares the machine with what it measures, so every CPU millisecond it spends per request is
taken from the stack under test (on this 2-core machine a general-purpose client cost about 5 ms of CPU
per saga, a sixth of the whole stack's). This one only writes a request and reads a status line, headers
and a `Content-Length` body; anything else (chunked bodies, a protocol error) is an error, never a guess.
A broken connection surfaces as `TransportError`, and the connection is dropped, not reused. A connection
left idle longer than the server keeps one (uvicorn: 5 s) is not reused either: closed at the server's end,
it would take the next request down with it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class TransportError(Exception):
    """The connection broke or the answer was not HTTP/1.1 this client reads."""


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Send one request; the response and whether the connection may carry another."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise TransportError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        length, keep = None, parts[0] == b"HTTP/1.1"
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                keep = value.strip().lower() != b"close"
            elif name == b"transfer-encoding":
                raise TransportError("chunked bodies are not read by this client")
        if length is None:
            raise TransportError("an answer without Content-Length")
        return Response(int(parts[1]), await self.reader.readexactly(length)), keep

    def close(self) -> None:
        self.writer.close()


class Client:
    """POSTs JSON to one base URL over a small pool of kept-alive connections."""

    def __init__(self, base_url: str, idle_for: float = 2.0) -> None:
        split = urlsplit(base_url)
        self._host, self._port = split.hostname or "127.0.0.1", split.port or 80
        self._authority = f"{self._host}:{self._port}".encode()
        self._idle: list[tuple[float, _Connection]] = []
        self._idle_for = idle_for

    def _reusable(self) -> _Connection | None:
        while self._idle:
            since, connection = self._idle.pop()
            if time.monotonic() - since < self._idle_for:
                return connection
            connection.close()
        return None

    async def post(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Response:
        """POST `payload` as JSON; raises TransportError when the connection breaks under the request."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
        request = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self._authority
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n" + head + b"\r\n" + body
        )  # fmt: skip
        connection = self._reusable()
        try:
            if connection is None:
                connection = _Connection(*await asyncio.open_connection(self._host, self._port))
            response, keep = await connection.exchange(request)
        except (TransportError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(repr(exc)) from exc
        if keep:
            self._idle.append((time.monotonic(), connection))
        else:
            connection.close()
        return response

    async def aclose(self) -> None:
        """Close every idle connection."""
        for _, connection in self._idle:
            connection.close()
        self._idle.clear()

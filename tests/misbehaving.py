"""Small HTTP/1.1 servers on 127.0.0.1 that misbehave on purpose, for driving the real client over a socket.

``MisbehavingServer(answer)`` listens on a free loopback port in a thread of its own (its own asyncio
loop) and hands every request it reads to ``answer(request, out)``, an async function that decides
what goes back on the wire: a well-formed reply (``out.reply``), raw bytes (``out.raw``), bytes
trickled one at a time (``out.trickle``) or nothing at all (``out.drop``). Used as a context manager
it yields the base URL and, on leaving, cancels every connection and stops its loop.

Everything is bounded: requests per server (``max_requests``; past it connections are closed
unanswered), bytes per request, and time (every read has a timeout, a trickle has a fixed length,
and the server stops itself ``max_seconds`` after it started).
"""

from __future__ import annotations

import asyncio
import http
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HEAD_LIMIT = 64 * 1024
_BODY_LIMIT = 10 * 1024 * 1024
_READ_TIMEOUT = 5.0


@dataclass
class Request:
    """One request as it arrived: method, target (path and query), headers (lower-case names) and body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body)


class Out:
    """The writing end of one connection, for one answer."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.keep_alive = True

    async def raw(self, data: bytes) -> None:
        """Bytes exactly as given (a status line and headers included, or not)."""
        self._writer.write(data)
        await self._writer.drain()

    async def reply(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        content_type: str | None = None,
    ) -> None:
        """A well-formed response: ``body`` as bytes, text, or JSON for anything else."""
        await self.raw(response_bytes(status, body, headers, content_type=content_type))

    async def trickle(self, data: bytes, every: float) -> None:
        """``data`` one byte at a time, ``every`` seconds apart (stops when the client goes away)."""
        for i in range(len(data)):
            if self._writer.is_closing():
                return
            self._writer.write(data[i : i + 1])
            await self._writer.drain()
            await asyncio.sleep(every)

    def drop(self) -> None:
        """Close the connection without (the rest of) an answer."""
        self.keep_alive = False
        self._writer.close()


def response_bytes(
    status: int, body: Any = None, headers: dict[str, str] | None = None, *, content_type: str | None = None
) -> bytes:
    """A complete HTTP/1.1 response: status line, headers (Content-Length added) and body."""
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    elif isinstance(body, str):
        content = body.encode()
        content_type = content_type or "text/plain; charset=utf-8"
    else:
        content = json.dumps(body).encode()
        content_type = content_type or "application/json"
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    all_headers = dict(headers or {})
    if content_type:
        all_headers.setdefault("Content-Type", content_type)
    all_headers.setdefault("Content-Length", str(len(content)))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


Answer = Callable[[Request, Out], Awaitable[None]]


@dataclass
class MisbehavingServer:
    """An HTTP server on 127.0.0.1 whose every answer is written by ``answer``; see the module docstring."""

    answer: Answer
    max_requests: int = 500
    max_seconds: float = 30.0
    requests: list[Request] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _url: str = ""

    def __enter__(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # reported to the test thread below
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="misbehaving-server", daemon=True)
        self._thread.start()
        if not ready.wait(5) or failure:
            raise RuntimeError(f"the misbehaving server did not start: {failure}")
        return self._url

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop already ended (max_seconds)
                pass
        if self._thread is not None:
            self._thread.join(5)

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # the server is stopping (asyncio would log a cancelled connection task as an error)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(connection, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        port = server.sockets[0].getsockname()[1]
        self._url = f"http://127.0.0.1:{port}"
        ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.max_seconds)
        except asyncio.TimeoutError:
            pass
        server.close()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(list(tasks), timeout=2)
        await asyncio.wait_for(server.wait_closed(), 2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while len(self.requests) < self.max_requests:
                request = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT)
                if request is None:
                    break
                self.requests.append(request)
                out = Out(writer)
                await self.answer(request, out)
                if not out.keep_alive or writer.is_closing():
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ValueError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed the connection between requests
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    if not 0 <= length <= _BODY_LIMIT:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body)

"""A loopback gateway in front of a sandbox that behaves like a load balancer in front of a slow Campfire.

Owns ``Gateway``: an HTTP proxy on 127.0.0.1 (a free port), served by uvicorn in a background thread
and started and stopped as a context manager. For ``POST /coa/api/v1/invoice/`` it may give up on
Campfire the way nginx does: a fraction ``slow_rate`` of creates is answered ``504 Gateway Timeout``
after ``gateway_timeout`` seconds, while the request is forwarded upstream only after a commit
delay drawn from a seeded ``random.Random`` in ``[commit_min, commit_max]``, so the invoice lands
upstream after its 504 was answered (and after the look-up a tool makes at once). Every other
request (GETs, PATCH, the rest of the creates) is forwarded unchanged and at once.

The ``Authorization`` header is forwarded as is and never recorded. ``stats()`` counts what the
gateway did; ``wait_for_commits()`` (and stopping) waits for the commits still to land, so that a
test reads the final upstream state. Nothing of invoicesync is imported: the gateway knows only HTTP.

    with Gateway(sandbox_url, gateway_timeout=0.3, commit_min=0.6, commit_max=2.4, seed=7) as url:
        ...  # point the tool's base_url at url
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CREATE_PATH = "/coa/api/v1/invoice/"

# What nginx answers when proxy_read_timeout runs out.
GATEWAY_TIMEOUT_PAGE = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
BAD_GATEWAY_PAGE = GATEWAY_TIMEOUT_PAGE.replace("504 Gateway Time-out", "502 Bad Gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx computes itself are not passed on.
_REQUEST_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length",
                           "proxy-connection", "accept-encoding"})
_RESPONSE_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                            "date", "server"})


class GatewayError(Exception):
    """The gateway could not start, or its commits did not land in time."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Any) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready(asyncio.get_running_loop())


class Gateway:
    """A 504-ing load balancer in front of ``upstream`` (a base URL such as ``http://127.0.0.1:5123``)."""

    def __init__(
        self,
        upstream: str,
        *,
        gateway_timeout: float = 0.3,
        commit_min: float = 0.6,
        commit_max: float = 2.4,
        slow_rate: float = 1.0,
        seed: int | None = 0,
        create_path: str = CREATE_PATH,
    ) -> None:
        if not 0 <= slow_rate <= 1:
            raise ValueError(f"slow_rate must be between 0 and 1, not {slow_rate}")
        if not 0 <= gateway_timeout < commit_min <= commit_max:
            # The point of the gateway: the commit lands after the 504 was answered.
            raise ValueError("need 0 <= gateway_timeout < commit_min <= commit_max")
        self.upstream = upstream.rstrip("/")
        self.gateway_timeout = gateway_timeout
        self.commit_min = commit_min
        self.commit_max = commit_max
        self.slow_rate = slow_rate
        self.create_path = create_path
        self.url = ""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._commit_delays: list[float] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # --- what a test reads -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters: ``creates`` seen, ``gateway_timeouts`` answered, ``commits_pending``/``commits_landed``/
        ``commits_failed`` of the 504'd creates, ``forwarded`` (requests passed on at once), ``bad_gateway``.
        """
        with self._lock:
            out: dict[str, Any] = {k: self._counts[k] for k in (
                "requests", "creates", "gateway_timeouts", "commits_landed", "commits_failed", "forwarded",
                "bad_gateway")}
            out["commits_pending"] = self._counts["gateway_timeouts"] - self._counts["commits_landed"] - self._counts["commits_failed"]
            out["max_commit_delay"] = max(self._commit_delays, default=0.0)
        return out

    def wait_for_commits(self, timeout: float | None = None) -> None:
        """Block until every create the gateway gave up on has been forwarded and answered upstream."""
        limit = self.commit_max + 5 if timeout is None else timeout
        if self._loop is None or not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)
        try:
            future.result(limit)
        except TimeoutError as exc:
            raise GatewayError(f"commits still pending after {limit:g} s: {self.stats()}") from exc

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on 127.0.0.1 (a free port) in a background thread; return the gateway's base URL."""
        # getaddrinfo gives proto=IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections
        # (without it every answer waits ~40 ms for the client's delayed ACK); see sandbox/server.py.
        family, kind, proto, _, address = socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM)[0]
        self._sock = socket.socket(family, kind, proto)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(address)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)

        def ready(loop: asyncio.AbstractEventLoop) -> None:
            self._loop = loop
            self._ready.set()

        self._server = server = _Server(config, ready)
        sock = self._sock
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise GatewayError(f"the gateway on {self.url} did not start")
        return self.url

    def stop(self) -> None:
        """Let every pending commit land, close the upstream client, then shut the server down."""
        try:
            self.wait_for_commits()
        finally:
            if self._loop is not None and self._loop.is_running() and self._http is not None:
                asyncio.run_coroutine_threadsafe(self._http.aclose(), self._loop).result(5)
            if self._server is not None:
                self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            if self._sock is not None:
                self._sock.close()
            self._server = self._thread = self._sock = None
            self._loop = self._http = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- the ASGI app ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            body = await request.body()
        except ClientDisconnect:
            return
        self._count("requests")
        is_create = request.method == "POST" and request.url.path == self.create_path
        delay: float | None = None
        if is_create:
            with self._lock:
                self._counts["creates"] += 1
                # Both draws every time, so a seed gives the same delays whatever the rate.
                slow = self._rng.random() < self.slow_rate
                drawn = self._rng.uniform(self.commit_min, self.commit_max)
                if slow:
                    delay = drawn
                    self._counts["gateway_timeouts"] += 1
                    self._commit_delays.append(drawn)
        if delay is not None:
            task = asyncio.get_running_loop().create_task(self._commit_later(self._upstream_request(request, body), delay))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            await asyncio.sleep(self.gateway_timeout)
            response = Response(GATEWAY_TIMEOUT_PAGE, status_code=504, media_type="text/html")
        else:
            response = await self._forward(request, body)
        await response(scope, receive, send)

    async def _forward(self, request: Request, body: bytes) -> Response:
        try:
            upstream = await self._client().send(self._upstream_request(request, body))
        except httpx.HTTPError:
            self._count("bad_gateway")
            return Response(BAD_GATEWAY_PAGE, status_code=502, media_type="text/html")
        self._count("forwarded")
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_SKIP}
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    async def _commit_later(self, upstream_request: httpx.Request, delay: float) -> None:
        """Campfire still working behind the gateway: the create reaches it after ``delay`` seconds."""
        await asyncio.sleep(delay)
        try:
            upstream = await self._client().send(upstream_request)
        except httpx.HTTPError:
            self._count("commits_failed")
            return
        self._count("commits_landed" if upstream.status_code < 300 else "commits_failed")

    def _upstream_request(self, request: Request, body: bytes) -> httpx.Request:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        url = self.upstream + raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        # Host is kept (as nginx's `proxy_set_header Host $host`), so that the upstream's pagination
        # links name the gateway, where the client may follow them.
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_SKIP]
        return self._client().build_request(request.method, url, headers=headers, content=body)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        return self._http

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

"""Serving the sandbox over HTTP with uvicorn: in the foreground for the CLI, in a thread for tests.

Owns ``serve`` (blocking; Ctrl-C stops it cleanly and it returns), ``BackgroundServer`` (a
context manager running uvicorn in a thread on a free port and yielding its URL) and the quieting of
uvicorn: no access log, warnings and errors only, and no traceback for the connections that fault
injection drops on purpose. Neither prints anything; the CLI says where the sandbox listens.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from types import TracebackType

import uvicorn

from invoicesync.errors import InvoiceSyncError
from invoicesync.sandbox.app import Sandbox
from invoicesync.sandbox.faults import DroppedConnection


class SandboxServerError(InvoiceSyncError):
    """The sandbox cannot listen where it was asked to, or did not start."""


class _HideDrops(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" records caused by injected drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


def _quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDrops) for f in logger.filters):
        logger.addFilter(_HideDrops())


def _bind(host: str, port: int) -> socket.socket:
    try:
        # getaddrinfo gives proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted connections of
        # such a socket, and without it every response waits ~40 ms for the client's delayed ACK.
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise SandboxServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()


def _server(sandbox: Sandbox, on_ready: Callable[[], None]) -> _Server:
    config = uvicorn.Config(
        sandbox.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    _quiet_uvicorn()
    return _Server(config, on_ready)


def serve(
    sandbox: Sandbox,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``sandbox`` over HTTP until interrupted; ``on_ready(url)`` is called once it listens.

    Ctrl-C (SIGINT) or SIGTERM shuts uvicorn down gracefully and this function returns normally.
    Raises ``SandboxServerError`` when the address cannot be bound.
    """
    sock = _bind(host, port)
    url = _url(sock)
    server = _server(sandbox, lambda: on_ready(url) if on_ready else None)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled, after its clean shutdown
    finally:
        sock.close()
        sandbox.close()


class BackgroundServer:
    """Uvicorn serving a sandbox in a daemon thread, for tests: ``with BackgroundServer(sb) as url: ...``.

    ``port=0`` picks a free port; ``url`` is like ``http://127.0.0.1:54321``.
    """

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, *, start_timeout: float = 10) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.url = ""
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> str:
        """Start serving; returns the URL once the server accepts connections."""
        self._sock = _bind(self.host, self.port)
        self.url = _url(self._sock)
        self._server = _server(self.sandbox, self._ready.set)
        sock = self._sock
        server = self._server
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="sandbox-server", daemon=True)
        self._thread.start()
        while not self._ready.wait(0.01):
            if not self._thread.is_alive():
                self.stop()
                raise SandboxServerError(f"the sandbox server on {self.url} did not start")
            self.start_timeout -= 0.01
            if self.start_timeout <= 0:
                self.stop()
                raise SandboxServerError(f"the sandbox server on {self.url} did not start in time")
        return self.url

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

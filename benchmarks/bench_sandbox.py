"""Creates per second the sandbox sustains over loopback, beside a trivial Starlette endpoint.

Usage: python benchmarks/bench_sandbox.py [N] [CONCURRENCY]   (default: 3000 8)

Starts the sandbox (in memory, no faults) with uvicorn in its own process, posts N create requests
(the seed page's two-line shape) from an async httpx client at the given concurrency, and prints
creates/s. As a same-run reference it then does the same against a trivial Starlette endpoint that
answers ``{"ok": true}`` under the same uvicorn settings, so the figure can be read against what
the machine, uvicorn and httpx manage at all. The target is at least 500 creates/s on 2 cores.

The client is usually the limit: httpx's connection pool gets slower per request as concurrency
grows (on 2 cores about 1200/s at 8, 430/s at 32, for the trivial endpoint as much as the sandbox),
which is why the default concurrency is 8.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-key"
PATH = "/coa/api/v1/invoice/"

SANDBOX_CHILD = f"""
from invoicesync.sandbox import Sandbox
from invoicesync.sandbox.server import serve
serve(Sandbox(tokens=({TOKEN!r},)), port=0, on_ready=lambda url: print(url, flush=True))
"""

TRIVIAL_CHILD = """
import socket, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def endpoint(request):
    await request.body()
    return JSONResponse({"ok": True}, status_code=201)

app = Starlette(routes=[Route("/coa/api/v1/invoice/", endpoint, methods=["POST"])])
# proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (40 ms stalls per response)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])
"""

BODY = (
    '{"entity": 54, "client": 33973, "contract": 12954, "invoice_date": "2025-07-01", "due_date": "2025-07-31",'
    ' "terms": "net_30", "currency": "USD", "source": "invoicesync", "source_id": "bench/%d",'
    ' "lines": [{"product": 2545, "description": "Platform subscription", "quantity": 1, "rate": 50, "tax": 5},'
    ' {"product": 2546, "description": "Support", "quantity": 2, "rate": 10.5}]}'
)


@contextmanager
def server(child: str) -> Iterator[str]:
    """A uvicorn server in its own process; yields its URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError("the server process did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def hammer(url: str, n: int, concurrency: int) -> float:
    """Post ``n`` creates at ``concurrency``; returns requests per second (after a short warm-up)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        counter = iter(range(n + 200))

        async def worker(stop: int) -> None:
            for i in counter:
                if i >= stop:
                    return
                response = await client.post(PATH, content=BODY % i)
                if response.status_code != 201:
                    raise RuntimeError(f"create {i}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker(200) for _ in range(concurrency)))  # warm-up: connections, imports
        counter = iter(range(200, n + 200))
        started = time.perf_counter()
        await asyncio.gather(*(worker(n + 200) for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 3000
    concurrency = int(argv[1]) if len(argv) > 1 else 8
    print(f"{n} creates at concurrency {concurrency}, server and client in separate processes, {os.cpu_count()} CPUs")
    with server(SANDBOX_CHILD) as url:
        rate = asyncio.run(hammer(url, n, concurrency))
    print(f"sandbox creates:        {rate:8.0f} /s   (target >= 500)")
    with server(TRIVIAL_CHILD) as url:
        reference = asyncio.run(hammer(url, n, concurrency))
    print(f"trivial Starlette POST: {reference:8.0f} /s   (same uvicorn and httpx; the ceiling)")
    print(f"sandbox / trivial:      {rate / reference:8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

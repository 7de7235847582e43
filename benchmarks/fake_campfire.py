"""A minimal stand-in for Campfire's invoice API, for benchmarks: as little server work as a request can take.

The sandbox validates, computes and stores every invoice, and that work sits inside every figure
measured against it, the references' included. This fake answers at once after the latency: a create
echoes its body with an id, a list is empty, the entities are one. Nothing is checked or kept; use
it to see the tool's own costs (issue 12 measured against such an independent fake).

Run: `python benchmarks/fake_campfire.py PORT [LATENCY_MS]`; it prints one "listening" line.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys

_IDS = itertools.count(500_000)
_EMPTY_LIST = json.dumps({"count": 0, "next": None, "previous": None, "results": []}).encode()
_ENTITIES = json.dumps([{"id": 54, "name": "Bench Inc", "currency": "USD"}]).encode()


def _answer(method: str, path: str, body: bytes) -> tuple[int, bytes]:
    route = path.split("?", 1)[0]
    if method == "POST" and route == "/coa/api/v1/invoice/":
        invoice = json.loads(body or b"{}")
        invoice.update(id=next(_IDS), status="open", payment_status="open", amount_paid="0.00", is_deleted=False)
        return 201, json.dumps(invoice).encode()
    if method == "GET" and route == "/coa/api/v1/invoice/":
        return 200, _EMPTY_LIST
    if method == "GET" and route == "/coa/api/entity":
        return 200, _ENTITIES
    return 404, b'{"detail": "Not found."}'


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if latency:
                await asyncio.sleep(latency)
            status, payload = _answer(method, path, body)
            reason = {200: "OK", 201: "Created", 404: "Not Found"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, latency_ms: float) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(r, w, latency_ms / 1000), "127.0.0.1", port)
    print(f"Fake Campfire listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))

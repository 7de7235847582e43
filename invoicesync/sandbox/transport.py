"""The in-process httpx transport of the sandbox.

Owns ``SandboxTransport``: ``httpx.ASGITransport`` running the sandbox's app, which turns an
injected dropped connection into ``httpx.RemoteProtocolError``, the error a client gets over HTTP
when uvicorn aborts a response, so clients meet the same failure in process and over loopback.
"""

from __future__ import annotations

import httpx

from invoicesync.sandbox.faults import DroppedConnection


class SandboxTransport(httpx.ASGITransport):
    """``httpx.ASGITransport`` for the sandbox app, with drops surfacing as ``RemoteProtocolError``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Run the request through the app; a dropped response raises ``httpx.RemoteProtocolError``."""
        try:
            return await super().handle_async_request(request)
        except DroppedConnection as exc:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a complete response (sandbox fault injection).",
                request=request,
            ) from exc

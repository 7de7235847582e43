"""Fault injection for the sandbox: the settings, the seeded dice, and the counters.

Owns ``FaultSettings`` (what to inject), ``FaultInjector`` (decides, per Campfire request, which
fault if any to inject, from a ``random.Random(seed)`` so a seeded run is reproducible) and
``Stats`` (request and fault counters served at ``GET /_sandbox/stats``).

The three rates are fractions of requests and are exclusive: one draw per request picks throttle
(429 with ``Retry-After``), else fail (500 before anything is committed), else drop (the change is
committed, then the connection is dropped with no response). Their sum is capped at 1 in that
order. ``latency_ms`` delays every Campfire request, faulted or not.

The rate limit is not drawn: ``rate_limit`` (requests a second, off when None or 0) and ``burst``
(whole requests, at least 1) make one token bucket (``TokenBucket``) shared by every Campfire
request, whatever its method, path or token; the ``/_sandbox/`` control paths never take a token.
The bucket starts full and refills at ``rate_limit`` tokens a second up to ``burst``; it starts full
again when ``rate_limit`` or ``burst`` change and on a reset. A request that finds no token is
answered as Django REST Framework's throttling answers: 429, ``{"detail": "Request was throttled.
Expected available in N seconds."}`` and ``Retry-After: N``, where N is the time until the next token
rounded up to whole seconds (DRF's ``Throttled`` takes ``math.ceil`` of the wait and its handler
writes ``'%d' % wait``), so at least 1. ``retry_after`` plays no part in it: it is the header of the
drawn throttles only.

How the limit meets the other faults (choices of the sandbox; Campfire publishes no limit):

- The bucket is checked first, as the request arrives: before the latency, the drawn faults,
  routing and authentication (DRF authenticates before it throttles, so there a bad token is a 401
  that spends nothing; here it spends a token like any other request).
- A refused request is answered at once, without the injected latency: DRF throttles before the
  view runs, and ``latency_ms`` stands for the server's work on a request. A client that ignores
  ``Retry-After`` thus meets a prompt wall of 429s rather than a slow one. Nothing is committed.
- An admitted request has spent its token whatever follows: the latency, then the draw, which may
  still throttle, fail or drop it.

The bucket is read and written under a lock, without awaiting in between: correct for the server's
single asyncio loop and for in-process use from several threads, at the cost of one uncontended
lock per request. Its clock is ``time.monotonic`` unless the sandbox is given another (tests).
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoicesync.errors import InvoiceSyncError
from invoicesync.models import dumps_json


class FaultSettingsError(InvoiceSyncError, ValueError):
    """A fault setting out of its range (a rate outside 0..1, a negative time, a burst below 1)."""


#: A clock for the rate limit's bucket: seconds, never going back.
Clock = Callable[[], float]


@dataclass(frozen=True)
class FaultSettings:
    """What the sandbox injects into Campfire requests, and their rate limit (never on ``/_sandbox/``)."""

    latency_ms: float = 0
    fail_rate: float = 0
    throttle_rate: float = 0
    drop_rate: float = 0
    seed: int | None = None
    retry_after: float = 1
    rate_limit: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        for name in ("fail_rate", "throttle_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise FaultSettingsError(f"{name} must be between 0 and 1, not {value}")
        if self.latency_ms < 0:
            raise FaultSettingsError(f"latency_ms must not be negative, not {self.latency_ms}")
        if self.retry_after < 0:
            raise FaultSettingsError(f"retry_after must not be negative, not {self.retry_after}")
        rate = self.rate_limit
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
                raise FaultSettingsError(
                    f"rate_limit must be a positive number of requests a second (0 or none: no limit), not {rate!r}"
                )
            # One way to say "no limit", so that settings compare and show alike.
            object.__setattr__(self, "rate_limit", float(rate) if rate else None)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise FaultSettingsError(f"burst must be a whole number of requests, at least 1, not {self.burst!r}")

    def to_json(self) -> dict[str, Any]:
        """The settings as the control API shows them (rates and times as numbers with a fraction).

        ``rate_limit`` and ``burst`` are left out while both are at their defaults (no limit), so
        that a sandbox without a limit shows the settings it always showed.
        """
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k in ("seed", "rate_limit", "burst"):
                out[k] = v
            else:
                out[k] = float(v)
        if self.rate_limit is None and self.burst == 1:
            del out["rate_limit"], out["burst"]
        return out

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` as sent: whole seconds, rounded up as DRF's throttling does."""
        return math.ceil(self.retry_after)


class Fault(enum.Enum):
    """What happens to one Campfire request."""

    NONE = "none"
    THROTTLE = "throttle"
    FAIL = "fail"
    DROP = "drop"


class TokenBucket:
    """``rate`` tokens a second up to ``burst``, starting full; each request takes one (not thread-safe)."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> float:
        """Take a token: 0 when there was one, else the seconds until the next (and nothing is taken)."""
        now = self._clock()
        tokens = min(float(self.burst), self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return 0.0
        self._tokens = tokens
        return (1 - tokens) / self.rate


class FaultInjector:
    """Current settings, the seeded random stream the faults are drawn from and the rate limit's bucket (thread-safe)."""

    def __init__(self, settings: FaultSettings | None = None, clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._settings = settings or FaultSettings()
        self._rng = random.Random(self._settings.seed)
        self._bucket = self._new_bucket(self._settings)

    def _new_bucket(self, settings: FaultSettings) -> TokenBucket | None:
        return None if settings.rate_limit is None else TokenBucket(settings.rate_limit, settings.burst, self._clock)

    @property
    def settings(self) -> FaultSettings:
        """The settings in force."""
        return self._settings

    def configure(self, settings: FaultSettings, *, reseed: bool = True) -> None:
        """Replace the settings; ``reseed`` restarts the random stream from ``settings.seed``.

        The rate limit's bucket starts full again when ``rate_limit`` or ``burst`` change.
        """
        with self._lock:
            old = self._settings
            self._settings = settings
            if reseed:
                self._rng = random.Random(settings.seed)
            if (old.rate_limit, old.burst) != (settings.rate_limit, settings.burst):
                self._bucket = self._new_bucket(settings)

    def refill(self) -> None:
        """Fill the rate limit's bucket (a reset sandbox starts with its whole burst)."""
        with self._lock:
            self._bucket = self._new_bucket(self._settings)

    def admit(self) -> int:
        """Take a token for one Campfire request: 0 when admitted, else DRF's wait in whole seconds (>= 1)."""
        with self._lock:
            wait = self._bucket.take() if self._bucket is not None else 0.0
        return math.ceil(wait) if wait > 0 else 0

    def draw(self) -> Fault:
        """Decide the fault for one request."""
        with self._lock:
            s = self._settings
            if not (s.throttle_rate or s.fail_rate or s.drop_rate):
                return Fault.NONE
            r = self._rng.random()
        if r < s.throttle_rate:
            return Fault.THROTTLE
        if r < s.throttle_rate + s.fail_rate:
            return Fault.FAIL
        if r < s.throttle_rate + s.fail_rate + s.drop_rate:
            return Fault.DROP
        return Fault.NONE


class Stats:
    """Request and fault counters (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._by_method: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._by_method_limited: Counter[str] = Counter()

    def request(self, method: str) -> None:
        """Count one Campfire request."""
        with self._lock:
            self._counts["requests"] += 1
            self._by_method[method] += 1

    def response(self, status: int) -> None:
        """Count one response status (including injected ones)."""
        with self._lock:
            self._by_status[str(status)] += 1

    def rate_limited(self, method: str) -> None:
        """Count one request refused by the rate limit (its 429 is counted by ``response``)."""
        with self._lock:
            self._counts["rate_limited"] += 1
            self._by_method_limited[method] += 1

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (``creates``, ``throttled``, ``failed``, ...)."""
        with self._lock:
            self._counts[name] += n

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counts.clear()
            self._by_method.clear()
            self._by_status.clear()
            self._by_method_limited.clear()

    def snapshot(self) -> dict[str, Any]:
        """All counters, as ``GET /_sandbox/stats`` shows them."""
        with self._lock:
            out: dict[str, Any] = {
                name: self._counts[name]
                for name in (
                    "requests",
                    "creates",
                    "lists",
                    "reads",
                    "updates",
                    "deletes",
                    "voids",
                    "reopens",
                    "payments",
                    "payment_voids",
                    "idempotent_replays",
                    "idempotency_conflicts",
                    "throttled",
                    "rate_limited",
                    "failed",
                    "dropped",
                    "delayed",
                )
            }
            out["by_method"] = dict(self._by_method)
            out["by_status"] = dict(self._by_status)
            out["rate_limited_by_method"] = dict(self._by_method_limited)
            return out


class DroppedConnection(Exception):
    """Raised after a response has started, so that the server aborts the connection mid-response.

    Uvicorn closes the connection when an app raises after ``http.response.start``; the client has
    headers announcing a body that never comes and httpx raises ``RemoteProtocolError``. The
    sandbox's in-process transport turns this exception into that same httpx error.
    """


_SERVER_ERROR = b"<!doctype html>\n<html lang=\"en\">\n<head><title>Server Error (500)</title></head>\n<body><h1>Server Error (500)</h1><p></p></body>\n</html>\n"


def throttle_detail(wait: int) -> str:
    """DRF's throttled message for a wait of ``wait`` seconds."""
    return f"Request was throttled. Expected available in {wait} second{'' if wait == 1 else 's'}."


async def _respond(send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_throttled(send: Send, wait: int) -> None:
    body = dumps_json({"detail": throttle_detail(wait)}).encode()
    await _respond(send, 429, body, b"application/json", [(b"retry-after", b"%d" % wait)])


class FaultMiddleware:
    """ASGI middleware applying the rate limit and injecting latency, 429s, 500s and dropped connections into Campfire paths.

    A request refused by the rate limit is answered 429 at once (no latency). A throttle or failure
    answers before the app runs, so nothing is committed. A drop lets the app
    run to the end (the change is committed) and then sends only the response headers before
    raising ``DroppedConnection``. A bodiless response (204) is announced as a 200 with a one-byte
    body for the drop, since a complete 204 could not be cut short.
    """

    def __init__(self, app: ASGIApp, injector: FaultInjector, stats: Stats) -> None:
        self.app = app
        self.injector = injector
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        self.stats.request(scope["method"])
        wait = self.injector.admit()
        if wait:
            self.stats.rate_limited(scope["method"])
            self.stats.response(429)
            await _respond_throttled(send, wait)
            return
        settings = self.injector.settings
        if settings.latency_ms > 0:
            self.stats.add("delayed")
            await asyncio.sleep(settings.latency_ms / 1000)
        fault = self.injector.draw()
        if fault is Fault.THROTTLE:
            self.stats.add("throttled")
            self.stats.response(429)
            await _respond_throttled(send, settings.retry_after_seconds)
            return
        if fault is Fault.FAIL:
            self.stats.add("failed")
            self.stats.response(500)
            await _respond(send, 500, _SERVER_ERROR, b"text/html; charset=utf-8", [])
            return
        if fault is Fault.DROP:
            await self._drop(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.stats.response(message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        self.stats.add("dropped")
        status = start["status"] if start else 200
        headers = [(k, v) for k, v in (start["headers"] if start else []) if k.lower() != b"content-length"]
        if not body:
            status = 200 if status == 204 else status
        headers.append((b"content-length", str(max(len(body), 1)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        raise DroppedConnection(f"{scope['method']} {scope['path']}: response dropped by fault injection")

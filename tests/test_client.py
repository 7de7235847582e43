"""Tests of invoicesync.client: auth, errors, retries, throttling, pagination and exactly-once creates.

The real sandbox answers wherever it can: requests on the wire, validation and auth errors, faults
(5xx, 429, commit-then-drop), exactly-once creates, look-ups, pagination, void/pay/delete after a lost
reply, and one run over real loopback HTTP. ``httpx.MockTransport`` only stages what the sandbox
cannot: a ``next`` link to another origin, an HTML 502, an HTTP-date or sub-second ``Retry-After``,
a server echoing the key, a listed ``is_deleted`` invoice, and transport errors other than a dropped
connection (read timeout, read/write errors, refused connects) at a chosen moment.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from invoicesync.client import CampfireClient, InvoiceLookup
from invoicesync.client._support import _retry_after
from invoicesync.errors import ApiConnectionError, ApiError
from invoicesync.models import dumps_json, loads_json
from invoicesync.sandbox import FaultSettings, Sandbox
from invoicesync.sandbox.server import BackgroundServer

BASE = "https://api.campfire.test"
SANDBOX_URL = "http://sandbox.test"
KEY = "sk-live-7f3c9a1bd2e84b66"
INVOICES = "/coa/api/v1/invoice/"
PAYMENT = {"empty_transactions": [
    {"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": Decimal("10.50"),
     "payment_date": "2025-07-10"}
]}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def body(n: int = 1, **over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "entity": 54,
        "client": 33973,
        "invoice_date": "2025-07-01",
        "due_date": "2025-07-31",
        "terms": "net_30",
        "currency": "USD",
        "source": "invoicesync",
        "source_id": f"lineage/inv-{n}",
        "lines": [
            {"product": 2545, "description": "Subscription", "quantity": Decimal(1), "rate": Decimal("6249.99"),
             "tax": Decimal("0.01")}
        ],
    }
    b.update(over)
    return b


def errors_text(exc: BaseException) -> str:
    """Everything a user or a log could show of an exception chain."""
    parts = []
    e: BaseException | None = exc
    while e is not None:
        parts += [str(e), repr(e), repr(getattr(e, "body", None))]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


# --- the sandbox and what sits on its wire ---------------------------------------------------------


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(tokens=(KEY,), honour_idempotency=False)


class Wire(httpx.AsyncBaseTransport):
    """Passes requests to the sandbox and keeps them; ``before`` runs before each one reaches it,
    ``after_first`` once the first is done (to switch the sandbox's faults at a chosen moment)."""

    def __init__(
        self,
        sb: Sandbox,
        after_first: Callable[[], None] | None = None,
        before: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self.inner = sb.transport()
        self.after_first = after_first
        self.before = before
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.before is not None:
            self.before(request)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            if self.after_first is not None and len(self.requests) == 1:
                self.after_first()

    def sent(self, method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method]


def client_on(transport: httpx.AsyncBaseTransport, base: str = SANDBOX_URL, **kw: Any) -> CampfireClient:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.005)
    return CampfireClient(base, KEY, transport=transport, **kw)


def faults_then_none(sb: Sandbox, **kw: Any) -> Wire:
    """Faults on the next request only: ``kw`` applies to it, then the sandbox behaves."""
    sb.set_faults(FaultSettings(**kw))
    return Wire(sb, after_first=lambda: sb.set_faults(FaultSettings()))


async def create(client: CampfireClient, b: dict[str, Any]) -> Any:
    key = f"key-{b.get('source_id') or b.get('invoice_number')}"
    return await client.create_invoice(b, idempotency_key=key, lookup=InvoiceLookup.from_body(b))


async def create_many(client: CampfireClient, bodies: list[dict[str, Any]]) -> list[Any]:
    return await asyncio.gather(*(create(client, b) for b in bodies))


def seed(sb: Sandbox, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    """Invoices created on the sandbox with no faults."""

    async def main() -> list[dict[str, Any]]:
        async with client_on(sb.transport()) as client:
            return [(await create(client, b)).invoice for b in bodies]

    invoices: list[dict[str, Any]] = run(main())
    return invoices


# --- requests on the wire ---------------------------------------------------------------------------


def test_create_sends_token_auth_idempotency_key_and_exact_decimals(sandbox: Sandbox) -> None:
    wire = Wire(sandbox)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await client.create_invoice(body(), idempotency_key="k-1", lookup=InvoiceLookup.from_body(body()))

    result = run(main())
    (request,) = wire.requests
    assert request.method == "POST" and request.url == SANDBOX_URL + INVOICES
    assert request.headers["authorization"] == f"Token {KEY}"
    assert request.headers["idempotency-key"] == "k-1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("invoicesync/")
    assert b'"rate":6249.99' in request.content and b'"tax":0.01' in request.content
    assert b'"quantity":1' in request.content
    assert not result.found_by_lookup and result.attempts == 1
    assert result.invoice["id"] == sandbox.invoices()[0]["id"]
    assert result.invoice["total_amount"] == Decimal("6250")
    assert isinstance(result.invoice["lines"][0]["rate"], Decimal)


def test_list_invoices_sends_repeated_filters_and_never_download(sandbox: Sandbox) -> None:
    wire = Wire(sandbox)

    async def main() -> None:
        async with client_on(wire) as client:
            assert await client.list_invoices(entity=54, client=[1, 2], start_date="2025-07-01", contract=None) == []
            with pytest.raises(ValueError, match="download"):
                await client.list_invoices(download=True)

    run(main())
    (request,) = wire.requests
    params = request.url.params
    assert params.get_list("client") == ["1", "2"]
    assert params["entity"] == "54" and params["start_date"] == "2025-07-01" and params["limit"] == "1000"
    assert "contract" not in params and "download" not in params


# --- error mapping ------------------------------------------------------------------------------------


def test_unknown_product_is_an_api_error_on_the_line_field_and_not_retried(sandbox: Sandbox) -> None:
    b = body(1)
    b["lines"][0]["product"] = 999
    wire = Wire(sandbox)

    async def main() -> None:
        async with client_on(wire) as client:
            await create(client, b)

    with pytest.raises(ApiError) as info:
        run(main())
    assert str(info.value) == (
        'POST /coa/api/v1/invoice/ failed: 400 Bad Request: lines[0].product: Invalid pk "999" - object does not exist.'
    )
    assert info.value.status == 400 and info.value.method == "POST" and info.value.path == INVOICES
    assert info.value.field_errors == [("lines[0].product", 'Invalid pk "999" - object does not exist.')]
    assert len(wire.requests) == 1 and sandbox.invoices() == []


def test_wrong_key_is_a_401_naming_the_key_variable_but_not_the_key() -> None:
    sb = Sandbox(tokens=("the-right-key",))

    async def main() -> None:
        async with client_on(sb.transport(), api_key_name="ACME_CAMPFIRE_KEY") as client:
            await client.get_invoice(5)

    with pytest.raises(ApiError) as info:
        run(main())
    message = str(info.value)
    assert info.value.status == 401
    assert message.startswith("GET /coa/api/v1/invoice/5/ failed: 401 Unauthorized: ")
    assert "Check the API key in ACME_CAMPFIRE_KEY" in message
    assert KEY not in errors_text(info.value)


def test_get_invoice_returns_none_on_404(sandbox: Sandbox) -> None:
    async def main() -> Any:
        async with client_on(sandbox.transport()) as client:
            return await client.get_invoice(404404)

    assert run(main()) is None


def test_exhausted_connection_errors_raise_a_readable_api_connection_error() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CampfireClient(f"http://127.0.0.1:{port}", KEY, max_attempts=3, backoff_base=0.001)

    async def main() -> None:
        async with client:
            await client.get_invoice(1)

    with pytest.raises(ApiConnectionError) as info:
        run(main())
    message = str(info.value)
    assert message.startswith("GET /coa/api/v1/invoice/1/ failed after 3 attempts: could not connect (ConnectError")
    assert message.endswith("Campfire at 127.0.0.1 may be down or unreachable.")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert client.stats.requests == 3 and client.stats.retries == 2
    assert KEY not in errors_text(info.value)


# --- exactly-once creates and look-ups ------------------------------------------------------------------


def test_exactly_once_under_drops_5xx_and_429s_with_idempotency_ignored(sandbox: Sandbox) -> None:
    # Only one request in ten gets through untouched; the look-ups are faulted as much as the creates.
    sandbox.set_faults(FaultSettings(fail_rate=0.3, throttle_rate=0.3, drop_rate=0.3, seed=7, retry_after=0))
    bodies = [body(n) for n in range(50)]

    async def main(client: CampfireClient) -> list[Any]:
        async with client:
            return await create_many(client, bodies)

    client = client_on(sandbox.transport(), max_attempts=100)
    results = run(main(client))
    counters = sandbox.stats()
    sandbox.set_faults(FaultSettings())
    stored = sandbox.invoices()
    assert len(stored) == 50
    assert sorted(i["source_id"] for i in stored) == sorted(b["source_id"] for b in bodies)
    assert sorted(r.invoice["id"] for r in results) == sorted(i["id"] for i in stored)
    assert client.stats.found_by_lookup == sum(r.found_by_lookup for r in results) > 0
    assert client.stats.throttled > 0 and client.stats.retries > 0
    assert counters["dropped"] > 0 and counters["failed"] > 0


def test_exactly_once_over_loopback_http_under_faults(sandbox: Sandbox) -> None:
    sandbox.set_faults(FaultSettings(fail_rate=0.15, throttle_rate=0.15, drop_rate=0.25, seed=11, retry_after=0))
    bodies = [body(n) for n in range(20)]

    async def main(url: str) -> list[Any]:
        async with CampfireClient(url, KEY, backoff_base=0.001, backoff_max=0.005, max_attempts=30,
                                  read_timeout=10) as client:
            return await create_many(client, bodies)

    with BackgroundServer(sandbox, port=0) as url:
        results = run(main(url))
    counters = sandbox.stats()
    sandbox.set_faults(FaultSettings())
    stored = sandbox.invoices()
    assert sorted(i["source_id"] for i in stored) == sorted(b["source_id"] for b in bodies)
    assert sorted(r.invoice["id"] for r in results) == sorted(i["id"] for i in stored)
    assert counters["dropped"] > 0 and counters["failed"] > 0 and counters["throttled"] > 0
    assert any(r.found_by_lookup for r in results)


def test_dropped_create_is_found_by_lookup_not_sent_again(sandbox: Sandbox) -> None:
    wire = faults_then_none(sandbox, drop_rate=1)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await create(client, body(1)), client.stats

    result, stats = run(main())
    (stored,) = sandbox.invoices()
    assert result.found_by_lookup and result.invoice["id"] == stored["id"] and result.attempts == 1
    assert len(wire.sent("POST")) == 1 and len(wire.sent("GET")) == 1
    assert stats.lookups == 1 and stats.found_by_lookup == 1


def test_create_after_a_5xx_looks_up_then_resends_when_not_found(sandbox: Sandbox) -> None:
    wire = faults_then_none(sandbox, fail_rate=1)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await create(client, body(1))

    result = run(main())
    (stored,) = sandbox.invoices()
    assert not result.found_by_lookup and result.attempts == 2 and result.invoice["id"] == stored["id"]
    assert [r.method for r in wire.requests] == ["POST", "GET", "POST"]
    assert wire.requests[0].headers["idempotency-key"] == wire.requests[2].headers["idempotency-key"]


def test_429_on_create_is_retried_without_lookup(sandbox: Sandbox) -> None:
    wire = faults_then_none(sandbox, throttle_rate=1, retry_after=0)

    async def main() -> Any:
        async with client_on(wire, max_attempts=1) as client:
            return await create(client, body(1)), client.stats

    result, stats = run(main())
    assert [r.method for r in wire.requests] == ["POST", "POST"] and len(sandbox.invoices()) == 1
    assert not result.found_by_lookup and stats.throttled == 1 and stats.lookups == 0


def test_find_invoice_after_an_ambiguous_failure(sandbox: Sandbox) -> None:
    sandbox.set_faults(FaultSettings(drop_rate=1))
    b = body(1)
    lookup = InvoiceLookup.from_body(b)

    async def main() -> Any:
        async with client_on(sandbox.transport(), max_attempts=1) as client:
            with pytest.raises(ApiConnectionError, match="outcome unknown"):
                await client.create_invoice(b, idempotency_key="k", lookup=lookup)
            sandbox.set_faults(FaultSettings())
            return await client.find_invoice(lookup), await client.find_invoice(InvoiceLookup.from_body(body(2)))

    found, missing = run(main())
    (stored,) = sandbox.invoices()
    assert found["id"] == stored["id"] and found["source_id"] == b["source_id"]
    assert missing is None


def test_lookup_matches_source_id_and_skips_voided_invoices(sandbox: Sandbox) -> None:
    voided, other, live = seed(sandbox, body(1), body(2), body(1))

    async def main() -> Any:
        async with client_on(sandbox.transport()) as client:
            await client.void_invoice(voided["id"], "2025-07-02")
            return await client.find_invoice(InvoiceLookup.from_body(body(1)))

    assert run(main())["id"] == live["id"]


def test_lookup_without_source_id_matches_invoice_number_and_filters_by_it(sandbox: Sandbox) -> None:
    b = body(1, invoice_number="ACME-7")
    del b["source_id"]
    (created,) = seed(sandbox, b)
    seed(sandbox, body(2, invoice_number="ACME-70"))
    wire = Wire(sandbox)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await client.find_invoice(InvoiceLookup.from_body(b))

    assert run(main())["id"] == created["id"]
    assert dict(wire.requests[0].url.params) == {
        "entity": "54", "client": "33973", "start_date": "2025-07-01", "end_date": "2025-07-01",
        "invoice_number": "ACME-7", "limit": "1000",
    }


def test_invoice_lookup_round_trips_and_reads_numeric_strings() -> None:
    lookup = InvoiceLookup.from_body(body(1, entity="54", client="33973", invoice_number="N-1"))
    assert lookup == InvoiceLookup(54, 33973, "2025-07-01", "N-1", "lineage/inv-1")
    assert InvoiceLookup.from_dict(loads_json(dumps_json(lookup.to_dict()))) == lookup
    with pytest.raises(ValueError, match="source_id or an invoice_number"):
        InvoiceLookup(54, None, "2025-07-01", None, None)


# --- other writes whose reply is lost -------------------------------------------------------------------


def test_delete_counts_404_after_a_lost_reply_as_done_but_not_a_first_404(sandbox: Sandbox) -> None:
    (invoice,) = seed(sandbox, body(1))
    wire = faults_then_none(sandbox, drop_rate=1)

    async def main() -> None:
        async with client_on(wire) as client:
            await client.delete_invoice(invoice["id"])
            with pytest.raises(ApiError, match="404 Not Found"):
                await client.delete_invoice(invoice["id"])

    run(main())
    assert [r.method for r in wire.requests] == ["DELETE", "DELETE", "DELETE"]
    assert sandbox.invoices() == []


def test_void_after_a_lost_reply_reads_the_invoice_instead_of_voiding_twice(sandbox: Sandbox) -> None:
    (invoice,) = seed(sandbox, body(1))
    wire = faults_then_none(sandbox, drop_rate=1)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await client.void_invoice(invoice["id"], "2025-07-31")

    voided = run(main())
    assert voided["status"] == "voided" and voided["voided_date"] == "2025-07-31"
    assert [r.method for r in wire.requests] == ["POST", "GET"]
    assert loads_json(wire.requests[0].content) == {"void_date": "2025-07-31"}


def test_pay_after_a_lost_reply_is_not_recorded_twice(sandbox: Sandbox) -> None:
    (invoice,) = seed(sandbox, body(1))

    def drop_the_payment(request: httpx.Request) -> None:
        sandbox.set_faults(FaultSettings(drop_rate=1 if request.method == "POST" else 0))

    wire = Wire(sandbox, before=drop_the_payment)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await client.pay_invoice(invoice["id"], PAYMENT)

    paid = run(main())
    assert [r.method for r in wire.requests] == ["GET", "POST", "GET"]
    assert paid["amount_paid"] == Decimal("10.50") and len(paid["payments"]) == 1
    assert paid["payment_status"] == "partial"


# --- throttling -------------------------------------------------------------------------------------------


def test_throttling_longer_than_max_throttle_wait_fails_at_once_with_429(sandbox: Sandbox) -> None:
    sandbox.set_faults(FaultSettings(throttle_rate=1, retry_after=120))

    async def main() -> None:
        async with client_on(sandbox.transport(), max_throttle_wait=60) as client:
            await client.get_invoice(1)

    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        run(main())
    assert time.monotonic() - started < 1  # gives up at once rather than sleeping into the limit
    assert info.value.status == 429
    assert str(info.value).startswith("GET /coa/api/v1/invoice/1/ failed: 429 Too Many Requests: ")
    assert "60 s" in str(info.value)


# --- pagination -------------------------------------------------------------------------------------------


def test_pagination_joins_every_page(sandbox: Sandbox) -> None:
    seed(sandbox, *(body(n, client=33973 + n % 2) for n in range(25)))
    wire = Wire(sandbox)

    async def main() -> Any:
        async with client_on(wire) as client:
            return await client.list_invoices(entity=54, client=[33973, 33974], limit=10)

    listed = run(main())
    assert len(listed) == 25 and len({i["id"] for i in listed}) == 25
    assert len(wire.requests) == 3 and all(r.url.host == "sandbox.test" for r in wire.requests)


# --- replies the sandbox cannot produce (httpx.MockTransport) ---------------------------------------------


def reply(status: int, data: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = b"" if data is None else dumps_json(data).encode()
    h = {"content-type": "application/json"} if data is not None else {}
    h.update(headers or {})
    return httpx.Response(status, content=content, headers=h)


def invoice_json(id_: int, b: dict[str, Any], **over: Any) -> dict[str, Any]:
    inv = {"id": id_, "status": "open", "payment_status": "open", "is_deleted": False, **b}
    inv.update(over)
    return inv


def mock_client(handler: Callable[[httpx.Request], Any], **kw: Any) -> CampfireClient:
    return client_on(httpx.MockTransport(handler), BASE, **kw)


def test_html_502_is_summarised_after_retries() -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
        "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>" + "x" * 5000 + "</body></html>"
    )
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(502, text=page, headers={"content-type": "text/html"})

    async def main() -> None:
        async with mock_client(handler, max_attempts=3) as client:
            await client.update_invoice(9, {"due_date": "2025-08-01"})

    with pytest.raises(ApiError) as info:
        run(main())
    assert calls == 3
    assert info.value.status == 502
    assert str(info.value) == "PATCH /coa/api/v1/invoice/9/ failed: 502 Bad Gateway: 502 Bad Gateway (gave up after 3 attempts)"


def test_api_key_never_appears_in_errors_repr_stats_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/1/"):
            return reply(401, {"detail": f"Invalid token {KEY}."})  # a server echoing the key
        if path.endswith("/2/"):
            return reply(403, {"detail": "You do not have permission to perform this action."})
        if path.endswith("/3/"):
            return httpx.Response(500, text=f"<html><body>Traceback: token={KEY}</body></html>")
        if path.endswith("/4/"):
            raise httpx.ReadTimeout("timed out", request=request)
        if path.endswith("/5/"):
            return reply(429, {"detail": "Request was throttled."}, {"Retry-After": "3600"})
        return reply(200, {"count": 1, "next": "https://evil.example/coa/api/v1/invoice/?offset=1", "results": []})

    async def main(client: CampfireClient) -> list[BaseException]:
        caught: list[BaseException] = []
        async with client:
            for call in (
                lambda: client.get_invoice(1),
                lambda: client.get_invoice(2),
                lambda: client.get_invoice(3),
                lambda: client.get_invoice(4),
                lambda: client.get_invoice(5),
                lambda: client.list_invoices(entity=54),
            ):
                try:
                    await call()
                except ApiError as exc:
                    caught.append(exc)
        return caught

    caplog.set_level(logging.DEBUG)
    client = mock_client(handler, max_attempts=2)
    caught = run(main(client))
    assert len(caught) == 6
    assert KEY not in "\n".join(errors_text(e) for e in caught)
    assert KEY not in repr(client) and "hidden" in repr(client)
    assert KEY not in repr(client.stats) and KEY not in str(vars(client.stats))
    assert KEY not in caplog.text
    assert [getattr(e, "status", None) for e in caught] == [401, 403, 500, None, 429, None]


class FakeCampfire:
    """A tiny stand-in for moments the sandbox cannot stage: a refused connect, or a commit whose
    reply is lost to a read timeout or a read/write error."""

    def __init__(self, post_faults: list[type[httpx.TransportError] | None]) -> None:
        self.post_faults = post_faults
        self.invoices: list[dict[str, Any]] = []
        self.posts = 0
        self.gets = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets += 1
            sid_matches = [
                i for i in self.invoices
                if i["entity"] == int(request.url.params["entity"])
                and i["invoice_date"] == request.url.params["start_date"] == request.url.params["end_date"]
            ]
            return reply(200, {"count": len(sid_matches), "next": None, "previous": None, "results": sid_matches})
        self.posts += 1
        fault = self.post_faults.pop(0) if self.post_faults else None
        if fault is httpx.ConnectError:
            raise httpx.ConnectError("refused", request=request)  # nothing sent, nothing created
        inv = invoice_json(100 + len(self.invoices), loads_json(request.content))
        self.invoices.append(inv)
        if fault is not None:
            raise fault("lost after commit", request=request)
        return reply(201, inv)


@pytest.mark.parametrize("fault", [httpx.ReadTimeout, httpx.ReadError, httpx.WriteError])
def test_create_with_lost_reply_is_found_by_lookup_not_sent_again(fault: type[httpx.TransportError]) -> None:
    fake = FakeCampfire([fault])

    async def main(client: CampfireClient) -> Any:
        async with client:
            return await client.create_invoice(body(), idempotency_key="k", lookup=InvoiceLookup.from_body(body()))

    client = mock_client(fake)
    result = run(main(client))
    assert result.found_by_lookup and result.invoice["id"] == 100 and result.attempts == 1
    assert fake.posts == 1 and fake.gets == 1 and len(fake.invoices) == 1
    assert client.stats.lookups == 1 and client.stats.found_by_lookup == 1


def test_create_after_connect_error_retries_without_lookup() -> None:
    fake = FakeCampfire([httpx.ConnectError, httpx.ConnectError])

    async def main(client: CampfireClient) -> Any:
        async with client:
            return await client.create_invoice(body(), idempotency_key="k", lookup=InvoiceLookup.from_body(body()))

    client = mock_client(fake)
    result = run(main(client))
    assert not result.found_by_lookup and result.attempts == 3
    assert fake.posts == 3 and fake.gets == 0 and client.stats.lookups == 0


def test_create_with_every_attempt_lost_finds_it_on_the_last_lookup() -> None:
    fake = FakeCampfire([httpx.ConnectError, httpx.ReadTimeout])

    async def main(client: CampfireClient) -> Any:
        async with client:
            return await client.create_invoice(body(), idempotency_key="k", lookup=InvoiceLookup.from_body(body()))

    result = run(main(mock_client(fake, max_attempts=2)))
    assert result.found_by_lookup and fake.posts == 2 and len(fake.invoices) == 1


def test_create_is_not_resent_when_the_lookup_itself_fails() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            raise httpx.ReadTimeout("timed out", request=request)
        raise httpx.ConnectError("refused", request=request)

    async def main() -> None:
        async with mock_client(handler, max_attempts=2) as client:
            await client.create_invoice(body(), idempotency_key="k", lookup=InvoiceLookup.from_body(body()))

    with pytest.raises(ApiConnectionError) as info:
        run(main())
    assert posts == 1
    assert str(info.value).startswith(
        "POST /coa/api/v1/invoice/: outcome unknown: the request may have taken effect (no response within 60 s"
    )
    assert "checking whether it did failed too: GET /coa/api/v1/invoice/ failed after 2 attempts" in str(info.value)


def test_lookup_skips_listed_deleted_invoices_and_picks_the_newest_match() -> None:
    wanted = body(1)
    listing = [
        invoice_json(1, body(2)),  # another source_id
        invoice_json(4, wanted),
        invoice_json(2, wanted),  # an older duplicate (should not exist; the newest wins)
        invoice_json(5, wanted, is_deleted=True),  # the sandbox never lists deleted invoices
        invoice_json(6, wanted, status="voided", payment_status="voided"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, {"count": 4, "next": None, "previous": None, "results": listing})

    async def main() -> Any:
        async with mock_client(handler) as client:
            found = await client.find_invoice(InvoiceLookup.from_body(wanted))
            missing = await client.find_invoice(InvoiceLookup.from_body(body(3)))
            return found, missing

    found, missing = run(main())
    assert found["id"] == 4 and missing is None


def test_retry_after_parses_seconds_fractions_and_http_dates() -> None:
    assert _retry_after("0") == 0 and _retry_after("1.5") == 1.5 and _retry_after(" 2 ") == 2
    assert _retry_after(None) is None and _retry_after("soon") is None and _retry_after("-1") is None
    assert _retry_after("inf") is None and _retry_after("NaN") is None and _retry_after("1e400") is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (_retry_after(later) or 0) <= 30
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert _retry_after(past) is None  # no instruction: the usual back-off


def test_http_date_retry_after_is_honoured() -> None:
    sends: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sends.append(time.monotonic())
        if len(sends) == 1:
            when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1.2), usegmt=True)
            return reply(429, {"detail": "Request was throttled."}, {"Retry-After": when})
        return reply(200, {"id": 1})

    async def main(client: CampfireClient) -> Any:
        async with client:
            return await client.get_invoice(1)

    client = mock_client(handler, max_attempts=1)
    assert run(main(client)) == {"id": 1}
    # HTTP-dates have whole-second resolution: Campfire's wait is between 0.2 and 1.2 s, spread by up
    # to half as long again.
    assert 0.15 <= sends[1] - sends[0] <= 2.1
    assert client.stats.throttled == 1 and client.stats.throttle_wait_seconds > 0.1


def test_retry_after_holds_back_the_throttled_request_and_paces_the_others() -> None:
    """A 429 makes its request wait for Retry-After; the others are paced, not held for it, and never together."""
    sends: list[tuple[str, float]] = []
    throttled_at: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sends.append((request.url.path, time.monotonic()))
        if request.url.path.endswith("/1/") and not throttled_at:
            throttled_at.append(time.monotonic())
            return reply(429, {"detail": "Request was throttled."}, {"Retry-After": "0.4"})
        await asyncio.sleep(0.01)
        return reply(200, {"id": 1})

    async def main(client: CampfireClient) -> None:
        async with client:
            first = asyncio.create_task(client.get_invoice(1))
            while not client.stats.throttled:  # the client has seen the 429
                await asyncio.sleep(0.001)
            await asyncio.gather(first, *(client.get_invoice(n) for n in range(2, 12)))

    client = mock_client(handler, max_attempts=1)  # 429s do not count against max_attempts
    run(main(client))
    again = [t for path, t in sends[1:] if path.endswith("/1/")]
    others = sorted(t for path, t in sends if not path.endswith("/1/"))
    assert len(again) == 1 and 0.4 <= again[0] - throttled_at[0] <= 0.4 * 1.5 + 0.1
    assert len(others) == 10 and others[0] < throttled_at[0] + 0.2  # not held for Retry-After
    assert client.pacer.rate is not None  # ... but paced from the 429 on: ten slots take nine slot gaps
    assert others[-1] - others[0] >= 0.5 * 9 / client.pacer.rate
    assert client.stats.throttled == 1 and 0.4 <= client.stats.throttle_wait_seconds <= 0.6


def test_relative_and_absolute_next_links_on_the_base_origin_are_followed() -> None:
    pages = {
        "0": ("/coa/api/v1/invoice/?entity=54&limit=2&offset=2", [{"id": 1}, {"id": 2}]),
        "2": (BASE + ":443/coa/api/v1/invoice/?entity=54&limit=2&offset=4&download=true", [{"id": 3}, {"id": 4}]),
        "4": (None, [{"id": 5}]),
    }
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        nxt, results = pages[request.url.params.get("offset", "0")]
        return reply(200, {"count": 5, "next": nxt, "previous": None, "results": results})

    async def main() -> Any:
        async with mock_client(handler) as client:
            return await client.list_invoices(entity=54, limit=2)

    assert [i["id"] for i in run(main())] == [1, 2, 3, 4, 5]
    assert len(seen) == 3 and all(u.host == "api.campfire.test" for u in seen)
    assert all("download" not in u.params for u in seen)


def test_pages_after_the_first_are_read_together_by_offset_on_the_base_url() -> None:
    """With ``concurrency``, the pages up to the first page's count are read at once, in order, on the base URL."""
    invoices = [{"id": n} for n in range(1, 24)]
    seen: list[httpx.URL] = []
    in_flight = high = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, high
        seen.append(request.url)
        in_flight += 1
        high = max(high, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        offset, limit = int(request.url.params.get("offset", "0")), int(request.url.params["limit"])
        nxt = (f"https://other.example/coa/api/v1/invoice/?entity=54&limit={limit}&offset={offset + limit}"
               if offset + limit < len(invoices) else None)
        if offset == 0 and nxt:
            nxt = nxt.replace("https://other.example", BASE)  # only the first link is followed as such
        return reply(200, {"count": len(invoices), "next": nxt, "previous": None,
                           "results": invoices[offset:offset + limit]})

    async def main() -> Any:
        async with mock_client(handler) as client:
            return await client.list_invoices_up_to(100, concurrency=3, entity=54, limit=5)

    assert run(main()) == invoices
    assert len(seen) == 5 and high == 3
    assert all(u.host == "api.campfire.test" and u.params["entity"] == "54" for u in seen)


def test_a_listing_larger_than_asked_is_given_up_after_its_first_page() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return reply(200, {"count": 5000, "next": BASE + "/coa/api/v1/invoice/?limit=2&offset=2", "previous": None,
                           "results": [{"id": 1}, {"id": 2}]})

    async def main() -> Any:
        async with mock_client(handler) as client:
            return await client.list_invoices_up_to(4999, concurrency=8, limit=2)

    assert run(main()) is None and len(seen) == 1


def test_cursor_pages_are_followed_one_after_another_even_with_concurrency() -> None:
    pages = {"": ("?cursor=b", [{"id": 1}]), "b": ("?cursor=c", [{"id": 2}]), "c": (None, [{"id": 3}])}
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        nxt, results = pages[request.url.params.get("cursor", "")]
        return reply(200, {"count": 3, "next": nxt and "/coa/api/v1/invoice/" + nxt, "previous": None,
                           "results": results})

    async def main() -> Any:
        async with mock_client(handler) as client:
            return await client.list_invoices_up_to(10, concurrency=4)

    assert [i["id"] for i in run(main())] == [1, 2, 3] and len(seen) == 3


@pytest.mark.parametrize("foreign", [
    "https://evil.example/coa/api/v1/invoice/?offset=2",
    "http://api.campfire.test/coa/api/v1/invoice/?offset=2",  # scheme downgrade
    "https://api.campfire.test:8443/coa/api/v1/invoice/?offset=2",  # other port
    "//evil.example/coa/api/v1/invoice/?offset=2",  # scheme-relative
])
def test_next_link_to_another_origin_is_refused_without_sending_the_key(foreign: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, {"count": 2, "next": foreign, "previous": None, "results": [{"id": 1}]})

    async def main() -> None:
        async with mock_client(handler) as client:
            await client.list_invoices(entity=54)

    with pytest.raises(ApiError) as info:
        run(main())
    assert len(seen) == 1 and seen[0].url.host == "api.campfire.test" and seen[0].url.port is None
    assert "not following it" in str(info.value) and "API key" in str(info.value)
    assert KEY not in errors_text(info.value)

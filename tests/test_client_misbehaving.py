"""The client against real loopback servers that misbehave: bounded in time and pages, quiet about the key.

Each test starts a ``tests.misbehaving.MisbehavingServer`` on 127.0.0.1 that misbehaves in exactly one
way (echoes the key, trickles its answer, paginates forever, asks to wait until 2099, answers a create
without an id, reports an amount that is not a number) and drives the real ``CampfireClient`` at it
over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from invoicesync.client import CampfireClient, InvoiceLookup
from invoicesync.errors import ApiConnectionError, ApiError, ConfigError, CreateUnsettled
from tests.misbehaving import MisbehavingServer, Out, Request, response_bytes

KEY = "sk-live-7f3c9a1bd2e84b66"
INVOICES = "/coa/api/v1/invoice/"


def body(n: int = 1) -> dict[str, Any]:
    return {
        "entity": 54, "client": 33973, "invoice_date": "2025-07-01", "due_date": "2025-07-31", "terms": "net_30",
        "currency": "USD", "source": "invoicesync", "source_id": f"lineage/inv-{n}",
        "lines": [{"product": 2545, "description": "Subscription", "quantity": 1, "rate": "100.00"}],
    }


def errors_text(exc: BaseException) -> str:
    """Everything a user, a log or a traceback could show of an exception and its chain."""
    parts: list[str] = []
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(getattr(e, "body", None)), repr(getattr(e, "field_errors", None))]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return "\n".join(parts)


def run_client(
    url: str, call: Callable[[CampfireClient], Awaitable[Any]], *, key: str = KEY, **kw: Any
) -> tuple[Any, BaseException | None, CampfireClient, float]:
    """Run ``call`` on a fresh client of ``url``: (result, exception raised, the client, seconds taken)."""
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.005)
    kw.setdefault("read_timeout", 5)
    client = CampfireClient(url, key, **kw)

    async def main() -> Any:
        async with client:
            return await call(client)

    started = time.monotonic()
    try:
        result, error = asyncio.run(main()), None
    except ApiError as exc:
        result, error = None, exc
    return result, error, client, time.monotonic() - started


def invoice(id_: Any, **over: Any) -> dict[str, Any]:
    return {"id": id_, "status": "open", "payment_status": "open", "is_deleted": False, **body(), **over}


def create(b: dict[str, Any], settle: float = 0.0) -> Callable[[CampfireClient], Awaitable[Any]]:
    return lambda c: c.create_invoice(b, idempotency_key="k", lookup=InvoiceLookup.from_body(b), settle=settle)


def page(results: list[Any], next_link: str | None = None, count: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"next": next_link, "previous": None, "results": results}
    if count is not None:
        data["count"] = count
    return data


# --- 1. the key never shows, however the server echoes it --------------------------------------------------

# (status, body, content type, the form of the key in the body)
ECHOES = {
    "header-like text": (400, f"Authorization: Token {KEY}\r\nAccept: application/json", "text/plain", KEY),
    "json detail": (400, json.dumps({"detail": f"Invalid token {KEY}."}), "application/json", KEY),
    "json field name": (400, json.dumps({KEY: ["Unknown field."]}), "application/json", KEY),
    "html page": (500, f"<html><head><title>Error</title></head><body><pre>HTTP_AUTHORIZATION='Token {KEY}'"
                       "</pre></body></html>", "text/html", KEY),
    "html entities": (500, "<html><title>Bad token &#115;k-live-7f3c9a1bd2e84b66</title></html>", "text/html",
                      "&#115;k-live-7f3c9a1bd2e84b66"),
    "json escapes in a text page": (502, '<pre>{"auth": "Token sk-li\\u0076e-7f3c\\u0039a1bd2e84b66"}</pre>',
                                    "text/html", "sk-li\\u0076e-7f3c\\u0039a1bd2e84b66"),
    "json escapes in json": (400, '{"detail": "Token sk-li\\u0076e-7f3c\\u0039a1bd2e84b66", "key": "sk\\/x"}',
                             "application/json", "sk-li\\u0076e-7f3c\\u0039a1bd2e84b66"),
    "percent-encoded": (400, "denied: /login?token=sk%2Dlive%2d7f3c9a1bd2e84b66&next=/", "text/plain",
                        "sk%2Dlive%2d7f3c9a1bd2e84b66"),
    "python repr": (500, "KeyError: b'Token sk-live-7f3c9a1bd2e84b66\\x00'", "text/plain", KEY),
}


@pytest.mark.parametrize("style", list(ECHOES))
def test_key_echoed_in_an_error_body_never_shows(style: str) -> None:
    status, text, ctype, form = ECHOES[style]

    async def answer(request: Request, out: Out) -> None:
        await out.reply(status, text.encode(), content_type=ctype)

    with MisbehavingServer(answer) as url:
        _, error, _, _ = run_client(url, lambda c: c.get_invoice(7), max_attempts=2)
    assert isinstance(error, ApiError) and error.status == status
    assert str(error).startswith(f"GET /coa/api/v1/invoice/7/ failed: {status} ")
    shown = errors_text(error)
    assert KEY not in shown and form not in shown
    assert "<hidden>" in str(error) or "<hidden>" in repr(error.body)


CUT = {
    # The key straddles the point where a message is shortened: the part before the cut must not show.
    "error summary": (400, b"Content-Type: text/plain\r\n", b"x" * 190 + f" Token {KEY} ".encode() + b"y" * 50),
    "unreadable success body": (200, b"Content-Type: text/plain\r\n", b"x" * 140 + f" Token {KEY} ".encode()),
    "httpx error text": (200, b"X-Pad" + b"p" * 115 + b" Token " + KEY.encode() + b"\r\n", b""),
}


@pytest.mark.parametrize("where", list(CUT))
def test_key_cut_by_a_shortened_message_leaves_no_fragment(where: str) -> None:
    status, headers, content = CUT[where]

    async def answer(request: Request, out: Out) -> None:
        await out.raw(f"HTTP/1.1 {status} X\r\nContent-Length: {len(content)}\r\n".encode() + headers + b"\r\n" + content)

    with MisbehavingServer(answer) as url:
        _, error, _, _ = run_client(url, lambda c: c.get_invoice(7), max_attempts=1)
    assert error is not None
    assert KEY[:6] not in errors_text(error)


def test_key_in_a_malformed_header_line_never_shows() -> None:
    """httpx quotes the bad header line in its error; a retried GET then fails with that text."""

    async def answer(request: Request, out: Out) -> None:
        await out.raw(b"HTTP/1.1 400 Bad Request\r\nAuthorization Token " + KEY.encode() + b"\r\nContent-Length: 0\r\n\r\n")

    with MisbehavingServer(answer) as url:
        _, error, client, _ = run_client(url, lambda c: c.get_invoice(7), max_attempts=2)
    assert isinstance(error, ApiConnectionError)
    assert str(error).startswith("GET /coa/api/v1/invoice/7/ failed after 2 attempts: the server dropped the connection")
    assert "<hidden>" in str(error)
    assert KEY not in errors_text(error)


def test_key_never_shows_in_an_unsettled_create_or_a_failed_reconcile() -> None:
    """The create's answer is unreadable (a header line echoing the key), and so is the look-up's."""
    bad = b"HTTP/1.1 201 Created\r\nAuthorization Token " + KEY.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    lookups = "empty"

    async def answer(request: Request, out: Out) -> None:
        if request.method == "POST" or lookups == "broken":
            await out.raw(bad)
        else:
            await out.reply(200, page([], count=0))

    with MisbehavingServer(answer) as url:
        _, unsettled, _, _ = run_client(url, create(body(), settle=60))
        lookups = "broken"
        _, unknown, _, _ = run_client(url, create(body(), settle=60), max_attempts=2)
    assert isinstance(unsettled, CreateUnsettled)
    assert str(unsettled).startswith("POST /coa/api/v1/invoice/: the server dropped the connection")
    assert isinstance(unknown, ApiConnectionError) and unknown.uncertain
    assert "outcome unknown" in str(unknown) and "checking whether it did failed too" in str(unknown)
    for error in (unsettled, unknown):
        assert KEY not in errors_text(error) and "<hidden>" in str(error)


def test_key_in_a_repeating_next_link_never_shows() -> None:
    async def answer(request: Request, out: Out) -> None:
        await out.reply(200, page([invoice(1)], f"{INVOICES}?entity=54&token={KEY}&offset=1", count=2))

    with MisbehavingServer(answer) as url:
        _, error, _, _ = run_client(url, lambda c: c.list_invoices(entity=54))
    assert error is not None and "pagination loops" in str(error)
    assert KEY not in errors_text(error) and "token=<hidden>" in str(error)


def test_a_short_key_is_hidden_too_as_a_whole_word() -> None:
    # A key shorter than 8 characters cannot be a real Campfire key, but it is still somebody's secret.
    short = "s3cr7"

    async def answer(request: Request, out: Out) -> None:
        await out.reply(401, {"detail": f"Invalid token '{short}' (tokens look like s3cr7xyz)."})

    with MisbehavingServer(answer) as url:
        _, error, _, _ = run_client(url, lambda c: c.get_invoice(7), key=short)
    assert error is not None
    assert "Invalid token '<hidden>' (tokens look like s3cr7xyz)." in str(error)
    assert f"'{short}'" not in errors_text(error)


def test_an_api_key_with_control_characters_is_refused_before_any_request() -> None:
    requests: list[Request] = []

    async def answer(request: Request, out: Out) -> None:
        requests.append(request)
        await out.reply(200, invoice(7))

    with MisbehavingServer(answer) as url:
        with pytest.raises(ConfigError) as info:
            CampfireClient(url, KEY + "\x7f", api_key_name="ACME_KEY")
    assert "ACME_KEY" in str(info.value) and KEY not in errors_text(info.value)
    assert requests == []


# --- 2. a success without a usable id ----------------------------------------------------------------------

BAD_IDS = {
    "no id": {k: v for k, v in invoice(0).items() if k != "id"},
    "string": invoice("abc"),
    "numeric string": invoice("12"),
    "float": invoice(12.5),
    "null": invoice(None),
    "bool": invoice(True),
    "zero": invoice(0),
    "object": invoice({"id": 1}),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_create_answered_without_a_usable_id_is_an_uncertain_api_error(case: str) -> None:
    async def answer(request: Request, out: Out) -> None:
        if request.method == "POST":
            await out.reply(201, BAD_IDS[case])
        else:
            await out.reply(200, page([], count=0))

    server = MisbehavingServer(answer)
    with server as url:
        _, error, _, _ = run_client(url, create(body()))
    assert isinstance(error, ApiError) and type(error) is ApiError
    assert error.uncertain and error.status == 201 and error.method == "POST"
    message = str(error)
    assert message.startswith("POST /coa/api/v1/invoice/: 201 Created, but the invoice in the response ")
    assert ("has no 'id'" if case == "no id" else "has an 'id' ") in message
    assert "the request may have taken effect" in message
    assert [r.method for r in server.requests] == ["POST"]  # a success: nothing to look up or resend


@pytest.mark.parametrize("bad_id", ["abc", None, 3.5, True])
def test_reads_and_listings_without_a_usable_id_are_api_errors(bad_id: Any) -> None:
    async def answer(request: Request, out: Out) -> None:
        if request.path == INVOICES:
            await out.reply(200, page([invoice(5), invoice(bad_id)], count=2))
        else:
            await out.reply(200, invoice(bad_id))

    with MisbehavingServer(answer) as url:
        _, read_error, _, _ = run_client(url, lambda c: c.get_invoice(7))
        _, list_error, _, _ = run_client(url, lambda c: c.find_invoice(InvoiceLookup.from_body(body())))
    assert isinstance(read_error, ApiError) and "'id'" in str(read_error)
    assert str(read_error).startswith("GET /coa/api/v1/invoice/7/: 200 OK, but the invoice in the response")
    assert isinstance(list_error, ApiError)
    assert str(list_error).startswith("GET /coa/api/v1/invoice/: results[1] of page 1 has")


# --- 3. one deadline for the whole response -------------------------------------------------------------


def test_a_body_trickled_byte_by_byte_ends_within_the_read_timeout() -> None:
    content = json.dumps(invoice(7)).encode()

    async def answer(request: Request, out: Out) -> None:
        head = response_bytes(200, content, content_type="application/json")[: -len(content)]
        await out.raw(head)
        await out.trickle(content[:60], every=0.05)  # each byte well inside the 0.4 s read timeout
        out.drop()

    with MisbehavingServer(answer) as url:
        _, error, client, took = run_client(url, lambda c: c.get_invoice(7), read_timeout=0.4, max_attempts=1)
    assert isinstance(error, ApiConnectionError)
    assert took < 1.5
    assert str(error).startswith(
        "GET /coa/api/v1/invoice/7/ failed after 1 attempt: the whole response took longer than 0.4 s"
    )


def test_headers_trickled_byte_by_byte_end_within_the_read_timeout() -> None:
    async def answer(request: Request, out: Out) -> None:
        await out.trickle(response_bytes(200, invoice(7))[:60], every=0.05)
        out.drop()

    with MisbehavingServer(answer) as url:
        _, error, _, took = run_client(url, lambda c: c.get_invoice(7), read_timeout=0.4, max_attempts=2)
    assert isinstance(error, ApiConnectionError)
    assert took < 2.5
    assert "failed after 2 attempts: the whole response took longer than 0.4 s" in str(error)


def test_a_trickled_create_is_uncertain_and_looked_up_not_resent() -> None:
    async def answer(request: Request, out: Out) -> None:
        if request.method == "POST":
            await out.trickle(response_bytes(201, invoice(7))[:60], every=0.05)
            out.drop()
        else:
            await out.reply(200, page([], count=0))

    server = MisbehavingServer(answer)
    with server as url:
        _, error, client, took = run_client(url, create(body(), settle=60), read_timeout=0.4)
    assert isinstance(error, CreateUnsettled) and error.uncertain
    assert took < 1.5
    assert str(error).startswith("POST /coa/api/v1/invoice/: the whole response took longer than 0.4 s")
    assert [r.method for r in server.requests] == ["POST", "GET"]


# --- 4. pagination that never ends ----------------------------------------------------------------------


def test_a_next_link_that_keeps_moving_stops_after_what_count_allows() -> None:
    async def answer(request: Request, out: Out) -> None:
        offset = int(request.param("offset", "0"))
        await out.reply(200, page([invoice(offset + 1)], f"{INVOICES}?entity=54&offset={offset + 1}", count=3))

    server = MisbehavingServer(answer)
    with server as url:
        _, error, _, _ = run_client(url, lambda c: c.list_invoices(entity=54))
    assert isinstance(error, ApiError)
    assert 3 < len(server.requests) <= 20
    message = str(error)
    assert message.startswith("GET /coa/api/v1/invoice/: pagination does not end:")
    assert "the 'next' link still leads on after " in message
    assert "invoices, though Campfire's count said 3 invoices (3 pages of 1); stopped" in message


def test_a_random_cursor_without_a_count_stops_at_the_hard_cap() -> None:
    async def answer(request: Request, out: Out) -> None:
        n = len(server.requests)
        await out.reply(200, page([invoice(n)], f"{INVOICES}?cursor=c{n * 7919 % 100003}x{n}"))

    server = MisbehavingServer(answer)

    async def call(client: CampfireClient) -> Any:
        client.max_pages = 25
        return await client.list_invoices(entity=54)

    with server as url:
        _, error, _, _ = run_client(url, call)
    assert isinstance(error, ApiError)
    assert len(server.requests) == 25
    assert "pagination does not end: the 'next' link still leads on after 25 pages and 25 invoices, the most" in str(error)
    assert "(25 pages or 1000000 invoices)" in str(error)


def test_empty_pages_that_link_on_stop() -> None:
    async def answer(request: Request, out: Out) -> None:
        offset = int(request.param("offset", "0"))
        await out.reply(200, page([], f"{INVOICES}?offset={offset + 1000}"))

    server = MisbehavingServer(answer)
    with server as url:
        _, error, _, _ = run_client(url, lambda c: c.list_invoices(entity=54))
    assert isinstance(error, ApiError)
    assert len(server.requests) <= 5
    assert "pagination does not end: empty pages kept linking to a next page after 3 pages and 0 invoices" in str(error)


# --- 5. Retry-After from another century --------------------------------------------------------------

FAR = {
    "2099": ("Thu, 01 Jan 2099 00:00:00 GMT", r"\d\d years"),
    "10**9 s": ("1000000000", "32 years"),
    "12 days": ("1036800", "12 days"),
}


@pytest.mark.parametrize("case", list(FAR))
def test_retry_after_far_in_the_future_fails_at_once_saying_what_was_asked(case: str) -> None:
    header, words = FAR[case]

    async def answer(request: Request, out: Out) -> None:
        await out.reply(429, {"detail": "Request was throttled."}, {"Retry-After": header})

    server = MisbehavingServer(answer)
    with server as url:
        _, error, client, took = run_client(url, lambda c: c.get_invoice(7))
    assert isinstance(error, ApiError) and error.status == 429
    assert took < 1 and len(server.requests) == 1 and client.stats.throttle_wait_seconds == 0
    message = str(error)
    assert message.startswith("GET /coa/api/v1/invoice/7/ failed: 429 Too Many Requests: Request was throttled. ")
    assert re.search(f"Campfire asked to wait {words} ", message)
    assert message.endswith(
        f"(Retry-After: {header}), more than the 600 s this run waits for the rate limit."
    )


PAST = {
    "1999": ("Fri, 01 Jan 1999 00:00:00 GMT", "is in the past"),
    "negative": ("-5", "is negative"),
    "garbage": ("soon", "is neither a number of seconds nor an HTTP-date"),
    "infinity": ("inf", "is not a finite number of seconds"),
    "Infinity": ("Infinity", "is not a finite number of seconds"),
    "nan": ("NaN", "is not a finite number of seconds"),
}


@pytest.mark.parametrize("case", list(PAST))
def test_retry_after_in_the_past_or_garbage_means_the_usual_back_off(case: str) -> None:
    header, problem = PAST[case]

    async def answer(request: Request, out: Out) -> None:
        await out.reply(429, {"detail": "Request was throttled."}, {"Retry-After": header})

    server = MisbehavingServer(answer)
    with server as url:
        _, error, client, took = run_client(
            url, lambda c: c.get_invoice(7), backoff_base=0.02, backoff_max=0.02, max_throttle_wait=0.2
        )
    assert isinstance(error, ApiError) and error.status == 429
    assert 2 <= len(server.requests) <= 400 and took < 3
    assert 0 < client.stats.throttle_wait_seconds <= 0.2
    message = str(error)
    assert message.startswith("GET /coa/api/v1/invoice/7/ failed: 429 Too Many Requests: Request was throttled. ")
    assert f"Campfire's Retry-After ({header}) {problem}, so each retry waited the usual back-off" in message
    assert "throttled replies" in message


def test_retry_after_in_the_past_then_success_retries_after_a_back_off() -> None:
    random.seed(20250701)  # the back-off is jittered: a fixed seed keeps it clear of 0
    async def answer(request: Request, out: Out) -> None:
        if len(server.requests) == 1:
            await out.reply(429, {"detail": "Request was throttled."}, {"Retry-After": "Fri, 01 Jan 1999 00:00:00 GMT"})
        else:
            await out.reply(200, invoice(7))

    server = MisbehavingServer(answer)
    with server as url:
        result, error, client, _ = run_client(url, lambda c: c.get_invoice(7), backoff_base=0.05, backoff_max=0.05)
    assert error is None and result["id"] == 7
    assert len(server.requests) == 2 and client.stats.throttled == 1
    assert 0 < client.stats.throttle_wait_seconds <= 0.05


# --- payment reconcile on an amount that is not a number ------------------------------------------------

PAYMENT = {"empty_transactions": [{"account_id": 2553, "amount": "10.50", "payment_date": "2025-07-10"}]}


@pytest.mark.parametrize("before, after", [("n/a", "n/a"), ("0.00", "ten"), ("NaN", "10.50"), ("0.00", None)])
def test_an_amount_paid_that_is_not_a_number_leaves_the_payment_outcome_unknown(before: Any, after: Any) -> None:
    reads = 0

    async def answer(request: Request, out: Out) -> None:
        nonlocal reads
        if request.method == "POST":
            await out.reply(502, "<html><title>502 Bad Gateway</title></html>", content_type="text/html")
        else:
            reads += 1
            await out.reply(200, invoice(7, amount_paid=before if reads == 1 else after, payments=[]))

    server = MisbehavingServer(answer)
    with server as url:
        _, error, _, _ = run_client(url, lambda c: c.pay_invoice(7, PAYMENT), max_attempts=3)
    assert isinstance(error, ApiConnectionError) and error.uncertain
    assert [r.method for r in server.requests] == ["GET", "POST", "GET"]
    message = str(error)
    assert message.startswith("POST /coa/api/v1/invoice/7/pay/: outcome unknown: the request may have taken effect "
                              "(502 Bad Gateway), and checking whether it did failed too: ")
    assert "amount_paid" in message and "not an amount" in message


# --- 6. a bad base URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", [
    "api.meetcampfire.com", "ftp://x", "http://", "http://exa mple.com", "http://[::1", "https://host:99999",
    "https://host:0", "https://exämple.com", "http://\u200b", "https://" + "a" * 5000 + ".com",
    "https://host/?a=1", "https://host/#top", "http://-bad-.com", "http://999.1.1.1", "https://host/p%zz",
    "https://user:s3cret-pw@host:99999", "user:s3cret-pw@api.meetcampfire.com",
])
def test_client_refuses_a_bad_base_url_with_a_config_error(base_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        CampfireClient(base_url, KEY)
    assert str(info.value).startswith("base URL ")
    assert len(str(info.value)) < 400 and "s3cret-pw" not in str(info.value)


def test_client_drops_credentials_of_the_base_url_and_never_shows_them() -> None:
    async def answer(request: Request, out: Out) -> None:
        await out.reply(500, f"<html><title>auth {request.headers.get('authorization')}</title></html>",
                        content_type="text/html")

    server = MisbehavingServer(answer)
    with server as url:
        with_credentials = url.replace("http://", "http://proxyuser:s3cret-pw@")
        _, error, client, _ = run_client(with_credentials, lambda c: c.get_invoice(7), max_attempts=1)
    assert client.base_url == url
    assert server.requests[0].headers["authorization"] == f"Token {KEY}"
    assert error is not None and "s3cret-pw" not in errors_text(error) and "s3cret-pw" not in repr(client)
    assert isinstance(httpx.URL(url).port, int)

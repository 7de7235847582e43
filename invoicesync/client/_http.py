"""The Campfire HTTP client (``CampfireClient``): auth, timeouts, retries, throttling, error mapping and reconcile look-ups.

Owned by the client module (DESIGN.md, "Creating each invoice exactly once" and "Talking to the
API"). Everything that touches httpx lives here: one ``httpx.AsyncClient`` is built in
``CampfireClient.__init__`` (the transport is injectable, so the in-process sandbox and tests can
answer), every httpx exception is translated into ``ApiConnectionError`` and every error status into
``ApiError`` here. Knows nothing about specs, plans or state.

Retry policy, per request:

* connection errors (``httpx.TransportError``) and 5xx replies are retried with exponential backoff
  and full jitter, ``random.uniform(0, min(backoff_max, backoff_base * 2**n))`` before the n-th
  retry (n from 0), for at most ``max_attempts`` sends in all;
* every send takes a slot from the client's ``Pacer`` (``_pacer.py``): no wait at all until Campfire
  first answers 429, then a request rate adapted to the 429s (cut multiplicatively, raised
  additively), shared by every request of the client, so a rate limit slows the whole run to about
  the limit instead of failing it or collapsing it;
* a 429 honours ``Retry-After`` (seconds or an HTTP-date) as the earliest time that request is sent
  again, spread over up to half as long again (at most a second more) at random so that requests
  throttled together do not come back together. 429s do not count against ``max_attempts``; a request gives up at once when
  its throttle waits would pass ``max_throttle_wait`` seconds (saying what Campfire asked for). A
  ``Retry-After`` in the past, negative, infinite or unreadable is no instruction: the usual back-off;
* 400/401/403/404/409/422 (any other status below 500) are never retried.

Bounds, whatever the server does: each send has a deadline of the read timeout for the whole
response (a server trickling bytes just inside the read timeout still ends it; handled like a read
timeout), and a listing stops with ``ApiError`` after the pages its first ``count`` allows plus a
margin (or ``max_pages``/``max_listed`` without a count), or after a few empty pages that link on.

The API key never shows: every exception leaving a public method, and everything chained to it, is
scrubbed of the key, also where the server echoed it with JSON, URL or HTML escapes; texts are
scrubbed before they are shortened, so a cut never leaves a fragment.

A write whose outcome is unknown (the request may have been sent: read timeout, dropped connection,
5xx, unreadable success body) is reconciled before it is sent again: a create looks the invoice up
(``find_invoice``), a void or payment re-reads the invoice, and a delete treats a later 404 as done.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

# httpx imports its optional command-line client (click, rich and pygments: a tenth of a second of
# every run's start) when it is imported; we never use it. A None in sys.modules makes that import
# fail, and httpx falls back to the stub it has for when the CLI's extras are missing.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from invoicesync import __version__
from invoicesync.client._pacer import Pacer
from invoicesync.client._support import (
    INVOICES_PATH,
    Reconcile,
    _BadBody,
    _base_url,
    _check_listed,
    _count,
    _DeadlineExceeded,
    _describe,
    _duration,
    _endless,
    _Failure,
    _id_problem,
    _int_or,
    _iso_date,
    _kind,
    _money,
    _origin,
    _parse_body,
    _payment_total,
    _query_value,
    _read_retry_after,
    _Reply,
    _RetryAfter,
    _Secret,
    _shorten,
    _summarise,
    _summarise_text,
)
from invoicesync.client.lookup import ClientStats, CreateResult, InvoiceLookup
from invoicesync.errors import ApiConnectionError, ApiError, ConfigError, CreateUnsettled
from invoicesync.models import dumps_json, is_voided, loads_json

log = logging.getLogger("invoicesync.client")

ENTITIES_PATH = "/coa/api/entity"

# Up to this many invoice numbers are checked one list call each; more, by listing their entities.
_NUMBERS_ONE_BY_ONE = 20

# The page size asked for by look-ups and listings. Campfire documents no default or maximum for the
# invoice list (other lists: 100/10,000 or 50/1,000); pagination is followed either way, so a server
# that caps it lower only costs more pages.
LOOKUP_PAGE_SIZE = 1000

# A server that answers 429 with ``Retry-After: 0`` forever would never use up ``max_throttle_wait``;
# this bounds the number of 429s one request accepts.
_MAX_THROTTLED_REPLIES = 1000

# A listing whose ``next`` link never ends (a new URL every page: a growing offset, a random cursor)
# stops after the pages its first ``count`` allows plus a margin for invoices added meanwhile, and
# never reads more than these, count or not.
_MAX_PAGES = 10_000
_MAX_LISTED = 1_000_000
_MAX_EMPTY_PAGES = 3  # empty pages in a row that still link on (DRF never sends one)

# Longer base URLs are refused (a pasted file, not a URL); the same bound as config's.

# Errors raised before any byte of the request could have reached the server: safe to resend as is.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors no retry can cure (a malformed URL or request built on this side).
_FATAL = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

_JSON = "application/json"



_P = ParamSpec("_P")
_T = TypeVar("_T")


def _redacting(
    method: Callable[Concatenate[CampfireClient, _P], Awaitable[_T]],
) -> Callable[Concatenate[CampfireClient, _P], Coroutine[Any, Any, _T]]:
    """Every exception leaving a public method, and all chained to it, has the key hidden (the one choke point)."""

    @functools.wraps(method)
    async def redacted(self: CampfireClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:  # not handled here: scrubbed of the key, then raised as it was
            self._key.scrub(exc)
            raise

    return redacted


# --- the client -------------------------------------------------------------------------------------


class CampfireClient:
    """An async client of Campfire's invoice API, safe to share between many concurrent tasks.

    Use as ``async with CampfireClient(base_url, api_key) as client: ...``. The API key rides on every
    request as ``Authorization: Token <key>`` and never appears in a repr, message, log line or stat.
    ``api_key_name`` names where the key came from (an environment variable) for the 401 message.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 6,
        backoff_base: float = 0.25,
        backoff_max: float = 10.0,
        max_throttle_wait: float = 600.0,
        max_connections: int = 64,
        user_agent: str = f"invoicesync/{__version__}",
        api_key_name: str = "CAMPFIRE_API_KEY",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not all(33 <= ord(ch) < 127 for ch in api_key):
            # httpx and h11 quote a header value they refuse in their own messages.
            raise ConfigError(
                f"{api_key_name} holds characters an API key cannot have (white space, control or non-ASCII "
                "characters); set it to the key alone. The value is not shown."
            )
        self._base = _base_url(base_url)
        self._base_str = str(self._base).rstrip("/")
        self._origin = _origin(self._base)
        self._key = _Secret(api_key)
        self._api_key_name = api_key_name
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_throttle_wait = max_throttle_wait
        self.max_pages = _MAX_PAGES
        self.max_listed = _MAX_LISTED
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout + read_timeout
        )
        # The read timeout bounds each wait for a byte; this bounds the whole response (a server that
        # trickles its answer a byte at a time would otherwise hold a request forever).
        self._deadline = read_timeout
        self.pacer = Pacer()  # one request rate for every request of this client, learnt from 429s
        self.stats = ClientStats()
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={
                "Authorization": f"Token {api_key}",
                "Accept": _JSON,
                "User-Agent": user_agent,
            },
            follow_redirects=False,  # a redirect could carry the key elsewhere; Campfire has none to follow
        )

    def __repr__(self) -> str:
        return f"CampfireClient(base_url={self._base_str!r}, api_key=<hidden>)"

    @property
    def base_url(self) -> str:
        """The configured base URL (scheme, host, port, optional path prefix)."""
        return self._base_str

    async def __aenter__(self) -> CampfireClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (and the transport)."""
        await self._http.aclose()

    # --- invoices ---------------------------------------------------------------------------------

    @_redacting
    async def create_invoice(
        self,
        body: Mapping[str, Any],
        *,
        idempotency_key: str,
        lookup: InvoiceLookup,
        exclude_ids: Collection[int] = (),
        settle: float = 0.0,
        before_resend: Callable[[], Awaitable[None]] | None = None,
    ) -> CreateResult:
        """Create one invoice exactly once (``POST /coa/api/v1/invoice/`` with an ``Idempotency-Key``).

        A failure that may have created the invoice (read timeout, dropped connection, 5xx) is
        followed at once by ``find_invoice(lookup)``: found, the found invoice is returned with
        ``found_by_lookup=True``. Not found, the invoice may still be landing (a gateway's 504 can
        arrive while Campfire is still committing behind it): with a ``settle`` window, the POST is
        not sent again here; ``CreateUnsettled`` says when it was last sent, and the caller looks again
        once the window has passed. With ``settle`` 0 (a server that commits before it answers, like
        the sandbox) it is sent again after a back-off, with the same key. A failure where nothing was
        sent (connect error, 429) is simply retried. 4xx raise ``ApiError``.

        ``exclude_ids`` may be a live set: ids recorded for other addresses while the create runs are
        never taken by its look-ups. ``before_resend`` is awaited before every send after the first
        (the caller journals it, so that recovery counts the window from the last send).
        """
        content = dumps_json(body).encode()
        headers = {"Content-Type": _JSON, "Idempotency-Key": idempotency_key}

        async def reconcile() -> dict[str, Any] | None:
            return await self.find_invoice(lookup, exclude_ids=exclude_ids)

        reply = await self._call(
            "POST", INVOICES_PATH, content=content, headers=headers, reconcile=reconcile,
            settle=settle > 0, before_resend=before_resend,
        )
        if reply.reconciled is not None:
            self.stats.found_by_lookup += 1
            return CreateResult(invoice=reply.reconciled, found_by_lookup=True, attempts=reply.attempts)
        return CreateResult(invoice=self._invoice(reply, "POST", INVOICES_PATH), found_by_lookup=False,
                            attempts=reply.attempts)

    @_redacting
    async def find_invoice(self, lookup: InvoiceLookup, *, exclude_ids: Collection[int] = ()) -> dict[str, Any] | None:
        """Find the invoice a lost create may have made, or None.

        Lists invoices filtered by entity, client (when known), ``start_date``=``end_date``=invoice
        date and invoice number (when set), ``limit`` ``LOOKUP_PAGE_SIZE``, following pagination; then
        matches ``source_id`` (or, without one, the invoice number), skipping voided and deleted
        invoices. Several matches (which should not happen) return the newest (highest id).
        """
        self.stats.lookups += 1
        filters: dict[str, Any] = {"entity": lookup.entity}
        if lookup.client is not None:
            filters["client"] = lookup.client
        filters["start_date"] = lookup.invoice_date
        filters["end_date"] = lookup.invoice_date
        if lookup.invoice_number:
            filters["invoice_number"] = lookup.invoice_number
        filters["limit"] = LOOKUP_PAGE_SIZE
        best: dict[str, Any] | None = None
        for invoice in await self.list_invoices(**filters):
            if invoice.get("is_deleted") or is_voided(invoice):
                continue
            if invoice.get("id") in lookup.exclude_ids or invoice.get("id") in exclude_ids:
                continue
            if lookup.source_id:
                if invoice.get("source_id") != lookup.source_id:
                    continue
            elif invoice.get("invoice_number") != lookup.invoice_number:
                continue
            if best is None or int(invoice.get("id") or 0) > int(best.get("id") or 0):
                best = invoice
        return best

    @_redacting
    async def get_invoice(self, invoice_id: int) -> dict[str, Any] | None:
        """``GET /coa/api/v1/invoice/{id}/``: the full invoice, or None when Campfire says 404."""
        path = self._invoice_path(invoice_id)
        reply = await self._call("GET", path)
        assert reply.response is not None
        if reply.response.status_code == 404:
            return None
        return self._invoice(reply, "GET", path)

    @_redacting
    async def list_invoices(self, /, **filters: Any) -> list[dict[str, Any]]:
        """``GET /coa/api/v1/invoice/`` with the given filters, every page (DRF ``next`` links) joined.

        Filters use the API's names (``entity=54``, ``client=[1, 2]`` for repeated values,
        ``start_date=...``); None values are left out; ``limit`` defaults to ``LOOKUP_PAGE_SIZE``.
        ``download`` is refused (Campfire would e-mail an export). A ``next`` link to another scheme,
        host or port than the base URL is not followed (the key would go with it): ``ApiError``.
        """
        listed = await self._listing(filters, None)
        assert listed is not None
        return listed

    @_redacting
    async def list_invoices_up_to(
        self, at_most: int, /, *, concurrency: int = 1, then_limit: int | None = None, **filters: Any
    ) -> list[dict[str, Any]] | None:
        """``list_invoices``, or None as soon as the first page's ``count`` says more than ``at_most`` match.

        For callers that can read the same invoices another way (one by one) when a listing would
        cost more pages than it saves. With ``concurrency`` above 1, and a first page whose ``next``
        link pages by ``limit``/``offset`` (DRF's ``LimitOffsetPagination``, as Campfire's lists do),
        the pages up to its ``count`` are read that many at a time, on the base URL itself, with
        ``then_limit`` invoices a page if given (a small first page learns the count sooner); any page
        the last of them links to is then followed as usual. (Invoices added meanwhile may shift
        pages: callers match what they read by id and read what is missing by id.)
        """
        return await self._listing(filters, at_most, concurrency=concurrency, then_limit=then_limit)

    async def _listing(
        self, filters: dict[str, Any], at_most: int | None, *, concurrency: int = 1, then_limit: int | None = None
    ) -> list[dict[str, Any]] | None:
        if "download" in filters:
            raise ValueError("list_invoices never sends 'download' (Campfire would e-mail a CSV export)")
        params: dict[str, Any] = {k: _query_value(v) for k, v in filters.items() if v is not None}
        params.setdefault("limit", LOOKUP_PAGE_SIZE)
        results: list[dict[str, Any]] = []
        url: str = INVOICES_PATH
        query: dict[str, Any] | None = params
        seen: set[str] = set()
        pages = 0
        empty_in_a_row = 0
        max_pages = self.max_pages
        said = ""  # what the first page's count allows, for the message
        while True:
            reply = await self._call("GET", url, params=query)
            page = self._result(reply, "GET", INVOICES_PATH)
            pages += 1
            if isinstance(page, list):  # an unpaginated answer
                _check_listed(page, pages)
                results.extend(page)
                return results
            page = self._list_page(page, reply)
            _check_listed(page["results"], pages)
            results.extend(page["results"])
            next_link = page.get("next")
            if not next_link:
                return results
            if pages == 1:
                count = page.get("count")
                if at_most is not None and (not isinstance(count, int) or isinstance(count, bool) or count > at_most):
                    return None
                if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                    size = len(page["results"]) or _int_or(params.get("limit"), LOOKUP_PAGE_SIZE)
                    expected = math.ceil(count / size)
                    # A margin for invoices created while the listing runs.
                    max_pages = min(max_pages, expected + max(10, expected // 10))
                    said = f", though Campfire's count said {count} invoices ({expected} page{'s' if expected != 1 else ''} of {size})"
            empty_in_a_row = 0 if page["results"] else empty_in_a_row + 1
            if empty_in_a_row >= _MAX_EMPTY_PAGES:
                raise _endless("empty pages kept linking to a next page", pages, len(results), said)
            if pages >= max_pages or len(results) >= self.max_listed:
                why = said or (
                    f", the most this run reads in one listing ({self.max_pages} pages or {self.max_listed} invoices)")
                raise _endless("the 'next' link still leads on", pages, len(results), why)
            if not isinstance(next_link, str):
                raise ApiError(
                    f"GET {INVOICES_PATH}: the 'next' page link is {_kind(next_link)}, not a URL; stopped after "
                    f"{len(results)} invoices", method="GET", path=INVOICES_PATH,
                )
            url = self._follow(next_link)
            if url in seen:
                where = httpx.URL(url)
                raise ApiError(
                    f"GET {INVOICES_PATH}: pagination loops (the 'next' link repeats "
                    f"{_shorten(self._redact(where.path + '?' + where.query.decode()), 200)}); "
                    f"stopped after {len(results)} invoices",
                    method="GET",
                    path=INVOICES_PATH,
                )
            seen.add(url)
            query = None
            if pages == 1 and concurrency > 1:
                ahead = await self._pages_ahead(url, page.get("count"), max_pages - 1, concurrency, then_limit)
                for more in ahead:
                    pages += 1
                    _check_listed(more["results"], pages)
                    results.extend(more["results"])
                if ahead:
                    next_link = ahead[-1].get("next")
                    if not next_link:
                        return results
                    if not isinstance(next_link, str):
                        raise ApiError(
                            f"GET {INVOICES_PATH}: the 'next' page link is {_kind(next_link)}, not a URL; stopped "
                            f"after {len(results)} invoices", method="GET", path=INVOICES_PATH,
                        )
                    url = self._follow(next_link)
                    seen.add(url)

    def _list_page(self, page: Any, reply: _Reply) -> Mapping[str, Any]:
        """A list page (``{count, next, previous, results}``), or ``ApiError`` for a body without a ``results`` list."""
        if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
            raise ApiError(
                f"GET {INVOICES_PATH} returned an unexpected body (no 'results' list): "
                f"{_summarise(self._key.hide_in_body(page))}",
                status=reply.response.status_code if reply.response else None,
                method="GET",
                path=INVOICES_PATH,
                body=page,
            )
        return page

    async def _pages_ahead(
        self, first_next: str, count: Any, most: int, concurrency: int, then_limit: int | None
    ) -> list[Mapping[str, Any]]:
        """The pages after the first, read ``concurrency`` at a time by offset; [] when the link does not page by offset."""
        link = httpx.URL(first_next)
        limit, offset = _int_or(link.params.get("limit"), 0), _int_or(link.params.get("offset"), -1)
        if not isinstance(count, int) or isinstance(count, bool) or limit < 1 or offset < 1 or offset >= count:
            return []
        if then_limit is not None and then_limit > limit:
            limit = then_limit
            link = link.copy_set_param("limit", limit)
        offsets = list(range(offset, count, limit))[:most]
        gate = asyncio.Semaphore(concurrency)

        async def read(at: int) -> Mapping[str, Any]:
            async with gate:
                url = str(link.copy_set_param("offset", at))
                reply = await self._call("GET", url)
            return self._list_page(self._result(reply, "GET", INVOICES_PATH), reply)

        return list(await asyncio.gather(*(read(at) for at in offsets)))

    @_redacting
    async def entity_currencies(self) -> dict[int, str]:
        """Entity id -> its currency, from ``GET /coa/api/entity`` (a plain array, not paginated)."""
        reply = await self._call("GET", ENTITIES_PATH)
        data = self._result(reply, "GET", ENTITIES_PATH)
        if isinstance(data, Mapping) and isinstance(data.get("results"), list):
            data = data["results"]  # tolerate a paginated answer
        if not isinstance(data, list):
            raise ApiError(f"GET {ENTITIES_PATH} returned an unexpected body (not a list): {_summarise(self._key.hide_in_body(data))}",
                           method="GET", path=ENTITIES_PATH)
        out: dict[int, str] = {}
        for entity in data:
            if isinstance(entity, Mapping) and isinstance(entity.get("id"), int) and entity.get("currency"):
                out[entity["id"]] = str(entity["currency"])
        return out

    @_redacting
    async def invoice_numbers_in_use(
        self, wanted: Collection[tuple[int, str]], *, parallelism: int = 8
    ) -> dict[tuple[int, str], list[int]]:
        """(entity, invoice number) -> ids of the live (not voided, not deleted) invoices Campfire holds with it.

        A few numbers are looked up one list call each (``invoice_number`` is an exact filter); more
        than ``_NUMBERS_ONE_BY_ONE`` are found with one listing of each entity involved.
        """
        wanted = set(wanted)
        found: dict[tuple[int, str], list[int]] = {}

        def take(invoice: Mapping[str, Any], entity: int) -> None:
            key = (entity, str(invoice.get("invoice_number")))
            if key in wanted and not invoice.get("is_deleted") and not is_voided(invoice):
                found.setdefault(key, []).append(int(invoice["id"]))

        semaphore = asyncio.Semaphore(max(1, parallelism))

        async def listing(entity: int, number: str | None) -> None:
            async with semaphore:
                invoices = await self.list_invoices(entity=entity, invoice_number=number)
            for invoice in invoices:
                take(invoice, entity)

        if len(wanted) <= _NUMBERS_ONE_BY_ONE:
            await asyncio.gather(*(listing(entity, number) for entity, number in sorted(wanted)))
        else:
            await asyncio.gather(*(listing(entity, None) for entity in sorted({e for e, _ in wanted})))
        return {key: sorted(ids) for key, ids in found.items()}

    @_redacting
    async def update_invoice(self, invoice_id: int, patch: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /coa/api/v1/invoice/{id}/`` with only the changed fields; returns the updated invoice.

        Retried like a read: sending the same PATCH twice leaves the same result.
        """
        path = self._invoice_path(invoice_id)
        reply = await self._call(
            "PATCH", path, content=dumps_json(dict(patch)).encode(), headers={"Content-Type": _JSON}
        )
        return self._invoice(reply, "PATCH", path)

    @_redacting
    async def void_invoice(self, invoice_id: int, void_date: str | date | None = None) -> dict[str, Any]:
        """``POST /coa/api/v1/invoice/{id}/void/``; returns the voided invoice.

        After a failure that may have voided it, the invoice is read back first: already voided, that
        is the result; otherwise the void is sent again.
        """
        path = self._invoice_path(invoice_id) + "void/"
        body: dict[str, Any] = {} if void_date is None else {"void_date": _iso_date(void_date)}

        async def reconcile() -> dict[str, Any] | None:
            invoice = await self.get_invoice(invoice_id)
            return invoice if invoice is not None and is_voided(invoice) else None

        reply = await self._call(
            "POST", path, content=dumps_json(body).encode(), headers={"Content-Type": _JSON}, reconcile=reconcile
        )
        if reply.reconciled is not None:
            result: dict[str, Any] = reply.reconciled
            return result
        return self._invoice(reply, "POST", path)

    @_redacting
    async def delete_invoice(self, invoice_id: int) -> None:
        """``DELETE /coa/api/v1/invoice/{id}/`` (permanent).

        A 404 after an earlier attempt whose outcome was unknown counts as done (that attempt deleted
        it); a 404 on a first attempt is an ``ApiError``.
        """
        path = self._invoice_path(invoice_id)
        reply = await self._call("DELETE", path)
        assert reply.response is not None
        if reply.response.status_code == 404 and reply.uncertain:
            return
        self._result(reply, "DELETE", path, allow_empty=True)

    @_redacting
    async def pay_invoice(self, invoice_id: int, payment: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /coa/api/v1/invoice/{id}/pay/`` (record a payment); returns the updated invoice.

        The invoice is read first; after a failure that may have recorded the payment it is read
        again, and the payment counts as recorded if the invoice gained a payment or its
        ``amount_paid`` grew by at least the amount sent. Only then is the payment sent again.
        """
        path = self._invoice_path(invoice_id) + "pay/"
        before = await self.get_invoice(invoice_id)
        paid_before = _money(before.get("amount_paid")) if before else Decimal(0)
        count_before = _count(before.get("payments")) if before else 0
        amount = _payment_total(payment)

        async def reconcile() -> dict[str, Any] | None:
            now = await self.get_invoice(invoice_id)
            if now is None:
                return None
            if _count(now.get("payments")) > count_before:
                return now
            if amount is not None and amount <= 0:
                return None  # only a new payment entry could show it
            paid_now = _money(now.get("amount_paid"))
            if amount is not None and paid_before is not None and paid_now is not None:
                return now if paid_now - paid_before >= amount else None
            # Deciding from a made-up 0 could record the payment twice: the outcome stays unknown.
            if amount is None:
                unreadable = "an amount of the payment sent"
            elif paid_before is None:
                unreadable = f"amount_paid before the payment ({_shorten(dumps_json(before and before.get('amount_paid')), 40)})"
            else:
                unreadable = f"amount_paid ({_shorten(dumps_json(now.get('amount_paid')), 40)})"
            raise ApiError(
                f"GET {self._invoice_path(invoice_id)}: {unreadable} is not an amount, so whether the payment was "
                "recorded cannot be told",
                method="GET",
                path=self._invoice_path(invoice_id),
            )

        reply = await self._call(
            "POST", path, content=dumps_json(dict(payment)).encode(), headers={"Content-Type": _JSON},
            reconcile=reconcile,
        )
        if reply.reconciled is not None:
            result: dict[str, Any] = reply.reconciled
            return result
        return self._invoice(reply, "POST", path)

    # --- plumbing ---------------------------------------------------------------------------------

    @staticmethod
    def _invoice_path(invoice_id: int) -> str:
        return f"{INVOICES_PATH}{int(invoice_id)}/"

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self._base_str + path_or_url

    def _follow(self, link: str) -> str:
        """A pagination link made absolute, refused if it leaves the base URL's origin."""
        try:
            url = httpx.URL(self._base_str + "/").join(link)
        except httpx.InvalidURL as exc:
            raise ApiError(
                f"GET {INVOICES_PATH}: the API's 'next' page link is not a valid URL ({self._redact(str(exc))}): "
                f"{_shorten(self._redact(link), 120)}",
                method="GET",
                path=INVOICES_PATH,
            ) from exc
        if _origin(url) != self._origin:
            shown = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
            raise ApiError(
                f"GET {INVOICES_PATH}: the API's 'next' page link points to {shown}, not to "
                f"{self._origin[0]}://{self._origin[1]}" + (f":{self._base.port}" if self._base.port else "")
                + "; not following it, since the API key is sent with every request. "
                "Check the base URL (a proxy may be rewriting links).",
                method="GET",
                path=INVOICES_PATH,
            )
        if "download" in url.params:
            url = url.copy_remove_param("download")
        return str(url)

    def _redact(self, text: str) -> str:
        return self._key.hide_in(text)

    def _result(self, reply: _Reply, method: str, path: str, *, allow_empty: bool = False) -> Any:
        """The parsed body of a final reply, or the ``ApiError`` its status calls for."""
        response = reply.response
        assert response is not None
        if response.status_code >= 400:
            error = self._status_error(method, path, response, reply.attempts)
            error.uncertain = reply.uncertain
            raise error
        if reply.data is None and not allow_empty:
            error = ApiError(
                f"{method} {path}: {response.status_code} with an empty body where an invoice was expected",
                status=response.status_code,
                method=method,
                path=path,
            )
            error.uncertain = True  # it succeeded, with nothing to show for it
            raise error
        return reply.data

    def _invoice(self, reply: _Reply, method: str, path: str) -> dict[str, Any]:
        """The invoice object a final reply carries, or ``ApiError``."""
        data = self._result(reply, method, path)
        response = reply.response
        assert response is not None
        if not isinstance(data, dict):
            problem = f"expected an invoice object, got: {_summarise(self._key.hide_in_body(data))}"
        else:
            problem = _id_problem(data) or ""
            if not problem:
                return data
            problem = (
                f"{response.status_code} {response.reason_phrase}, but the invoice in the response {problem}; "
                "the request may have taken effect"
            )
        # A success status: whatever it did, it did (a create may have made an invoice).
        raise ApiError(f"{method} {path}: {problem}", status=response.status_code, method=method, path=path,
                       uncertain=True)

    def _status_error(
        self, method: str, path: str, response: httpx.Response, attempts: int, note: str = ""
    ) -> ApiError:
        status = response.status_code
        body = self._key.hide_in_body(_parse_body(response))
        summary = _summarise(body)
        message = f"{method} {path} failed: {status} {response.reason_phrase}"
        if summary:
            message += f": {summary}"
        if status == 401:
            message += (
                f" Check the API key in {self._api_key_name} (it must be a valid Campfire API key for "
                f"{self._base.host}; the key itself is not shown)."
            )
        elif status == 403:
            message += " The API key's user may lack the role for this (view-only keys can only read)."
        elif status >= 500 and attempts > 1:
            message += f" (gave up after {attempts} attempts)"
        message += note
        return ApiError(message, status=status, method=method, path=path, body=body)

    def _throttle_note(self, asked: _RetryAfter, waited: float, throttled: int, delay: float) -> str:
        """Why a throttled request gives up now: what Campfire asked for, or what the waits came to."""
        limit = f"the {self.max_throttle_wait:g} s this run waits for the rate limit"
        shown = _shorten(asked.header or "", 80)
        if asked.seconds is not None and waited + delay > self.max_throttle_wait:
            if waited <= 0:
                return f" Campfire asked to wait {_duration(delay)} (Retry-After: {shown}), more than {limit}."
            return (f" Campfire asked to wait {_duration(delay)} more (Retry-After: {shown}) after "
                    f"{_duration(waited)} of waiting, more than {limit}.")
        if asked.seconds is not None:
            why = f"Campfire kept asking to wait {_duration(asked.seconds)} (Retry-After: {shown})"
        elif asked.header is None:
            why = "Campfire sent no Retry-After, so each retry waited the usual back-off"
        else:
            why = f"Campfire's Retry-After ({shown}) {asked.problem}, so each retry waited the usual back-off"
        return f" Gave up after {throttled} throttled replies and {_duration(waited)} of waiting ({limit}); {why}."

    def _backoff(self, failures: int) -> float:
        """Full-jitter exponential backoff before retry number ``failures`` (0-based)."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2.0**failures))

    async def _take_slot(self, limit: float | None = None) -> float | None:
        """Wait for this send's slot from the pacer (no wait at all until Campfire has throttled).

        Returns the seconds waited, or None (without waiting) when the slot is further off than ``limit``.
        """
        waited = 0.0
        while True:
            now = time.monotonic()
            at, generation = self.pacer.reserve(now)
            if at <= now:
                return waited
            if limit is not None and waited + (at - now) > limit:
                return None
            await asyncio.sleep(at - now)
            waited += at - now
            self.stats.pace_wait_seconds += at - now
            if generation == self.pacer.generation:
                return waited  # else the pace was cut meanwhile: book again at the new pace

    @property
    def rate(self) -> tuple[float, float | None]:
        """(requests/s answered over the last second, the pace in requests/s or None while unpaced)."""
        return self.pacer.current(time.monotonic()), self.pacer.rate

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        reconcile: Reconcile | None = None,
        settle: bool = False,
        before_resend: Callable[[], Awaitable[None]] | None = None,
    ) -> _Reply:
        """Send one request with retries; return its final (non-retryable) reply or what reconcile found.

        ``reconcile`` is called after a failure that may have taken effect, before the request is
        sent again (and once more when attempts run out): a non-None result ends the call. With
        ``settle``, a request that may have taken effect is never sent again here: reconcile runs at
        once, and when it finds nothing ``CreateUnsettled`` is raised with the time of that send.
        """
        url = self._url(path)
        shown_path = httpx.URL(url).path if path.startswith(("http://", "https://")) else path
        failures = 0  # sends that count against max_attempts
        throttled = 0
        waited = 0.0
        sends = 0
        uncertain = False  # some send may have taken effect
        unchecked = False  # ... and no reconcile has looked since
        slotted = False  # this send has its slot already (taken right after a throttle wait)
        while True:
            if not slotted:
                await self._take_slot()
            slotted = False
            if sends:
                self.stats.retries += 1
                if before_resend is not None:
                    await before_resend()
            sends += 1
            self.stats.requests += 1
            sent_at = time.monotonic()
            self.pacer.sent(sent_at)
            failure: _Failure
            deadline = asyncio.timeout(self._deadline)
            try:
                async with deadline:  # httpx reads the whole body inside request(): the deadline covers it
                    response = await self._http.request(
                        method, url, params=params, content=content, headers=headers
                    )
            except _FATAL as exc:
                raise ApiConnectionError(
                    f"{method} {shown_path} failed: {_describe(exc, self._timeout, self._redact)}",
                    method=method,
                    path=shown_path,
                ) from exc
            except (httpx.TransportError, httpx.DecodingError) as exc:
                failure = _Failure(uncertain=not isinstance(exc, _NOT_SENT), exc=exc)
            except TimeoutError as exc:
                if not deadline.expired():
                    raise
                late = _DeadlineExceeded(self._deadline)
                late.__cause__ = exc
                failure = _Failure(uncertain=True, exc=late)  # like a read timeout: it may have been sent
            else:
                status = response.status_code
                if status != 429:
                    self.pacer.succeeded(time.monotonic(), sent_at)
                if status < 300:
                    try:
                        data = loads_json(response.content) if response.content else None
                    except ValueError:
                        failure = _Failure(uncertain=True, exc=_BadBody(_summarise_text(self._redact(response.text))))
                    else:
                        return _Reply(response, data, failures + 1, uncertain)
                elif status == 429:
                    throttled += 1
                    self.stats.throttled += 1
                    asked = _read_retry_after(response.headers.get("retry-after"))
                    # "Retry-After: 0" (DRF never sends it: it rounds waits up to whole seconds) gets the
                    # usual back-off, as a missing or unreadable one does: resending at once hammers a
                    # limiter that rounds its waits down.
                    delay = asked.seconds if asked.seconds else self._backoff(min(throttled - 1, 30))
                    if waited + delay > self.max_throttle_wait or throttled >= _MAX_THROTTLED_REPLIES:
                        note = self._throttle_note(asked, waited, throttled, delay)
                        error = self._status_error(method, shown_path, response, failures + 1, note)
                        error.uncertain = uncertain
                        raise error
                    # "Retry-After: 0" asks for no slower pace (a fault injector's random 429s say it).
                    if asked.seconds != 0 and self.pacer.throttled(time.monotonic(), sent_at):
                        log.debug("throttled (429): pacing requests at %.1f/s", self.pacer.rate or 0)
                    # Campfire's wait is the earliest resend; spread beyond it (by half as long again, at
                    # most a second) so that requests throttled together come back one by one, each then
                    # taking a paced slot.
                    delay = min(delay + random.uniform(0.0, min(0.5 * delay, 1.0)), self.max_throttle_wait - waited)
                    log.debug("%s %s throttled (429); sending again in %.2f s", method, shown_path, delay)
                    await asyncio.sleep(delay)
                    waited += delay
                    self.stats.throttle_wait_seconds += delay
                    # The paced slot after a throttle counts against the same budget.
                    paced = await self._take_slot(self.max_throttle_wait - waited)
                    if paced is None:
                        note = (self._throttle_note(asked, waited, throttled, 0.0)
                                + f" The next paced slot ({self.pacer.rate or 0:.3g} requests/s since the 429s) was "
                                "further off than the budget left.")
                        error = self._status_error(method, shown_path, response, failures + 1, note)
                        error.uncertain = uncertain
                        raise error
                    waited += paced
                    slotted = True
                    continue
                elif status >= 500:
                    failure = _Failure(uncertain=True, response=response)
                else:
                    return _Reply(response, None, failures + 1, uncertain)

            failures += 1
            if failure.uncertain:
                uncertain = unchecked = True
                if settle and reconcile is not None:
                    found = await self._reconcile(reconcile, method, shown_path, failure)
                    if found is not None:
                        return _Reply(None, None, failures, uncertain, reconciled=found)
                    raise CreateUnsettled(
                        f"{method} {shown_path}: {self._what_failed(failure)}; Campfire may still be "
                        "committing it, and a look-up has not found it yet",
                        sent_at=sent_at, method=method, path=shown_path,
                    )
            if failures >= self.max_attempts:
                if unchecked and reconcile is not None:
                    found = await self._reconcile(reconcile, method, shown_path, failure)
                    if found is not None:
                        return _Reply(None, None, failures, uncertain, reconciled=found)
                error = self._exhausted(method, shown_path, failure, failures, reconcile is not None and unchecked)
                error.uncertain = uncertain
                raise error
            delay = self._backoff(failures - 1)
            log.debug(
                "%s %s failed (%s); retry %d of %d in %.2f s",
                method, shown_path,
                failure.response.status_code if failure.response is not None else type(failure.exc).__name__,
                failures, self.max_attempts - 1, delay,
            )
            if delay > 0:
                await asyncio.sleep(delay)
            if failure.uncertain and reconcile is not None:
                found = await self._reconcile(reconcile, method, shown_path, failure)
                if found is not None:
                    return _Reply(None, None, failures, uncertain, reconciled=found)
                unchecked = False

    async def _reconcile(self, reconcile: Reconcile, method: str, path: str, failure: _Failure) -> Any:
        """Run a reconcile check; its own failure leaves the outcome unknown, and says so."""
        try:
            return await reconcile()
        except ApiError as exc:
            raise ApiConnectionError(
                f"{method} {path}: outcome unknown: the request may have taken effect "
                f"({self._what_failed(failure)}), and checking whether it did failed too: {self._redact(str(exc))}",
                method=method,
                path=path,
                uncertain=True,
            ) from exc

    def _what_failed(self, failure: _Failure) -> str:
        """One failure in words: ``504 Gateway Timeout``, or what happened to the connection."""
        if failure.response is not None:
            return f"{failure.response.status_code} {failure.response.reason_phrase}"
        return _describe(failure.exc, self._timeout, self._redact) if failure.exc is not None else "no answer"

    def _exhausted(self, method: str, path: str, failure: _Failure, attempts: int, looked: bool) -> ApiError:
        note = "; a check after the last attempt found it had not taken effect" if looked else ""
        if failure.response is not None:
            return self._status_error(method, path, failure.response, attempts, note)
        assert failure.exc is not None
        message = (
            f"{method} {path} failed after {attempts} attempt{'s' if attempts != 1 else ''}: "
            f"{_describe(failure.exc, self._timeout, self._redact)}; Campfire at {self._base.host} may be down or "
            f"unreachable{note}."
        )
        error = ApiConnectionError(message, method=method, path=path)
        error.__cause__ = failure.exc
        return error

"""The sandbox's invoice list: query parameters, filters, sort order and limit/offset pages.

Owns ``GET /coa/api/v1/invoice/``'s query language as API.md lists it: ``client`` and ``entity``
(repeatable), ``contract``, ``currency``, ``invoice_number``, ``ref_number`` (exact),
``start_date``/``end_date`` (on ``invoice_date``, inclusive), ``status`` (payment and ageing
buckets), ``sentStatus``, ``q`` (text search over shipping address, invoice number, message on
invoice and client name), ``sort`` (field name, ``-`` for descending, default ``-invoice_date``)
and ``limit``/``offset``. ``download`` and unknown parameters are ignored.

Assumptions where Campfire is silent [unverified]:

- ``limit`` defaults to 100 and is capped at 1000; an invalid ``limit`` means the default and an
  invalid ``offset`` means 0, as DRF's ``LimitOffsetPagination`` does. ``next``/``previous`` are
  absolute URLs built from the request's own URL, as DRF builds them.
- ``unpaid`` is an outstanding invoice with nothing paid; ``current`` / ``past_due`` and the ageing
  buckets (``1_30`` ... ``over_120``, days past ``due_date``) cover outstanding invoices only (open,
  sent or partly paid, with an amount due); ``sent`` and ``sentStatus=sent`` mean a ``sent_date``
  or ``last_sent_at`` is set (or ``payment_status`` is ``sent``).
- An unknown ``sort`` field falls back to the default, as DRF's ``OrderingFilter`` does; ties are
  broken by id in the same direction; nulls sort last ascending and first descending (Postgres).
- A malformed filter value is a 400 in django-filter's words (``Enter a whole number.``,
  ``Enter a valid date.``, ``Select a valid choice. X is not one of the available choices.``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib import parse

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_SORT = "-invoice_date"

STATUS_CHOICES: frozenset[str] = frozenset(
    {"1_30", "31_60", "61_90", "91_120", "current", "over_120", "paid", "partially_paid", "past_due",
     "sent", "uncollectible", "unpaid", "voided"}  # fmt: skip
)
SENT_CHOICES: frozenset[str] = frozenset({"not_sent", "sent"})
SORT_FIELDS: frozenset[str] = frozenset(
    {"id", "invoice_date", "due_date", "created_at", "last_modified_at", "invoice_number", "ref_number",
     "total_amount", "amount_due", "amount_paid", "client_name", "contract_name", "entity_name", "status",
     "payment_status", "currency", "period_start", "period_end", "paid_date", "voided_date", "client",
     "entity", "contract", "purchase_order_number", "sent_date"}  # fmt: skip
)
_AGEING: dict[str, tuple[int, int | None]] = {
    "1_30": (1, 30),
    "31_60": (31, 60),
    "61_90": (61, 90),
    "91_120": (91, 120),
    "over_120": (121, None),
}


@dataclass(frozen=True)
class ListQuery:
    """A parsed invoice-list query."""

    clients: frozenset[int] = frozenset()
    entities: frozenset[int] = frozenset()
    contract: int | None = None
    currency: str | None = None
    invoice_number: str | None = None
    ref_number: str | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    status: str | None = None
    sent_status: str | None = None
    q: str | None = None
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _positive_int(text: str, *, strict: bool, cutoff: int | None = None) -> int:
    value = int(text)
    if value < 0 or (strict and value == 0):
        raise ValueError(text)
    return min(value, cutoff) if cutoff else value


def parse_query(params: Sequence[tuple[str, str]]) -> tuple[ListQuery | None, dict[str, list[str]]]:
    """Parse the list's query parameters; returns the query or django-filter's 400 body."""
    multi: dict[str, list[str]] = {}
    for key, value in params:
        multi.setdefault(key, []).append(value)

    def last(name: str) -> str | None:
        values = [v for v in multi.get(name, []) if v != ""]
        return values[-1] if values else None

    errors: dict[str, list[str]] = {}

    def ids(name: str) -> frozenset[int]:
        out: set[int] = set()
        for value in multi.get(name, []):
            if value == "":
                continue
            try:
                out.add(int(value))
            except ValueError:
                errors[name] = ["Enter a whole number."]
        return frozenset(out)

    def date(name: str) -> dt.date | None:
        value = last(name)
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            errors[name] = ["Enter a valid date."]
            return None

    def choice(name: str, choices: frozenset[str]) -> str | None:
        value = last(name)
        if value is not None and value not in choices:
            errors[name] = [f"Select a valid choice. {value} is not one of the available choices."]
            return None
        return value

    def one_id(name: str) -> int | None:
        value = last(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            errors[name] = ["Enter a whole number."]
            return None

    query = ListQuery(
        clients=ids("client"),
        entities=ids("entity"),
        contract=one_id("contract"),
        currency=last("currency"),
        invoice_number=last("invoice_number"),
        ref_number=last("ref_number"),
        start_date=date("start_date"),
        end_date=date("end_date"),
        status=choice("status", STATUS_CHOICES),
        sent_status=choice("sentStatus", SENT_CHOICES),
        q=last("q"),
        sort=_sort_param(last("sort")),
        limit=_int_or(last("limit"), DEFAULT_LIMIT, strict=True, cutoff=MAX_LIMIT),
        offset=_int_or(last("offset"), 0, strict=False),
    )
    if errors:
        return None, errors
    return query, {}


def _int_or(text: str | None, default: int, *, strict: bool, cutoff: int | None = None) -> int:
    if text is None:
        return default
    try:
        return _positive_int(text, strict=strict, cutoff=cutoff)
    except ValueError:
        return default


def _sort_param(text: str | None) -> str:
    if not text:
        return DEFAULT_SORT
    name = text[1:] if text.startswith("-") else text
    return text if name in SORT_FIELDS else DEFAULT_SORT


def _outstanding(rec: Mapping[str, Any]) -> bool:
    due: Decimal = rec["amount_due"]
    return rec["payment_status"] in ("open", "sent", "partial") and due > 0


def _days_past_due(rec: Mapping[str, Any], today: dt.date) -> int:
    return (today - dt.date.fromisoformat(rec["due_date"])).days


def _is_sent(rec: Mapping[str, Any]) -> bool:
    return bool(rec.get("sent_date") or rec.get("last_sent_at") or rec["payment_status"] == "sent")


def _in_status(rec: Mapping[str, Any], status: str, today: dt.date) -> bool:
    payment_status = rec["payment_status"]
    if status == "paid":
        return bool(payment_status == "paid")
    if status == "partially_paid":
        return bool(payment_status == "partial")
    if status == "voided":
        return bool(payment_status == "voided")
    if status == "uncollectible":
        return bool(payment_status == "uncollectible")
    if status == "sent":
        return _is_sent(rec)
    if status == "unpaid":
        return _outstanding(rec) and not rec["amount_paid"]
    if not _outstanding(rec):
        return False
    days = _days_past_due(rec, today)
    if status == "current":
        return days <= 0
    if status == "past_due":
        return days > 0
    low, high = _AGEING[status]
    return days >= low and (high is None or days <= high)


def _matches(rec: Mapping[str, Any], query: ListQuery, today: dt.date) -> bool:
    if query.clients and rec["client"] not in query.clients:
        return False
    if query.entities and rec["entity"] not in query.entities:
        return False
    if query.contract is not None and rec["contract"] != query.contract:
        return False
    if query.currency is not None and rec["currency"] != query.currency:
        return False
    if query.invoice_number is not None and rec["invoice_number"] != query.invoice_number:
        return False
    if query.ref_number is not None and rec["ref_number"] != query.ref_number:
        return False
    if query.start_date is not None and rec["invoice_date"] < query.start_date.isoformat():
        return False
    if query.end_date is not None and rec["invoice_date"] > query.end_date.isoformat():
        return False
    if query.status is not None and not _in_status(rec, query.status, today):
        return False
    if query.sent_status is not None and _is_sent(rec) != (query.sent_status == "sent"):
        return False
    if query.q:
        needle = query.q.casefold()
        haystack = (rec.get("shipping_address"), rec.get("invoice_number"), rec.get("message_on_invoice"), rec.get("client_name"))
        if not any(needle in str(text).casefold() for text in haystack if text):
            return False
    return True


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    def key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
        value = rec.get(name)
        if isinstance(value, str):
            value = value.casefold()
        return (value is None, value, rec["id"])

    return key


def select(records: Iterable[Mapping[str, Any]], query: ListQuery, today: dt.date) -> list[Mapping[str, Any]]:
    """The records the query's filters keep, in its sort order (all of them, before paging)."""
    kept = [rec for rec in records if _matches(rec, query, today)]
    descending = query.sort.startswith("-")
    kept.sort(key=_sort_key(query.sort.lstrip("-")), reverse=descending)
    return kept


def _replace_query_param(url: str, key: str, value: int) -> str:
    scheme, netloc, path, query, fragment = parse.urlsplit(url)
    params = parse.parse_qs(query, keep_blank_values=True)
    params[key] = [str(value)]
    return parse.urlunsplit((scheme, netloc, path, parse.urlencode(sorted(params.items()), doseq=True), fragment))


def _remove_query_param(url: str, key: str) -> str:
    scheme, netloc, path, query, fragment = parse.urlsplit(url)
    params = parse.parse_qs(query, keep_blank_values=True)
    params.pop(key, None)
    return parse.urlunsplit((scheme, netloc, path, parse.urlencode(sorted(params.items()), doseq=True), fragment))


def page_links(url: str, count: int, limit: int, offset: int) -> tuple[str | None, str | None]:
    """DRF's ``next`` and ``previous`` links for a limit/offset page of ``count`` results."""
    next_link = None
    if offset + limit < count:
        next_link = _replace_query_param(_replace_query_param(url, "limit", limit), "offset", offset + limit)
    previous_link = None
    if offset > 0:
        with_limit = _replace_query_param(url, "limit", limit)
        if offset - limit <= 0:
            previous_link = _remove_query_param(with_limit, "offset")
        else:
            previous_link = _replace_query_param(with_limit, "offset", offset - limit)
    return next_link, previous_link

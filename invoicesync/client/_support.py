"""The client's supporting text and parsing: secrets, redaction, error summaries, Retry-After, base URLs, ids.

No HTTP is sent from here; ``_http`` uses these to build messages a user can act on.
"""

from __future__ import annotations

import email.utils
import html
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import simplejson

from invoicesync.errors import ApiError, ConfigError, flatten_drf_errors
from invoicesync.models import dumps_json, loads_json
from invoicesync.urls import check_base_url, shown_url

INVOICES_PATH = "/coa/api/v1/invoice/"

_MIN_REDACTED_KEY = 8
_HIDDEN = "<hidden>"


# --- internals --------------------------------------------------------------------------------------


class _Secret:
    """A string that never shows itself in a repr or str, and hides itself in texts."""

    __slots__ = ("_value", "_pattern")

    def __init__(self, value: str) -> None:
        self._value = value
        self._pattern = _key_pattern(value)

    def reveal(self) -> str:
        return self._value

    def hide_in(self, text: str) -> str:
        """``text`` with the secret, as is or written with escapes, replaced by ``<hidden>``."""
        return self._pattern.sub(_HIDDEN, text) if self._pattern is not None else text

    def hide_in_body(self, body: Any) -> Any:
        """A parsed body with the key hidden in every string, names of fields included."""
        if isinstance(body, str):
            return self.hide_in(body)
        if isinstance(body, dict):
            return {self.hide_in(k) if isinstance(k, str) else k: self.hide_in_body(v) for k, v in body.items()}
        if isinstance(body, list):
            return [self.hide_in_body(v) for v in body]
        return body

    def scrub(self, exc: BaseException) -> None:
        """Hide the key in an exception and in every exception chained to it (httpx's, h11's ...).

        Their ``str`` and ``repr`` come from ``args``; an ``ApiError`` also carries the body it quotes.
        """
        todo = [exc]
        seen: set[int] = set()
        while todo and len(seen) < 100:
            e = todo.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            e.args = tuple(self.hide_in(a) if isinstance(a, str) else a for a in e.args)
            if isinstance(e, ApiError):
                e.body = self.hide_in_body(e.body)
                e.field_errors = [(self.hide_in(p), self.hide_in(m)) for p, m in e.field_errors]
            todo += [c for c in (e.__cause__, e.__context__) if c is not None]

    def __repr__(self) -> str:
        return _HIDDEN

    __str__ = __repr__


class _BadBody(Exception):
    """A success status whose body is not the JSON it should be (truncated, HTML from a proxy)."""


@dataclass
class _Reply:
    """What one retried call ended with: a final response, or what a reconcile found instead."""

    response: httpx.Response | None
    data: Any
    attempts: int
    uncertain: bool  # some earlier send may have taken effect
    reconciled: Any = None


@dataclass
class _Failure:
    """One retryable failure: why, and whether the request may have taken effect."""

    uncertain: bool
    exc: Exception | None = None
    response: httpx.Response | None = None


Reconcile = Callable[[], Awaitable[Any]]


def _iso_date(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port
    if port is None:
        port = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, port)


@dataclass(frozen=True)
class _RetryAfter:
    """What a 429's ``Retry-After`` header asked for: ``seconds`` to wait, or None and why not."""

    header: str | None  # as sent, None when absent
    seconds: float | None = None  # None: absent or unusable; back off as usual instead
    problem: str = ""  # why an unusable one is unusable ("is in the past")


def _read_retry_after(value: str | None) -> _RetryAfter:
    """Read ``Retry-After`` (delta-seconds, fractions allowed, or an HTTP-date).

    A date in the past, a negative number, infinity, NaN or anything else is no instruction: the
    caller backs off as usual and can say what the header said.
    """
    if value is None:
        return _RetryAfter(None)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return _RetryAfter(value, problem="is not a finite number of seconds")
        if seconds < 0:
            return _RetryAfter(value, problem="is negative")
        return _RetryAfter(value, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return _RetryAfter(value, problem="is neither a number of seconds nor an HTTP-date")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds <= 0:
        return _RetryAfter(value, problem="is in the past")
    return _RetryAfter(value, seconds)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header, or None when it gives no usable instruction."""
    return _read_retry_after(value).seconds


def _duration(seconds: float) -> str:
    """A wait in words a person can picture: ``45 s``, ``20 min``, ``5 h``, ``12 days``, ``73 years``."""
    if seconds < 100:
        return f"{seconds:.3g} s"
    for unit, size, below in (("min", 60, 100), ("h", 3600, 48), ("days", 86400, 730)):
        if seconds < size * below:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / (365.25 * 86400):.0f} years"


def _key_pattern(key: str) -> re.Pattern[str] | None:
    """What the key looks like in a message: as is, or with any of its characters escaped.

    Servers echo the key in a JSON string (``\\u0073``, ``\\/``), a bytes repr (``\\x7f``), a URL
    (``%2D``) or an HTML page (``&#115;``, ``&amp;``), and any mix of these within the one key.
    """
    if not key:
        return None

    def hexes(code: int, width: int) -> str:  # hex digits of either case
        return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{code:0{width}x}")

    named = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
    parts = []
    for ch in key:
        code = ord(ch)
        forms = [re.escape(ch), r"\\u" + hexes(code, 4), f"&#0*{code};", "&#[xX]0*" + hexes(code, 1) + ";"]
        if code < 0x100:
            forms += [r"\\x" + hexes(code, 2), "%" + hexes(code, 2)]
        if ch in "/\\\"'":
            forms.append(re.escape("\\" + ch))
        if ch in named:
            forms.append(f"&{named[ch]};")
        parts.append("(?:" + "|".join(forms) + ")")
    pattern = "".join(parts)
    if len(key) < _MIN_REDACTED_KEY:
        pattern = f"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
    return re.compile(pattern)


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages: ``a string``, ``null``, ``a boolean``, ``a number``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _id_problem(item: Mapping[str, Any]) -> str | None:
    """What is wrong with an invoice's ``id`` (missing, or not a positive integer), or None."""
    if "id" not in item:
        return "has no 'id'"
    value = item["id"]
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "" if value is None else f" ({_shorten(dumps_json(value), 40)})"
        return f"has an 'id' that is {_kind(value)}{shown}, not an integer"
    if value < 1:
        return f"has an 'id' of {value}, not a positive integer"
    return None


def _base_url(value: str) -> httpx.URL:
    """The base URL checked (http(s), a valid host and port, no query or fragment) and without credentials.

    Raises ``ConfigError``: the CLI's config checks the same rules first, naming the variable or key.
    """
    checked = check_base_url(value, "base URL")
    try:
        url = httpx.URL(checked)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"base URL {shown_url(checked)} is not a valid URL ({exc})") from None
    # Never keep user:password from a URL (it would show in messages).
    return url.copy_with(username=None, password=None)


_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _shorten(text: str, limit: int = 200) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _summarise_text(text: str) -> str:
    """A one-line summary of a non-JSON body: an HTML page's title (or text), else the text, shortened."""
    if "<" in text and ">" in text:
        title = _TITLE.search(text)
        if title and title.group(1).strip():
            return _shorten(html.unescape(title.group(1)))
        return _shorten(html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", text))))
    return _shorten(text)


def _summarise(body: Any) -> str:
    """A readable one-line summary of an error body (DRF errors as ``path: message``)."""
    if body is None or body == "":
        return ""
    if isinstance(body, str):
        return _summarise_text(body)
    pairs = flatten_drf_errors(body)
    if pairs:
        return _shorten("; ".join(f"{p}: {m}" if p else m for p, m in pairs), 1000)
    return _shorten(dumps_json(body))


class _DeadlineExceeded(Exception):
    """The whole response (headers and body) did not arrive within the request's deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the whole response took longer than {seconds:g} s")


def _describe(exc: Exception, timeouts: httpx.Timeout, redact: Callable[[str], str]) -> str:
    """What went wrong with the connection, in words (httpx's own text in parentheses when it has any).

    ``redact`` hides the key in httpx's text before it is shortened (a cut key would show a fragment).
    """
    if isinstance(exc, _DeadlineExceeded):
        return str(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"connecting timed out after {timeouts.connect:g} s"
    elif isinstance(exc, httpx.ConnectError):
        what = "could not connect"
    elif isinstance(exc, httpx.ReadTimeout):
        what = f"no response within {timeouts.read:g} s (read timeout)"
    elif isinstance(exc, httpx.WriteTimeout):
        what = "sending the request timed out"
    elif isinstance(exc, httpx.PoolTimeout):
        what = "no free connection in time (pool timeout)"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "the server dropped the connection"
    elif isinstance(exc, httpx.ReadError):
        what = "the connection failed while reading the response"
    elif isinstance(exc, httpx.WriteError):
        what = "the connection failed while sending the request"
    elif isinstance(exc, _BadBody):
        what = "the success response was not valid JSON"
    else:
        what = "the request failed"
    detail = _shorten(redact(str(exc)), 160)
    return f"{what} ({type(exc).__name__}: {detail})" if detail else f"{what} ({type(exc).__name__})"


def _parse_body(response: httpx.Response) -> Any:
    """An error response's body: parsed JSON when it is JSON, else its text."""
    content = response.content
    if not content:
        return None
    ctype = response.headers.get("content-type", "")
    if "json" in ctype or content[:1] in (b"{", b"["):
        try:
            return loads_json(content)
        except (ValueError, simplejson.JSONDecodeError):
            pass
    return response.text


def _money(value: Any) -> Decimal | None:
    """An amount as Campfire writes it (``"10.50"``), or None when it is missing or not an amount.

    Never 0 for what cannot be read: a payment check that took an unreadable ``amount_paid`` for 0
    could decide that a recorded payment was not, and record it twice.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _payment_total(payment: Mapping[str, Any]) -> Decimal | None:
    """The amount a payment body records, or None when one of its amounts is not an amount."""
    total = Decimal(0)
    for key in ("transactions", "credit_memos", "empty_transactions"):
        for item in payment.get(key) or ():
            if isinstance(item, Mapping):
                amount = _money(item.get("amount"))
                if amount is None:
                    return None
                total += amount
    return total


def _int_or(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def _count(items: Any) -> int:
    return len(items) if isinstance(items, list) else 0


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_query_value(v) for v in value]
    return value


def _check_listed(items: list[Any], page: int) -> None:
    """Every listed invoice is an object with a positive integer id (look-ups match and record ids)."""
    for i, item in enumerate(items):
        problem = _id_problem(item) if isinstance(item, Mapping) else f"is {_kind(item)}, not an invoice object"
        if problem:
            raise ApiError(
                f"GET {INVOICES_PATH}: results[{i}] of page {page} {problem}; the listing cannot be used",
                method="GET",
                path=INVOICES_PATH,
            )

def _endless(what: str, pages: int, listed: int, why: str) -> ApiError:
    return ApiError(
        f"GET {INVOICES_PATH}: pagination does not end: {what} after {pages} pages and {listed} invoices{why}; "
        "stopped (a proxy rewriting the links, or a fault at Campfire, can cause this).",
        method="GET",
        path=INVOICES_PATH,
    )

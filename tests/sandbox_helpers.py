"""Shared pieces of the sandbox tests: the seed page's example request and response, and an HTTP client.

The seed page (``shared/campfire/000_cba3c45ccf34d0af.txt`` beside the checkout, or ``$INVOICESYNC_SEED_PAGE``) is
the authority for the Create Invoice body and its 201 response; the tests read both from it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoicesync.models import dumps_json, loads_json
from invoicesync.sandbox import DEFAULT_TOKEN, Sandbox
from invoicesync.sandbox.server import BackgroundServer

# shared/ sits beside the checkout (for developers and CI alike); the variable points elsewhere.
SEED_PAGE = Path(
    os.environ.get("INVOICESYNC_SEED_PAGE")
    or Path(__file__).resolve().parents[2] / "shared" / "campfire" / "000_cba3c45ccf34d0af.txt"
)
API = "/coa/api/v1/invoice/"
AUTH = {"Authorization": f"Token {DEFAULT_TOKEN}"}


@cache
def _seed_examples() -> tuple[Any, Any]:
    if not SEED_PAGE.exists():
        if os.environ.get("CI"):  # never skipped in CI: the sandbox is pinned to the seed page there
            pytest.fail(f"seed page not found at {SEED_PAGE}")
        pytest.skip(f"seed page not found at {SEED_PAGE}")
    text = SEED_PAGE.read_text(encoding="utf-8")
    start = text.index("--data '") + len("--data '")
    end = text.index("}'", start) + 1
    request = loads_json(text[start:end])
    response_start = text.index("{", end)
    decoder_end = _json_end(text, response_start)
    response = loads_json(text[response_start:decoder_end])
    return request, response


def _json_end(text: str, start: int) -> int:
    """Index just past the JSON object starting at ``start`` (strings may hold braces)."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unterminated JSON object in the seed page")


def seed_request() -> dict[str, Any]:
    """A fresh copy of the seed page's example Create Invoice request body."""
    return copy.deepcopy(_seed_examples()[0])


def seed_response() -> dict[str, Any]:
    """A fresh copy of the seed page's example 201 response body."""
    return copy.deepcopy(_seed_examples()[1])


def invoice_body(**over: Any) -> dict[str, Any]:
    """A small valid create body (entity 54, client 33973, one line of 100 + 10 tax)."""
    body: dict[str, Any] = {
        "entity": 54,
        "client": 33973,
        "invoice_date": "2025-07-01",
        "due_date": "2025-07-31",
        "terms": "net_30",
        "lines": [{"product": 2545, "description": "Subscription", "quantity": 2, "rate": 50, "tax": 10}],
    }
    body.update(over)
    return body


class Api:
    """A thin JSON client for the sandbox over HTTP, sending money as Decimal."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        content = None if body is None else dumps_json(body)
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.http.request(method, path, content=content, headers=headers, **kw)

    def create(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        response = self.request("POST", API, body, **kw)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = loads_json(response.text)
        return data


def data(response: httpx.Response) -> Any:
    """The response body parsed with Decimal money."""
    return loads_json(response.text)


@contextmanager
def served(sandbox: Sandbox) -> Iterator[tuple[str, Api]]:
    """The sandbox over loopback HTTP, with an authenticated ``Api`` client."""
    with BackgroundServer(sandbox) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
        yield url, Api(http)

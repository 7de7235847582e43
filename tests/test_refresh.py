"""refresh.read_back against servers that answer the list in awkward ways; changes_outside's wording."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from invoicesync.client import CampfireClient
from invoicesync.refresh import changes_outside, read_back
from invoicesync.state import State
from tests.invoices import desired, new_state

BASE = "https://api.campfire.test"


def managed(n: int = 6) -> State:
    return new_state(*((desired(f"inv-{i}", invoice_number=f"N-{i}"), 100 + i) for i in range(n)))


def serve(state: State, *, next_link: str | None = None, deleted: frozenset[int] = frozenset(),
          flagged: frozenset[int] = frozenset()) -> tuple[httpx.MockTransport, list[httpx.URL]]:
    """A server holding the state's invoices: the list (one page, ``next_link`` if given) and GET by id."""
    seen: list[httpx.URL] = []
    invoices = {r.id: {**r.body, "id": r.id, "status": "open", "payment_status": "open", "is_deleted": r.id in flagged}
                for r in state.invoices.values() if r.id not in deleted}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        path = request.url.path
        if path == "/coa/api/v1/invoice/":
            listed = [inv for inv in invoices.values()]
            return httpx.Response(200, json=_jsonable({"count": len(listed) + (5 if next_link else 0),
                                                       "next": next_link, "previous": None, "results": listed}))
        invoice_id = int(path.rstrip("/").rsplit("/", 1)[1])
        if invoice_id in invoices and invoice_id not in flagged:
            return httpx.Response(200, json=_jsonable(invoices[invoice_id]))
        return httpx.Response(404, json={"detail": "Not found."})

    return httpx.MockTransport(handler), seen


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value) if not isinstance(value, (int, str, bool, type(None))) else value


def read(state: State, transport: httpx.MockTransport) -> Any:
    async def main() -> Any:
        async with CampfireClient(BASE, "k" * 20, transport=transport) as client:
            return await read_back(state, client, parallelism=4)

    return asyncio.run(main())


def test_one_listing_reads_them_all() -> None:
    state = managed()
    transport, seen = serve(state)
    result = read(state, transport)
    assert set(result.invoices) == set(state.invoices) and all(result.invoices.values())
    assert (result.listings, result.fetched, len(seen)) == (1, 0, 1)


def test_a_next_link_off_the_host_gives_way_to_reading_by_id_with_a_note() -> None:
    """Behind a proxy that ends TLS, DRF may link to http://: never followed, and the plan still works."""
    state = managed()
    transport, seen = serve(state, next_link="http://api.campfire.test/coa/api/v1/invoice/?limit=1000&offset=1000")
    result = read(state, transport)
    assert all(result.invoices.values()) and result.fetched == len(state.invoices)
    assert all(u.scheme == "https" for u in seen)
    assert len(result.notes) == 1 and "http://api.campfire.test" in result.notes[0]


def test_deleted_invoices_are_confirmed_by_id_whether_missing_or_flagged() -> None:
    state = managed()
    transport, seen = serve(state, deleted=frozenset({101}), flagged=frozenset({102}))
    result = read(state, transport)
    assert result.invoices["inv-1"] is None and result.invoices["inv-2"] is None
    assert result.invoices["inv-0"] is not None and result.fetched == 2


def test_an_adopted_invoice_without_invoicesyncs_marks_has_not_changed_outside() -> None:
    state = managed(1)
    record = state.invoices["inv-0"]
    live = {**record.body, "id": record.id, "source": None, "source_id": None, "status": "open"}
    assert changes_outside(state, {"inv-0": live}) == []
    live["due_date"] = "2025-09-30"
    (change,) = changes_outside(state, {"inv-0": live})
    assert change.what == ("due_date 2025-07-31 -> 2025-09-30",)

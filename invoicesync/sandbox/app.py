"""The sandbox's HTTP face: the Starlette app, its Campfire routes and control API, and ``Sandbox``.

Owns the invoice endpoints of API.md (paths, methods, status codes, error bodies), token
authentication (``Authorization: Token <key>``, DRF/Knox wording), ``Idempotency-Key`` handling and
the ``/_sandbox/`` control API. Validation lives in ``validation``, records and their lifecycle in
``store``, the list's query language in ``listing`` and fault injection in ``faults``.

Behaviour the real API does not document [unverified], kept here so clients meet it consistently:

- ``Idempotency-Key`` (on any non-GET Campfire request) is honoured unless the sandbox is built with
  ``honour_idempotency=False``: the same key with the same method, path and JSON body replays the
  first response (status and body, with ``Idempotent-Replayed: true``); the same key with anything
  else is a 422. Recorded outcomes include errors, and survive restarts with a data file.
- Request bodies are read as JSON whatever their content type; an empty body is ``{}``.
- Unknown paths and non-numeric ids are 404 ``{"detail": "Not found."}``; no trailing-slash redirects.
- List items carry the retrieve response's keys plus ``is_deleted`` (always false).
- ``POST .../pay/`` records ``empty_transactions`` only; bank ``transactions`` and credit or debit
  memos are answered with 400 ``{"error": ...}``.
- ``POST /_sandbox/reset`` also zeroes the stats, restarts the id sequences and fills the rate
  limit's bucket.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from invoicesync.models import canonical_json, dumps_json, loads_json
from invoicesync.sandbox.faults import Clock, FaultInjector, FaultMiddleware, FaultSettings, Stats
from invoicesync.sandbox.fixtures import Fixtures, load_fixtures
from invoicesync.sandbox.listing import page_links, parse_query, select
from invoicesync.sandbox.store import InvoiceStore, NotFound, Refused, render_payment
from invoicesync.sandbox.validation import (
    UnsupportedPayment,
    not_a_dict,
    parse_void_date,
    validate_invoice,
    validate_payment,
)

DEFAULT_TOKEN = "sandbox"
API = "/coa/api/v1/invoice"

#: A handler runs synchronously under the store's lock: (request, parsed body) -> (status, payload).
Handler = Callable[[Request, Any], tuple[int, Any]]

_NOT_FOUND = {"detail": "Not found."}


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    if payload is None:
        return Response(status_code=status, headers=headers)
    return Response(dumps_json(payload), status_code=status, media_type="application/json", headers=headers)


class Sandbox:
    """A stateful, Campfire-compatible invoice API with fault injection, as an ASGI app.

    ``data_file`` keeps the invoices in a JSON file: an atomically written snapshot plus a change log
    beside it (``<file>.changes``, one fsynced line per change), read on start and folded into the
    snapshot by ``close()``; ``fixtures_file`` replaces the built-in fixtures; ``tokens`` are the accepted API keys;
    ``honour_idempotency=False`` makes the sandbox ignore ``Idempotency-Key`` as Campfire may;
    ``faults`` are the fault settings and rate limit to start with; ``clock`` (``time.monotonic`` by
    default) times the rate limit's refill, for tests that step time themselves.
    """

    def __init__(
        self,
        data_file: Path | None = None,
        fixtures_file: Path | None = None,
        tokens: Collection[str] = (DEFAULT_TOKEN,),
        honour_idempotency: bool = True,
        faults: FaultSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.fixtures: Fixtures = load_fixtures(fixtures_file)
        self.store = InvoiceStore(self.fixtures, data_file)
        self.tokens = frozenset(tokens)
        self.honour_idempotency = honour_idempotency
        self._injector = FaultInjector(faults) if clock is None else FaultInjector(faults, clock)
        self._stats = Stats()
        self.app = self._build_app()

    # --- Python API --------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultSettings:
        """The fault settings in force."""
        return self._injector.settings

    def set_faults(self, settings: FaultSettings) -> None:
        """Replace the fault settings and restart the random stream from ``settings.seed``.

        The rate limit's bucket starts full again when ``rate_limit`` or ``burst`` change.
        """
        self._injector.configure(settings, reseed=True)

    def stats(self) -> dict[str, Any]:
        """Request and fault counters, plus the number of current invoices."""
        out = self._stats.snapshot()
        out["invoices"] = len(self.store.records())
        return out

    def reset(self) -> None:
        """Forget every invoice (fixtures stay), zero the counters and fill the rate limit's bucket."""
        self.store.reset()
        self._stats.reset()
        self._injector.refill()

    def invoices(self) -> list[dict[str, Any]]:
        """Every current invoice as the API would return it (copies), by id."""
        with self.store.lock:
            records = sorted(self.store.records(), key=lambda rec: int(rec["id"]))
            return [copy.deepcopy(self.store.render(rec)) for rec in records]

    def close(self) -> None:
        """Fold the data file's change log into its snapshot (a tidy file for the next start)."""
        self.store.compact()

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport running this sandbox in process; a dropped response raises ``RemoteProtocolError``."""
        from invoicesync.sandbox.transport import SandboxTransport

        return SandboxTransport(self.app)

    # --- plumbing ----------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        def route(path: str, handlers: dict[str, Handler]) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._dispatch(request, handlers[request.method])

            return Route(path, endpoint, methods=list(handlers))

        routes = [
            route(f"{API}/", {"GET": self._list, "POST": self._create}),
            route(f"{API}/bulk-create", {"POST": self._bulk_create}),
            route(
                f"{API}/{{invoice_id:int}}/",
                {"GET": self._retrieve, "PUT": self._put, "PATCH": self._patch, "DELETE": self._delete},
            ),
            route(f"{API}/{{invoice_id:int}}/void/", {"POST": self._void}),
            route(f"{API}/{{invoice_id:int}}/reopen/", {"POST": self._reopen}),
            route(f"{API}/{{invoice_id:int}}/pay/", {"POST": self._pay}),
            route(
                f"{API}/{{invoice_id:int}}/payment/{{payment_id:int}}/void/",
                {"POST": self._void_payment, "DELETE": self._delete_payment},
            ),
            route("/coa/api/entity", {"GET": self._entities}),
            Route("/_sandbox/faults", self._control_faults, methods=["GET", "POST"]),
            Route("/_sandbox/reset", self._control_reset, methods=["POST"]),
            Route("/_sandbox/stats", self._control_stats, methods=["GET"]),
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(FaultMiddleware, injector=self._injector, stats=self._stats)],
            exception_handlers={HTTPException: self._http_error},
        )
        app.router.redirect_slashes = False
        return app

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return _json_response(405, {"detail": f'Method "{request.method}" not allowed.'}, exc.headers)
        if exc.status_code == 404:
            return _json_response(404, _NOT_FOUND)
        return _json_response(exc.status_code, {"detail": exc.detail})

    def _authenticate(self, request: Request) -> str | None:
        """DRF/Knox token authentication; returns the 401 detail, or None when authenticated."""
        parts = request.headers.get("authorization", "").split()
        if not parts or parts[0].lower() != "token":
            return "Authentication credentials were not provided."
        if len(parts) == 1:
            return "Invalid token header. No credentials provided."
        if len(parts) > 2:
            return "Invalid token header. Token string should not contain spaces."
        if parts[1] not in self.tokens:
            return "Invalid token."
        return None

    async def _dispatch(self, request: Request, handler: Handler) -> Response:
        problem = self._authenticate(request)
        if problem is not None:
            return _json_response(401, {"detail": problem}, {"WWW-Authenticate": "Token"})
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The client gave up before sending its whole request: nothing to answer, nothing to log.
            return Response(status_code=499)
        data: Any = {}
        parse_error: str | None = None
        if raw.strip():
            try:
                data = loads_json(raw)
            except ValueError as exc:
                parse_error = f"JSON parse error - {exc}"
        key = request.headers.get("idempotency-key") if self.honour_idempotency and request.method != "GET" else None
        with self.store.lock:
            fingerprint = ""
            if key:
                body_text = canonical_json(data) if parse_error is None else raw.decode("utf-8", "replace")
                fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n{body_text}".encode()).hexdigest()
                prior = self.store.idempotent(key)
                if prior is not None:
                    if prior["fingerprint"] != fingerprint:
                        self._stats.add("idempotency_conflicts")
                        return _json_response(422, {"detail": "Idempotency-Key reused with a different request body."})
                    self._stats.add("idempotent_replays")
                    text: str = prior["body"]
                    return Response(
                        text or None,
                        status_code=prior["status"],
                        media_type="application/json" if text else None,
                        headers={"Idempotent-Replayed": "true"},
                    )
            if parse_error is not None:
                status, payload = 400, {"detail": parse_error}
            else:
                try:
                    status, payload = handler(request, data)
                except NotFound:
                    status, payload = 404, _NOT_FOUND
                except Refused as exc:
                    status, payload = 400, exc.body
                except UnsupportedPayment:
                    status, payload = 400, {
                        "error": "The sandbox records manual payments only (empty_transactions); "
                        "bank transactions and credit or debit memos are not emulated."
                    }
            text = dumps_json(payload) if payload is not None else ""
            if key:
                self.store.remember(key, fingerprint, status, text)
            if request.method != "GET":
                self.store.save()
        return Response(text or None, status_code=status, media_type="application/json" if text else None)

    @staticmethod
    def _id(request: Request, name: str = "invoice_id") -> int:
        value: int = request.path_params[name]
        return value

    # --- Campfire handlers (run under the store lock) ----------------------------------------------

    def _entities(self, request: Request, data: Any) -> tuple[int, Any]:
        """``GET /coa/api/entity``: a plain array (not paginated) of the fixture entities."""
        entities = self.fixtures.objects.get("entities", {})
        return 200, [
            {"id": pk, "name": e.get("name"), "currency": e.get("currency"), "is_active": e.get("is_active", True)}
            for pk, e in sorted(entities.items())
        ]

    def _list(self, request: Request, data: Any) -> tuple[int, Any]:
        query, errors = parse_query(request.query_params.multi_items())
        if query is None:
            return 400, errors
        selected = select(self.store.records(), query, self.store.today())
        self._stats.add("lists")
        page = selected[query.offset : query.offset + query.limit]
        next_link, previous_link = page_links(str(request.url), len(selected), query.limit, query.offset)
        return 200, {
            "count": len(selected),
            "next": next_link,
            "previous": previous_link,
            "results": [self.store.render(rec, list_item=True) for rec in page],
        }

    def _create(self, request: Request, data: Any) -> tuple[int, Any]:
        body, _, errors = validate_invoice(data, self.fixtures)
        if body is None:
            return 400, errors
        rec = self.store.create(body)
        self._stats.add("creates")
        return 201, self.store.render(rec)

    def _bulk_create(self, request: Request, data: Any) -> tuple[int, Any]:
        if not isinstance(data, dict):
            return 400, not_a_dict(data)
        items = data.get("invoices")
        if items is None:
            return 400, {"invoices": ["This field is required." if "invoices" not in data else "This field may not be null."]}
        if not isinstance(items, list):
            return 400, {"invoices": [f'Expected a list of items but got type "{type(items).__name__}".']}
        if not items:
            return 400, {"invoices": ["Ensure this field has at least 1 elements."]}
        results = [validate_invoice(item, self.fixtures) for item in items]
        if any(errors for _, _, errors in results):
            return 400, {"invoices": [errors for _, _, errors in results]}
        records = self.store.create_many(body for body, _, _ in results if body is not None)
        self._stats.add("creates", len(records))
        return 201, [self.store.render(rec) for rec in records]

    def _retrieve(self, request: Request, data: Any) -> tuple[int, Any]:
        self._stats.add("reads")
        return 200, self.store.render(self.store.get(self._id(request)))

    def _put(self, request: Request, data: Any) -> tuple[int, Any]:
        invoice_id = self._id(request)
        self.store.check_editable(invoice_id)
        body, _, errors = validate_invoice(data, self.fixtures)
        if body is None:
            return 400, errors
        rec = self.store.replace(invoice_id, body)
        self._stats.add("updates")
        return 200, self.store.render(rec)

    def _patch(self, request: Request, data: Any) -> tuple[int, Any]:
        invoice_id = self._id(request)
        current = self.store.check_editable(invoice_id)
        body, _, errors = validate_invoice(data, self.fixtures, base=self.store.body_of(current))
        if body is None:
            return 400, errors
        rec = self.store.replace(invoice_id, body, keep_lines="lines" not in data)
        self._stats.add("updates")
        return 200, self.store.render(rec)

    def _delete(self, request: Request, data: Any) -> tuple[int, Any]:
        self.store.delete(self._id(request))
        self._stats.add("deletes")
        return 204, None

    def _void(self, request: Request, data: Any) -> tuple[int, Any]:
        invoice_id = self._id(request)
        self.store.get(invoice_id)
        void_date, errors = parse_void_date(data)
        if errors:
            return 400, errors
        rec = self.store.void(invoice_id, void_date)
        self._stats.add("voids")
        return 200, self.store.render(rec)

    def _reopen(self, request: Request, data: Any) -> tuple[int, Any]:
        rec = self.store.reopen(self._id(request))
        self._stats.add("reopens")
        return 200, self.store.render(rec)

    def _pay(self, request: Request, data: Any) -> tuple[int, Any]:
        invoice_id = self._id(request)
        self.store.get(invoice_id)
        payments, errors = validate_payment(data, self.fixtures)
        if errors:
            return 400, errors
        rec = self.store.pay(invoice_id, payments)
        self._stats.add("payments", len(payments))
        return 200, self.store.render(rec)

    def _void_payment(self, request: Request, data: Any) -> tuple[int, Any]:
        void_date, errors = parse_void_date(data)
        if errors:
            return 400, errors
        payment = self.store.void_payment(self._id(request), self._id(request, "payment_id"), void_date)
        self._stats.add("payment_voids")
        return 200, render_payment(payment)

    def _delete_payment(self, request: Request, data: Any) -> tuple[int, Any]:
        self.store.delete_payment(self._id(request), self._id(request, "payment_id"))
        return 204, None

    # --- control API (no auth, no faults) ----------------------------------------------------------

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "GET":
            return _json_response(200, self.faults.to_json())
        raw = await request.body()
        try:
            data = loads_json(raw) if raw.strip() else {}
        except ValueError as exc:
            return _json_response(400, {"detail": f"JSON parse error - {exc}"})
        if not isinstance(data, dict):
            return _json_response(400, not_a_dict(data))
        known = {f.name for f in fields(FaultSettings)}
        errors: dict[str, list[str]] = {k: ["Unknown fault setting."] for k in data if k not in known}
        values = asdict(self.faults)
        for name, value in data.items():
            if name not in known:
                continue
            if name == "seed":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    errors[name] = ["A valid integer is required."]
            elif name == "burst":
                # The bound first: int() of a Decimal like 1E+99999999 would take forever.
                if not _is_number(value) or not -(2**63) < value < 2**63 or value != int(value):
                    errors[name] = ["A valid integer is required."]
                else:
                    value = int(value)
            elif name == "rate_limit" and value is None:
                pass  # no limit
            elif not _is_number(value):
                errors[name] = ["A valid number is required."]
            else:
                value = float(value)
            values[name] = value
        if not errors:
            try:
                settings = FaultSettings(**values)
            except ValueError as exc:
                return _json_response(400, {"non_field_errors": [str(exc)]})
            self._injector.configure(settings, reseed="seed" in data)
        if errors:
            return _json_response(400, errors)
        return _json_response(200, self.faults.to_json())

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return _json_response(200, {"invoices": 0})

    async def _control_stats(self, request: Request) -> Response:
        return _json_response(200, self.stats())


def _is_number(value: Any) -> bool:
    """A JSON number (money-safe Decimal, int or float) that is finite; not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int | float) and math.isfinite(value)

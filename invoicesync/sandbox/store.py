"""The sandbox's stateful store: invoices, their payments, id sequences, idempotency records, persistence.

Owns what Campfire computes server-side and keeps: ids (invoices from 145055, lines from 337587,
journal entries from 7491952, as in the seed page), ``total_amount`` (lines' amount plus tax, less
the invoice discount), ``amount_paid``/``amount_due``, ``status``/``payment_status``, names filled
in from the fixtures, timestamps in Campfire's ``2025-07-25T18:54:43+0000`` format, and the
lifecycle operations (replace, patch, delete, void, reopen, pay, void or delete a payment).

A record is a dict with every key of the seed's 201 response plus a few writable fields the
response does not show (``discount``, ``tags``, ``vat_number``, ...) and private bookkeeping keys
starting with ``_``; ``render`` cuts it down to the response. Money is ``Decimal`` throughout.

Storage is in memory, or, given a data file, also on disk, durable before each response: a JSON
snapshot written atomically (temporary file, fsync, ``os.replace``, fsync of the folder) plus
``<data file>.changes``, one fsynced JSON line per mutating request with the records it changed.
The changes are folded into a new snapshot once they outgrow it (and on reset), so a save costs
what changed, not the whole store; a start reads the snapshot, then replays the changes. Every public method takes
the store's lock, so the store may be used from the server thread and a test thread at once.

Deviations from Campfire, all [unverified] in API.md: ``past_due_days`` stays null (no nightly
ageing job); a voided invoice has ``amount_due`` 0; voiding an invoice with live payments, paying
more than is due and editing a paid, partly paid or voided invoice are refused with 400.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from invoicesync.errors import InvoiceSyncError
from invoicesync.models import (
    BODY_FIELDS,
    LINE_FIELDS,
    InvoiceBody,
    dumps_json,
    loads_json,
    to_wire,
)
from invoicesync.money import canonical_decimal, line_amount
from invoicesync.sandbox.fixtures import Fixtures
from invoicesync.sandbox.validation import ManualPayment

#: The keys of an invoice response, in the order of the seed page's 201 example.
RESPONSE_KEYS: tuple[str, ...] = (
    "id", "lines", "payments", "payment_journal_entries", "client_name", "client_email",
    "client_invoice_message", "client_use_stripe_auto_bill", "status", "past_due_days", "entity_name",
    "entity_currency", "entity_invoice_message", "total_amount", "amount_paid", "amount_due",
    "contract_name", "attachments", "invoice_number", "revenue_transactions", "item_date",
    "voided_journal_entry_order", "search_vector", "search_text", "auto_send_invoice",
    "auto_send_invoice_at", "auto_sent_at", "reminder_sent_dates", "billing_address",
    "shipping_address", "terms", "ref_number", "purchase_order_number", "invoice_date", "due_date",
    "shipping_date", "paid_date", "uncollectible_date", "sent_date", "period_start", "period_end",
    "location_of_sale", "message_on_invoice", "payment_status", "warning_message", "created_at",
    "last_modified_at", "currency", "exchange_rate", "exchange_rate_book", "last_sent_at",
    "integration_id", "integration_context", "use_stripe_auto_bill", "stripe_payment_link_id",
    "stripe_payment_intent_id", "stripe_invoice_id", "stripe_pdf_url", "stripe_payment_link",
    "source", "source_id", "voided_date", "entity", "client", "bad_debt_journal_entry",
    "journal_entry", "contract", "avalara_connection", "sphere_connection", "anrok_connection",
    "tax_rate", "stripe_connection", "source_file", "voided_journal_entry",
)  # fmt: skip

#: The keys of a line in an invoice response, in the seed page's order.
LINE_RESPONSE_KEYS: tuple[str, ...] = (
    "id", "product_name", "stripe_product_id", "product_is_taxable", "anrok_item_id", "service_date",
    "description", "quantity", "rate", "currency", "amount", "tax", "tax_description", "created_at",
    "last_modified_at", "product",
)  # fmt: skip

#: The keys of a payment (Campfire's ``AccountingInvoicePayment``).
PAYMENT_KEYS: tuple[str, ...] = (
    "id", "credit_memo", "payment_transaction_bank_description", "payment_journal_entry_order",
    "payment_intercompany_journal", "voided_journal_entry_order", "currency", "amount", "payment_date",
    "created_at", "voided_date", "source", "payment_type", "last_modified_at", "customer", "invoice",
    "payment_journal_entry", "payment_transaction", "fx_gain_loss_realized_transaction",
    "payment_term_discount_transaction", "voided_journal_entry", "payment_transactions",
)  # fmt: skip

#: List items carry the response keys plus ``is_deleted`` (always false: deleted invoices are gone).
LIST_EXTRA_KEYS: tuple[str, ...] = ("is_deleted",)

FIRST_IDS: dict[str, int] = {"invoice": 145055, "line": 337587, "journal_entry": 7491952, "payment": 51220, "number": 493}
FORMAT_VERSION = 1
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"
_MIN_COMPACT_BYTES = 1 << 20

_LIST_DEFAULTS: dict[str, Any] = {"revenue_transactions": [], "tags": []}
_DEFAULTS: dict[str, Any] = {
    "auto_send_invoice": False,
    "use_stripe_auto_bill": False,
    "reminder_sent_dates": {},
    "exchange_rate": Decimal(1),
    "exchange_rate_book": Decimal(1),
}
_ZERO = Decimal(0)


class SandboxDataError(InvoiceSyncError):
    """The sandbox's data file cannot be read or written."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


class Refused(Exception):
    """An operation Campfire refuses with 400; ``body`` is the error body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.body = body


class NotFound(Exception):
    """No such invoice or payment (404)."""


def timestamp(moment: dt.datetime) -> str:
    """Campfire's timestamp format: ``2025-07-25T18:54:43+0000`` (UTC)."""
    return moment.astimezone(dt.timezone.utc).strftime(TIMESTAMP_FORMAT)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _money(value: Decimal) -> Decimal:
    return canonical_decimal(value)


class InvoiceStore:
    """Invoices by id, with Campfire's server-side behaviour, optionally persisted to a JSON file."""

    def __init__(
        self,
        fixtures: Fixtures,
        data_file: Path | None = None,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.fixtures = fixtures
        self.data_file = data_file
        self.clock = clock
        self.lock = threading.RLock()
        self._invoices: dict[int, dict[str, Any]] = {}
        self._idempotency: dict[str, dict[str, Any]] = {}
        self._next: dict[str, int] = dict(FIRST_IDS)
        self._dirty: set[int] = set()
        self._dirty_keys: set[str] = set()
        self._snapshot_bytes = 0
        self._changes_bytes = 0
        self.changes_file = data_file.with_name(data_file.name + ".changes") if data_file is not None else None
        if data_file is not None:
            self._load(data_file)

    # --- ids and time ------------------------------------------------------------------------------

    def _take(self, sequence: str) -> int:
        value = self._next[sequence]
        self._next[sequence] = value + 1
        return value

    def today(self) -> dt.date:
        """Today's date by the store's clock (UTC)."""
        return self.clock().date()

    # --- reading -----------------------------------------------------------------------------------

    def get(self, invoice_id: int) -> dict[str, Any]:
        """The record of an invoice; raises ``NotFound``."""
        with self.lock:
            try:
                return self._invoices[invoice_id]
            except KeyError:
                raise NotFound() from None

    def records(self) -> list[dict[str, Any]]:
        """Every current invoice record (shared, not copied: callers must not change them)."""
        with self.lock:
            return list(self._invoices.values())

    def render(self, record: Mapping[str, Any], *, list_item: bool = False) -> dict[str, Any]:
        """The API's view of a record: exactly the seed response's keys (plus ``is_deleted`` in lists)."""
        out = {key: record[key] for key in RESPONSE_KEYS}
        out["lines"] = [{key: line[key] for key in LINE_RESPONSE_KEYS} for line in record["lines"]]
        out["payments"] = [render_payment(p) for p in record["payments"]]
        if list_item:
            out["is_deleted"] = False
        return out

    def body_of(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The writable fields of a record as a request body, the base a PATCH is laid over."""
        body = {k: record[k] for k in BODY_FIELDS if record.get(k) is not None}
        body["lines"] = [{k: line[k] for k in LINE_FIELDS if line.get(k) is not None} for line in record["lines"]]
        return body

    # --- building records --------------------------------------------------------------------------

    def _line(self, wire: Mapping[str, Any], currency: str | None, now: str) -> dict[str, Any]:
        product_id = wire.get("product")
        product = self.fixtures.get("products", product_id) if product_id is not None else None
        line: dict[str, Any] = {k: None for k in LINE_RESPONSE_KEYS}
        line.update({k: wire.get(k) for k in LINE_FIELDS})
        line.update(
            id=self._take("line"),
            product_name=product.get("name") if product else None,
            product_is_taxable=bool(product.get("is_taxable", False)) if product else False,
            quantity=wire.get("quantity", Decimal(1)),
            amount=_money(line_amount(wire)),
            tax=wire.get("tax", _ZERO),
            currency=wire.get("currency") or currency,
            created_at=now,
            last_modified_at=now,
        )
        return line

    def _build(self, body: InvoiceBody, previous: Mapping[str, Any] | None, keep_lines: bool) -> dict[str, Any]:
        """A record from a validated body; ``previous`` keeps id, creation and payments (PUT/PATCH)."""
        wire = to_wire(body)
        now = timestamp(self.clock())
        entity = self.fixtures.get("entities", wire["entity"]) or {}
        client = self.fixtures.get("clients", wire["client"]) if "client" in wire else None
        contract = self.fixtures.get("contracts", wire["contract"]) if "contract" in wire else None
        rec: dict[str, Any] = {k: None for k in RESPONSE_KEYS}
        for key in BODY_FIELDS:
            if key == "lines":
                continue
            default = _LIST_DEFAULTS.get(key) if key in _LIST_DEFAULTS else _DEFAULTS.get(key)
            rec[key] = wire.get(key, copy.deepcopy(default))
        currency = wire.get("currency") or entity.get("currency")
        rec.update(
            currency=currency,
            entity_name=entity.get("name"),
            entity_currency=entity.get("currency"),
            entity_invoice_message=entity.get("invoice_message"),
            client_name=client.get("name") if client else None,
            client_email=client.get("email") if client else None,
            client_invoice_message=client.get("invoice_message") if client else None,
            client_use_stripe_auto_bill=bool(client.get("use_stripe_auto_bill", False)) if client else False,
            contract_name=contract.get("name") if contract else None,
            attachments=[],
            last_modified_at=now,
            _base_status=wire.get("payment_status", "open"),
        )
        if previous is None:
            rec.update(
                id=self._take("invoice"),
                created_at=now,
                journal_entry=self._take("journal_entry"),
                payments=[],
                payment_journal_entries=[],
            )
        else:
            for key in ("id", "created_at", "journal_entry", "payments", "payment_journal_entries",
                        "voided_journal_entry", "voided_journal_entry_order"):  # fmt: skip
                rec[key] = previous[key]
            if "invoice_number" not in wire:
                rec["invoice_number"] = previous["invoice_number"]
        if rec["invoice_number"] is None:
            rec["invoice_number"] = f"INV-{self._take('number'):07d}"
        if keep_lines and previous is not None:
            rec["lines"] = previous["lines"]
        else:
            rec["lines"] = [self._line(line, currency, now) for line in wire["lines"]]
        total = sum((line["amount"] + (line["tax"] or _ZERO) for line in rec["lines"]), _ZERO)
        rec["total_amount"] = _money(total - (rec.get("discount") or _ZERO))
        _settle(rec)
        return rec

    # --- changing ----------------------------------------------------------------------------------

    def create(self, body: InvoiceBody) -> dict[str, Any]:
        """Create an invoice from a validated body; returns its record."""
        with self.lock:
            rec = self._build(body, None, keep_lines=False)
            self._invoices[rec["id"]] = rec
            self._dirty.add(rec["id"])
            return rec

    def create_many(self, bodies: Iterable[InvoiceBody]) -> list[dict[str, Any]]:
        """Create several invoices at once (bodies already validated, so none can fail)."""
        with self.lock:
            return [self.create(body) for body in bodies]

    def check_editable(self, invoice_id: int) -> dict[str, Any]:
        """The record, if a PUT/PATCH may change it; raises ``Refused`` for paid, partly paid, voided."""
        with self.lock:
            rec = self.get(invoice_id)
            problem = {
                "paid": "A paid invoice cannot be edited.",
                "partial": "A partially paid invoice cannot be edited; void its payments first.",
                "voided": "A voided invoice cannot be edited; reopen it first.",
            }.get(rec["payment_status"])
            if problem:
                raise Refused({"non_field_errors": [problem]})
            return rec

    def replace(self, invoice_id: int, body: InvoiceBody, *, keep_lines: bool = False) -> dict[str, Any]:
        """PUT (or, with ``body`` laid over the current one, PATCH): rebuild the record from ``body``."""
        with self.lock:
            previous = self.check_editable(invoice_id)
            rec = self._build(body, previous, keep_lines=keep_lines)
            self._invoices[invoice_id] = rec
            self._dirty.add(invoice_id)
            return rec

    def delete(self, invoice_id: int) -> None:
        """Delete an invoice with its lines and payments, for good."""
        with self.lock:
            self.get(invoice_id)
            del self._invoices[invoice_id]
            self._dirty.add(invoice_id)

    def void(self, invoice_id: int, void_date: dt.date | None) -> dict[str, Any]:
        """Void an invoice (``void_date`` defaults to today)."""
        with self.lock:
            rec = self.get(invoice_id)
            if rec["payment_status"] == "voided":
                raise Refused({"error": "This invoice is already voided."})
            if any(p["voided_date"] is None for p in rec["payments"]):
                raise Refused({"error": "This invoice has payments; void them before voiding the invoice."})
            rec["voided_date"] = (void_date or self.today()).isoformat()
            rec["voided_journal_entry"] = self._take("journal_entry")
            rec["last_modified_at"] = timestamp(self.clock())
            _settle(rec)
            self._dirty.add(invoice_id)
            return rec

    def reopen(self, invoice_id: int) -> dict[str, Any]:
        """Reopen a voided invoice."""
        with self.lock:
            rec = self.get(invoice_id)
            if rec["payment_status"] != "voided":
                raise Refused({"error": "Only a voided invoice can be reopened."})
            rec["voided_date"] = None
            rec["voided_journal_entry"] = None
            rec["last_modified_at"] = timestamp(self.clock())
            _settle(rec)
            self._dirty.add(invoice_id)
            return rec

    def pay(self, invoice_id: int, payments: list[ManualPayment]) -> dict[str, Any]:
        """Record manual payments (``empty_transactions``) against an invoice."""
        with self.lock:
            rec = self.get(invoice_id)
            if rec["payment_status"] == "voided":
                raise Refused({"error": "A voided invoice cannot be paid; reopen it first."})
            amount = sum((p.amount for p in payments), _ZERO)
            if amount > rec["amount_due"]:
                raise Refused({"error": f"The payment amount {_money(amount)} exceeds the amount due {rec['amount_due']}."})
            now = timestamp(self.clock())
            for payment in payments:
                journal_entry = self._take("journal_entry")
                record: dict[str, Any] = {k: None for k in PAYMENT_KEYS}
                record.update(
                    id=self._take("payment"),
                    currency=payment.currency or rec["currency"],
                    amount=_money(payment.amount),
                    payment_date=payment.payment_date.isoformat(),
                    created_at=now,
                    last_modified_at=now,
                    source="MANUAL",
                    payment_type="MANUAL_TRANSACTION",
                    customer=self.fixtures.customer,
                    invoice=invoice_id,
                    payment_journal_entry=journal_entry,
                    payment_transactions=[],
                    _account_id=payment.account_id,
                    _memo=payment.memo,
                )
                rec["payments"].append(record)
                rec["payment_journal_entries"].append(journal_entry)
            rec["last_modified_at"] = now
            _settle(rec)
            self._dirty.add(invoice_id)
            return rec

    def _payment(self, invoice_id: int, payment_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rec = self.get(invoice_id)
        for payment in rec["payments"]:
            if payment["id"] == payment_id:
                return rec, payment
        raise NotFound()

    def void_payment(self, invoice_id: int, payment_id: int, void_date: dt.date | None) -> dict[str, Any]:
        """Void one payment of an invoice (``void_date`` defaults to today); returns the payment."""
        with self.lock:
            rec, payment = self._payment(invoice_id, payment_id)
            if payment["voided_date"] is not None:
                raise Refused({"error": "This payment is already voided."})
            now = timestamp(self.clock())
            payment.update(
                voided_date=(void_date or self.today()).isoformat(),
                voided_journal_entry=self._take("journal_entry"),
                last_modified_at=now,
            )
            rec["last_modified_at"] = now
            _settle(rec)
            self._dirty.add(invoice_id)
            return payment

    def delete_payment(self, invoice_id: int, payment_id: int) -> None:
        """Delete one payment of an invoice."""
        with self.lock:
            rec, payment = self._payment(invoice_id, payment_id)
            rec["payments"].remove(payment)
            if payment["payment_journal_entry"] in rec["payment_journal_entries"]:
                rec["payment_journal_entries"].remove(payment["payment_journal_entry"])
            rec["last_modified_at"] = timestamp(self.clock())
            _settle(rec)
            self._dirty.add(invoice_id)

    # --- idempotency -------------------------------------------------------------------------------

    def idempotent(self, key: str) -> dict[str, Any] | None:
        """The recorded outcome of an ``Idempotency-Key``: fingerprint, status and body text."""
        with self.lock:
            return self._idempotency.get(key)

    def remember(self, key: str, fingerprint: str, status: int, body: str) -> None:
        """Record the outcome of a request carrying ``Idempotency-Key`` ``key``."""
        with self.lock:
            self._idempotency[key] = {"fingerprint": fingerprint, "status": status, "body": body}
            self._dirty_keys.add(key)

    # --- whole store -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every invoice and idempotency record and restart the id sequences."""
        with self.lock:
            self._invoices.clear()
            self._idempotency.clear()
            self._next = dict(FIRST_IDS)
            if self.data_file is not None:
                self._compact()

    def save(self) -> None:
        """Make every change since the last save durable, if there is a data file.

        Appends the changed records to the changes file (one fsynced JSON line), and folds the
        changes into a new snapshot once they outgrow it, so a save costs what changed, not the
        whole store.
        """
        with self.lock:
            if self.data_file is None or self.changes_file is None:
                self._dirty.clear()
                self._dirty_keys.clear()
                return
            if not (self._dirty or self._dirty_keys):
                return
            if self._changes_bytes > max(self._snapshot_bytes, _MIN_COMPACT_BYTES):
                self._compact()
                return
            entry = {
                "next_ids": self._next,
                "invoices": {str(pk): self._invoices.get(pk) for pk in sorted(self._dirty)},
                "idempotency": {key: self._idempotency[key] for key in sorted(self._dirty_keys)},
            }
            line = (dumps_json(entry) + "\n").encode("utf-8")
            try:
                new = self._changes_bytes == 0
                if new:
                    self.changes_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.changes_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if new:
                    _fsync_folder(self.changes_file.parent)
            except OSError as exc:
                raise SandboxDataError(self.changes_file, f"cannot write the sandbox changes file: {exc.strerror or exc}") from exc
            self._changes_bytes += len(line)
            self._dirty.clear()
            self._dirty_keys.clear()

    def compact(self) -> None:
        """Fold the change log into the snapshot now, if there is a data file and any change."""
        with self.lock:
            if self.data_file is not None and self.changes_file is not None and self._changes_bytes:
                self._compact()

    def _compact(self) -> None:
        """Write the whole store as the snapshot (atomically) and drop the changes file."""
        assert self.data_file is not None and self.changes_file is not None
        text = dumps_json(
            {
                "format_version": FORMAT_VERSION,
                "next_ids": self._next,
                "invoices": list(self._invoices.values()),
                "idempotency": self._idempotency,
            }
        )
        _atomic_write(self.data_file, text)
        try:
            self.changes_file.unlink(missing_ok=True)
        except OSError as exc:
            raise SandboxDataError(self.changes_file, f"cannot remove the sandbox changes file: {exc.strerror or exc}") from exc
        self._snapshot_bytes = len(text)
        self._changes_bytes = 0
        self._dirty.clear()
        self._dirty_keys.clear()

    def _load(self, path: Path) -> None:
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8")
                data = loads_json(text)
            except OSError as exc:
                raise SandboxDataError(path, f"cannot read the sandbox data file: {exc.strerror or exc}") from exc
            except ValueError as exc:
                raise SandboxDataError(path, f"not a sandbox data file (invalid JSON: {exc}); delete it to start empty") from exc
            if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
                raise SandboxDataError(path, f"not a sandbox data file of format version {FORMAT_VERSION}; delete it to start empty")
            self._invoices = {rec["id"]: _decimals(rec) for rec in data.get("invoices", [])}
            self._idempotency = dict(data.get("idempotency", {}))
            self._next = {**FIRST_IDS, **data.get("next_ids", {})}
            self._snapshot_bytes = len(text)
        assert self.changes_file is not None
        if not self.changes_file.exists():
            return
        try:
            raw = self.changes_file.read_bytes()
        except OSError as exc:
            raise SandboxDataError(self.changes_file, f"cannot read the sandbox changes file: {exc.strerror or exc}") from exc
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = loads_json(line)
            except ValueError as exc:
                if number == len(lines):
                    break  # a change torn by a crash was never answered, so it never happened
                raise SandboxDataError(self.changes_file, f"line {number} is damaged ({exc}); delete the file to drop the changes") from exc
            for pk, rec in entry.get("invoices", {}).items():
                if rec is None:
                    self._invoices.pop(int(pk), None)
                else:
                    self._invoices[int(pk)] = _decimals(rec)
            self._idempotency.update(entry.get("idempotency", {}))
            self._next.update(entry.get("next_ids", {}))
        self._changes_bytes = len(raw)


_MONEY_KEYS = ("total_amount", "amount_paid", "amount_due", "exchange_rate", "exchange_rate_book", "discount")
_LINE_MONEY_KEYS = ("quantity", "rate", "amount", "tax", "discount", "discount_percentage", "discount_amount")


def _decimals(rec: dict[str, Any]) -> dict[str, Any]:
    """A record read back from JSON with its money as Decimal again (JSON integers load as int)."""

    def fix(obj: dict[str, Any], keys: Iterable[str]) -> None:
        for key in keys:
            if isinstance(obj.get(key), int | Decimal):
                obj[key] = Decimal(obj[key])

    fix(rec, _MONEY_KEYS)
    for line in rec.get("lines", []):
        fix(line, _LINE_MONEY_KEYS)
    for payment in rec.get("payments", []):
        fix(payment, ("amount",))
    return rec


def render_payment(payment: Mapping[str, Any]) -> dict[str, Any]:
    """The API's view of a payment (``AccountingInvoicePayment``)."""
    return {key: payment[key] for key in PAYMENT_KEYS}


def _settle(rec: dict[str, Any]) -> None:
    """Recompute amount_paid, amount_due, status, payment_status and paid_date from the payments."""
    live = [p for p in rec["payments"] if p["voided_date"] is None]
    paid = sum((p["amount"] for p in live), _ZERO)
    rec["amount_paid"] = _money(paid)
    if rec["voided_date"] is not None:
        status = "voided"
        rec["amount_due"] = _ZERO
    else:
        rec["amount_due"] = _money(rec["total_amount"] - paid)
        if live and rec["amount_due"] <= 0:
            status = "paid"
        elif paid > 0:
            status = "partial"
        else:
            status = rec["_base_status"]
    if rec["payments"]:
        rec["paid_date"] = max(p["payment_date"] for p in live) if status == "paid" else None
    rec["status"] = status
    rec["payment_status"] = status


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SandboxDataError(path, f"cannot write the sandbox data file: {exc.strerror or exc}") from exc


def _fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Pydantic models of Campfire's Create Invoice body and response, and the plain types around them.

Owns: ``InvoiceBody``/``InvoiceLine`` (every writable field of the seed page's Create Invoice body, with
its type, enum, maximum length and range; line fields from Campfire's OpenAPI ``AccountingInvoiceLine``),
``RemoteSnapshot`` (what the state keeps of an invoice as Campfire last showed it), ``DesiredInvoice`` and
``Lifecycle`` (what a spec declares), the canonical wire form of a body and its digest, and JSON
encoding that keeps money as ``Decimal`` (numbers on the wire, never floats).

Never does IO.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Annotated, Any

import simplejson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from invoicesync.errors import SourceLocation
from invoicesync.money import canonical_decimal, invoice_total

# --- enums -----------------------------------------------------------------------------------------


class Terms(str, Enum):
    """Payment terms (seed page, ``terms``)."""

    custom = "custom"
    net_5 = "net_5"
    net_7 = "net_7"
    net_10 = "net_10"
    net_15 = "net_15"
    net_20 = "net_20"
    net_30 = "net_30"
    net_40 = "net_40"
    net_45 = "net_45"
    net_60 = "net_60"
    net_90 = "net_90"
    net_105 = "net_105"
    net_120 = "net_120"
    due_on_receipt = "due_on_receipt"


class PaymentStatus(str, Enum):
    """Payment status (seed page, ``payment_status``)."""

    open = "open"
    sent = "sent"
    partial = "partial"
    paid = "paid"
    uncollectible = "uncollectible"
    voided = "voided"


# --- field types -----------------------------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATE_FORMAT_MESSAGE = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."


def _parse_date(value: Any) -> Any:
    """Accept a ``date`` (not a datetime) or a ``YYYY-MM-DD`` string, as DRF's DateField does."""
    if isinstance(value, dt.datetime):
        raise ValueError(DATE_FORMAT_MESSAGE)
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(DATE_FORMAT_MESSAGE)


def _empty_to_none(value: Any) -> Any:
    """DRF turns an empty string into None for relational (id) fields."""
    return None if value == "" else value


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("A valid number is required.")
    return value


Date = Annotated[dt.date, BeforeValidator(_parse_date)]
Id = Annotated[int, Field(ge=1), BeforeValidator(_reject_bool)]
OptId = Annotated[int | None, Field(ge=1), BeforeValidator(_reject_bool), BeforeValidator(_empty_to_none)]


def _money_range(bound: int) -> Any:
    """Field constraints of a Decimal in the open interval (-bound, bound), as the schema's "Required range"."""
    return Field(gt=-bound, lt=bound, allow_inf_nan=False)


Money18 = Annotated[Decimal, _money_range(10**18), BeforeValidator(_reject_bool)]
Rate14 = Annotated[Decimal, _money_range(10**14), BeforeValidator(_reject_bool)]
Quantity16 = Annotated[Decimal, _money_range(10**16), BeforeValidator(_reject_bool)]
LineRate13 = Annotated[Decimal, _money_range(10**13), BeforeValidator(_reject_bool)]
Percent3 = Annotated[Decimal, _money_range(1000), BeforeValidator(_reject_bool)]

Str3 = Annotated[str, Field(max_length=3)]
Str25 = Annotated[str, Field(max_length=25)]
Str120 = Annotated[str, Field(max_length=120)]
Str250 = Annotated[str, Field(max_length=250)]
Str500 = Annotated[str, Field(max_length=500)]


# --- the Create Invoice body -----------------------------------------------------------------------


class InvoiceLine(BaseModel):
    """One invoice line, the writable fields of ``AccountingInvoiceLine``."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)

    product: OptId = None
    product_bundle: OptId = None
    description: str | None = None
    service_date: Date | None = None
    quantity: Quantity16 | None = None
    rate: LineRate13 | None = None
    amount: Money18 | None = None
    tax: Money18 | None = None
    tax_description: Str250 | None = None
    currency: Str3 | None = None
    entity_use_code: Str25 | None = None
    discount: Money18 | None = None
    discount_percentage: Percent3 | None = None
    discount_amount: Money18 | None = None


class InvoiceBody(BaseModel):
    """The Create Invoice request body: every writable field of the seed page, with its constraints.

    Read-only fields of the seed's example request (``entity_name``, ``client_name``, ...) are not
    part of the body; the sandbox ignores them as DRF does, and spec files reject them as unknown.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)

    # required by the API (due_date is derived by specs when absent)
    lines: list[InvoiceLine] = Field(min_length=1)
    invoice_date: Date
    due_date: Date
    entity: Id
    # parties and references
    client: OptId = None
    contract: OptId = None
    invoice_number: str | None = None
    ref_number: Str120 | None = None
    purchase_order_number: Str120 | None = None
    terms: Terms | None = None
    currency: Str3 | None = None
    exchange_rate: Rate14 | None = None
    exchange_rate_book: Rate14 | None = None
    discount: Money18 | None = None
    # dates
    item_date: Date | None = None
    shipping_date: Date | None = None
    paid_date: Date | None = None
    uncollectible_date: Date | None = None
    sent_date: Date | None = None
    period_start: Date | None = None
    period_end: Date | None = None
    voided_date: Date | None = None
    auto_send_invoice_at: Date | None = None
    auto_sent_at: Date | None = None
    last_sent_at: dt.datetime | None = None
    # text
    billing_address: str | None = None
    shipping_address: str | None = None
    location_of_sale: str | None = None
    message_on_invoice: str | None = None
    warning_message: str | None = None
    vat_number: Str250 | None = None
    department_name: str | None = None
    # status and flags
    payment_status: PaymentStatus | None = None
    auto_send_invoice: bool | None = None
    use_stripe_auto_bill: bool | None = None
    reminder_sent_dates: Any = None
    # integrations
    source: Str250 | None = None
    source_id: str | None = None
    integration_id: Str250 | None = None
    integration_context: Any = None
    stripe_payment_link_id: Str500 | None = None
    stripe_payment_intent_id: Str500 | None = None
    stripe_invoice_id: Str500 | None = None
    stripe_pdf_url: Str500 | None = None
    stripe_payment_link: Str500 | None = None
    # related ids
    revenue_transactions: list[Id] | None = None
    tags: list[Id] | None = None
    department: OptId = None
    migrated_journal_id: OptId = None
    bad_debt_journal_entry: OptId = None
    journal_entry: OptId = None
    voided_journal_entry: OptId = None
    entity_transfer_journal_entry: OptId = None
    avalara_connection: OptId = None
    sphere_connection: OptId = None
    anrok_connection: OptId = None
    tax_rate: OptId = None
    stripe_connection: OptId = None
    source_file: OptId = None


BODY_FIELDS: frozenset[str] = frozenset(InvoiceBody.model_fields)
LINE_FIELDS: frozenset[str] = frozenset(InvoiceLine.model_fields)

# --- canonical wire form ---------------------------------------------------------------------------


_PLAIN = (str, int, bool, type(None))


def _wire_value(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _wire_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire_value(v) for v in value]
    return value


def _wire_fields(model: BaseModel) -> dict[str, Any]:
    # The model's fields in declaration order (as model_dump(exclude_none=True) gives them), each
    # value in its wire form; the kinds specs write most are settled without the general walk.
    wire: dict[str, Any] = {}
    for name, value in model.__dict__.items():
        if value is None:
            continue  # most of a body's fields are unset
        cls = value.__class__
        if cls is str or cls is int:
            wire[name] = value
        elif cls is Decimal:
            wire[name] = canonical_decimal(value)
        elif cls is dt.date:
            wire[name] = value.isoformat()
        elif cls is list:
            wire[name] = [_wire_fields(item) if isinstance(item, BaseModel) else _wire_value(item) for item in value]
        else:
            wire[name] = _wire_value(value)
    return wire


def to_wire(body: InvoiceBody) -> dict[str, Any]:
    """The body as sent to Campfire: unset/None fields dropped, dates as ISO strings, money as canonical Decimal."""
    return _wire_fields(body)


def dumps_json(obj: Any, *, pretty: bool = False) -> str:
    """JSON text with ``Decimal`` written as a JSON number (never via float)."""
    if pretty:
        return simplejson.dumps(obj, use_decimal=True, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return _compact(obj)


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON: the input of every digest."""
    return _canonical(obj)


def loads_json(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number read as ``Decimal``."""
    # simplejson.loads(text, use_decimal=True) without a decoder per call (decode takes bytes as loads does)
    return _DECODER.decode(text)  # type: ignore[arg-type]


_DECODER = simplejson.JSONDecoder(parse_float=Decimal)


def _reused_encoder(options: Mapping[str, Any]) -> Callable[[Any], str]:
    """``simplejson.dumps(obj, **options)``, with simplejson's C encoder made once instead of once per call.

    Making it is a third of the cost of encoding a request body or a digest's input. It is made as
    ``JSONEncoder.iterencode`` makes it, from an encoder with the same options, and checked against
    ``simplejson.dumps`` on a sample before it is trusted; else ``simplejson.dumps`` it is.
    """

    def plain(obj: Any) -> str:
        return simplejson.dumps(obj, **options)

    try:
        from simplejson.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

        if c_make_encoder is None:
            return plain
        like = simplejson.JSONEncoder(**options)
        markers: dict[int, Any] = {}
        key_memo: dict[Any, Any] = {}
        encode = c_make_encoder(
            markers, like.default, encode_basestring, like.indent, like.key_separator, like.item_separator,
            like.sort_keys, like.skipkeys, like.allow_nan, key_memo, like.use_decimal, like.namedtuple_as_object,
            like.tuple_as_array, like.int_as_string_bitcount, like.item_sort_key, like.encoding, like.for_json,
            like.ignore_nan, Decimal, like.iterable_as_array,
        )
    except (ImportError, AttributeError, TypeError):  # another simplejson than the one this was written for
        return plain

    busy = threading.Lock()  # the encoder's memos are its own: a second thread at once takes the plain way

    def dumps(obj: Any) -> str:
        if not busy.acquire(blocking=False):
            return plain(obj)
        try:
            return "".join(encode(obj, 0))
        finally:
            markers.clear()
            key_memo.clear()
            busy.release()

    sample = {"b": [{"z": Decimal("-1.50"), "a": None}, True, 7, "\u2028\"é\n"], "a": Decimal("1E+2"), "": [(1, "x")]}
    try:
        if dumps(sample) == plain(sample):
            return dumps
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        pass
    return plain


_compact = _reused_encoder({"use_decimal": True, "separators": (",", ":"), "ensure_ascii": False})
_canonical = _reused_encoder({"use_decimal": True, "sort_keys": True, "separators": (",", ":"), "ensure_ascii": False})


def body_digest(wire: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a wire body."""
    return "sha256:" + hashlib.sha256(canonical_json(wire).encode()).hexdigest()


# --- what specs declare ----------------------------------------------------------------------------


class OnRemove(StrEnum):
    """What removing an invoice's spec does to the invoice in Campfire."""

    VOID = "void"  # void it (the default): a reversing entry, the invoice stays visible
    DELETE = "delete"  # delete it for good (refused for paid invoices)
    FORGET = "forget"  # leave it as it is; only the state lets go of it


class Lifecycle(BaseModel):
    """How the tool treats an invoice, never sent to the API: the spec's ``lifecycle`` and what the state recorded of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prevent_destroy: bool = False  # a plan that would void, delete or replace it fails instead
    on_remove: OnRemove = OnRemove.VOID


class Locked(StrEnum):
    """Why Campfire will no longer let an invoice be changed."""

    PAID = "paid"
    PARTLY_PAID = "partly paid"
    VOIDED = "voided"


@dataclass(frozen=True)
class DesiredInvoice:
    """One invoice as the specs declare it, validated and with derived fields filled in.

    ``wire`` is ``to_wire(body)`` with ``source``/``source_id`` *not* added (apply adds them at create
    time, since they depend on the state's lineage); ``digest`` is ``body_digest(wire)``.
    """

    address: str
    body: InvoiceBody
    wire: Mapping[str, Any]
    digest: str
    location: SourceLocation
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @property
    def currency(self) -> str:
        """The invoice currency ('USD' when the spec does not say; Campfire defaults to the entity's)."""
        return str(self.wire.get("currency") or "USD")

    @property
    def total(self) -> Decimal:
        """The invoice total this spec would produce."""
        return invoice_total(self.wire)


# --- what Campfire shows ---------------------------------------------------------------------------


class RemoteSnapshot(BaseModel):
    """What the state keeps of an invoice as Campfire last returned it (money as Decimal)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: str | None = None
    payment_status: str | None = None
    invoice_number: str | None = None
    currency: str | None = None
    total_amount: Decimal | None = None
    amount_paid: Decimal | None = None
    amount_due: Decimal | None = None
    journal_entry: int | None = None
    voided_date: str | None = None
    last_modified_at: str | None = None

    @classmethod
    def from_response(cls, invoice: Mapping[str, Any]) -> RemoteSnapshot:
        """Pick the snapshot fields out of a retrieve/list/create response."""
        return cls.model_validate({k: invoice.get(k) for k in cls.model_fields})

    @property
    def locked_reason(self) -> Locked | None:
        """Why Campfire's invoice may no longer be changed (paid, partly paid, voided), or None."""
        if is_voided(self.__dict__):  # the fields as a mapping, without a model_dump per invoice of a plan
            return Locked.VOIDED
        status = (self.payment_status or self.status or "").lower()
        return {"paid": Locked.PAID, "partial": Locked.PARTLY_PAID}.get(status)


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """Whether Campfire shows an invoice (a response or a snapshot) as voided."""
    statuses = {str(invoice.get(key) or "").lower() for key in ("status", "payment_status")}
    return "voided" in statuses or bool(invoice.get("voided_date"))


def project_remote(invoice: Mapping[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """A remote invoice cut down to the shape of a wire body ``like`` (same keys, same line keys).

    Used to compare what Campfire holds now with the body last applied: values are canonicalised the
    same way as ``to_wire`` (money as canonical Decimal, ids as int), and keys the remote lacks are
    left out.
    """
    out: dict[str, Any] = {}
    for key, want in like.items():
        if key not in invoice:
            continue
        value = invoice[key]
        if key == "lines" and isinstance(value, list) and isinstance(want, list):
            lines = []
            for i, line in enumerate(value):
                shape = want[i] if i < len(want) else (want[-1] if want else {})
                lines.append({k: _canon_remote(line.get(k), shape.get(k)) for k in shape if k in line})
            out[key] = lines
        else:
            out[key] = _canon_remote(value, want)
    return out


def _canon_remote(value: Any, like: Any) -> Any:
    if isinstance(like, Decimal) and isinstance(value, (int, float, str, Decimal)) and not isinstance(value, bool):
        try:
            return canonical_decimal(Decimal(str(value)))
        except ArithmeticError:
            return value
    if isinstance(like, int) and not isinstance(like, bool) and isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    return value


SOURCE = "invoicesync"


def with_source(wire: Mapping[str, Any], lineage: str, address: str) -> dict[str, Any]:
    """The body to send: ``source``/``source_id`` marking added unless the spec set them itself.

    ``source_id`` is ``<lineage>/<address>``, which is what a look-up matches to find an invoice whose
    create response was lost.
    """
    body = dict(wire)
    # An empty value marks nothing and could not be looked up: it counts as unset.
    if not body.get("source"):
        body["source"] = SOURCE
    if not body.get("source_id"):
        body["source_id"] = f"{lineage}/{address}"
    return body


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while bulk-loading (specs, state files).

    Loading allocates millions of small acyclic objects (YAML nodes, dicts, models); the collector's
    passes over that growing heap made 10k invoices take about 3x longer. Reference counting still
    frees everything; collection resumes afterwards.

    After a bulk load (more than ``_FREEZE_AFTER`` new objects) what is alive is frozen
    (``gc.freeze()``): the specs and the state live as long as the command, and left to the
    collector, its first collections would walk all of them again, generation by generation, and
    once more in a full collection (0.75 s of a 10k-invoice plan). Reference counting still frees
    them (they hold no cycles); only a reference cycle alive at that moment outlives its last use.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_count()[0] > _FREEZE_AFTER:
                gc.freeze()
            gc.enable()


#: How many objects a paused load must have added for what is alive to be frozen afterwards.
_FREEZE_AFTER = 50_000

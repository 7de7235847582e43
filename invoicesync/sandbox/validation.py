"""Request validation for the sandbox, with Django REST Framework's error bodies and wording.

Owns turning a parsed JSON body into a validated ``InvoiceBody`` (or a manual payment) plus the
400 body Campfire would answer: ``{"field": ["This field is required."]}``, nested line errors as
``{"lines": [{}, {"rate": ["A valid number is required."]}]}``, ``Invalid pk "999" - object does not
exist.`` for an id missing from the fixtures, and so on. The field rules themselves come from
``invoicesync.models`` (the seed page); this module only strips what DRF ignores (unknown and
read-only keys), runs the model, checks ids against the fixtures and words the errors as DRF does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from invoicesync.models import (
    BODY_FIELDS,
    DATE_FORMAT_MESSAGE,
    LINE_FIELDS,
    Date,
    InvoiceBody,
)
from invoicesync.sandbox.fixtures import RELATED_KINDS, Fixtures

#: DRF's error body: field -> messages, or field -> list of per-item error bodies.
Errors = dict[str, Any]

REQUIRED = "This field is required."
NOT_NULL = "This field may not be null."
NOT_A_NUMBER = "A valid number is required."
NOT_AN_INTEGER = "A valid integer is required."
DATETIME_FORMAT_MESSAGE = (
    "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)

#: Body keys the sandbox computes itself and ignores when sent, as it has no journal entries to point at.
SERVER_MANAGED: frozenset[str] = frozenset({"journal_entry", "voided_journal_entry"})

#: Lists whose items are objects: an item's errors nest as ``{"lines": [{}, {...}]}``.
_OBJECT_LISTS: frozenset[str] = frozenset({"lines", "empty_transactions", "invoices"})


def type_name(value: Any) -> str:
    """The Python type name DRF puts in its messages (``str``, ``list``, ``int``)."""
    return type(value).__name__


def _bound(value: Any) -> str:
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        d = Decimal(str(value))
        if d == d.to_integral_value():
            return str(int(d))
        return str(d)
    return str(value)


def _message(err: ErrorDetails, relational: bool) -> str:
    """DRF's wording for one pydantic error."""
    kind = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return REQUIRED
    if value is None:
        return NOT_NULL
    if relational:
        if kind in ("greater_than_equal", "greater_than"):
            return f'Invalid pk "{value}" - object does not exist.'
        if kind in ("int_parsing", "int_type", "int_from_float", "value_error"):
            return f"Incorrect type. Expected pk value, received {type_name(value)}."
    if kind == "enum":
        return f'"{value}" is not a valid choice.'
    if kind == "string_too_long":
        return f"Ensure this field has no more than {ctx.get('max_length')} characters."
    if kind == "string_type":
        return "Not a valid string."
    if kind in ("decimal_parsing", "decimal_type", "float_parsing", "float_type", "finite_number"):
        return NOT_A_NUMBER
    if kind in ("greater_than", "greater_than_equal"):
        return f"Ensure this value is greater than or equal to {_bound(ctx.get('gt', ctx.get('ge')))}."
    if kind in ("less_than", "less_than_equal"):
        return f"Ensure this value is less than or equal to {_bound(ctx.get('lt', ctx.get('le')))}."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return NOT_AN_INTEGER
    if kind in ("bool_type", "bool_parsing"):
        return "Must be a valid boolean."
    if kind == "list_type":
        return f'Expected a list of items but got type "{type_name(value)}".'
    if kind == "too_short":
        return "This list may not be empty."
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"Invalid data. Expected a dictionary, but got {type_name(value)}."
    if kind.startswith("datetime"):
        return DATETIME_FORMAT_MESSAGE
    if kind.startswith("date"):
        return DATE_FORMAT_MESSAGE
    if kind == "value_error":
        error = ctx.get("error")
        return str(error) if error is not None else err["msg"]
    return err["msg"]


def _put(errors: Errors, loc: tuple[int | str, ...], message: str, data: Any) -> None:
    """File ``message`` under ``loc`` in a DRF error body, shaping nested lists as DRF does."""
    key = str(loc[0])
    rest = loc[1:]
    if rest and isinstance(rest[0], int):
        raw = data.get(key) if isinstance(data, Mapping) else None
        if key in _OBJECT_LISTS and isinstance(raw, list):
            items = errors.get(key)
            if not isinstance(items, list) or len(items) != len(raw) or not all(isinstance(i, dict) for i in items):
                items = [{} for _ in raw]
                errors[key] = items
            item_errors: Errors = items[rest[0]]
            if len(rest) == 1:
                item_errors.setdefault("non_field_errors", []).append(message)
            else:
                _put(item_errors, rest[1:], message, raw[rest[0]])
            return
        # a list of scalars (tags, revenue_transactions): DRF reports the item errors flat
        errors.setdefault(key, []).append(message)
        return
    if rest:
        _put(errors.setdefault(key, {}), rest, message, data.get(key) if isinstance(data, Mapping) else None)
        return
    existing = errors.setdefault(key, [])
    if isinstance(existing, list):
        existing.append(message)


def _is_relational(loc: tuple[int | str, ...]) -> bool:
    names = [part for part in loc if isinstance(part, str)]
    return bool(names) and names[-1] in RELATED_KINDS


def translate(exc: ValidationError, data: Any, relational: Callable[[tuple[int | str, ...]], bool] = _is_relational) -> Errors:
    """A pydantic ``ValidationError`` as DRF's 400 body, worded as DRF words it."""
    errors: Errors = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if not loc:
            errors.setdefault("non_field_errors", []).append(_message(err, False))
            continue
        _put(errors, loc, _message(err, relational(loc)), data)
    return errors


def _pk(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _missing_pk(field: str, value: Any, fixtures: Fixtures) -> str | None:
    pk = _pk(value)
    if pk is None or pk < 1 or fixtures.exists(RELATED_KINDS[field], pk):
        return None
    return f'Invalid pk "{value}" - object does not exist.'


def _check_fixture_ids(body: Mapping[str, Any], errors: Errors, fixtures: Fixtures) -> None:
    """Add ``Invalid pk`` errors for ids the fixtures lack, on fields without an error already."""
    for field, value in body.items():
        if field not in RELATED_KINDS or field in errors or value in (None, ""):
            continue
        if isinstance(value, list):
            problems = [p for v in value if (p := _missing_pk(field, v, fixtures))]
            if problems:
                errors[field] = problems
        elif problem := _missing_pk(field, value, fixtures):
            errors[field] = [problem]
    lines = body.get("lines")
    if not isinstance(lines, list) or (isinstance(errors.get("lines"), list) and errors["lines"] and not isinstance(errors["lines"][0], dict)):
        return
    line_errors: list[Errors] = errors.get("lines") or [{} for _ in lines]
    for line, line_error in zip(lines, line_errors, strict=False):
        if not isinstance(line, Mapping):
            continue
        for field in ("product", "product_bundle"):
            if field in line and field not in line_error and line[field] not in (None, ""):
                if problem := _missing_pk(field, line[field], fixtures):
                    line_error[field] = [problem]
    if any(line_errors):
        errors["lines"] = line_errors


def strip_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The body with unknown, read-only and server-managed keys dropped, as DRF ignores them."""
    body = {k: v for k, v in data.items() if k in BODY_FIELDS and k not in SERVER_MANAGED}
    lines = body.get("lines")
    if isinstance(lines, list):
        body["lines"] = [
            {k: v for k, v in line.items() if k in LINE_FIELDS} if isinstance(line, Mapping) else line for line in lines
        ]
    return body


def not_a_dict(data: Any) -> Errors:
    """DRF's body for a request body that is not a JSON object."""
    return {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type_name(data)}."]}


def validate_invoice(
    data: Any, fixtures: Fixtures, *, base: Mapping[str, Any] | None = None
) -> tuple[InvoiceBody | None, dict[str, Any], Errors]:
    """Validate a create/PUT body, or a PATCH body laid over ``base`` (the invoice's current body).

    Returns ``(body, sent, errors)``: the validated model (None when there are errors), the stripped
    keys as sent (laid over ``base`` for a PATCH), and DRF's error body (empty when valid).
    """
    if not isinstance(data, Mapping):
        return None, {}, not_a_dict(data)
    sent = strip_body(data)
    merged = {**base, **sent} if base is not None else sent
    errors: Errors = {}
    model: InvoiceBody | None = None
    try:
        model = InvoiceBody.model_validate(merged)
    except ValidationError as exc:
        errors = translate(exc, merged)
    _check_fixture_ids(merged, errors, fixtures)
    if errors:
        return None, merged, errors
    return model, merged, {}


# --- payments ----------------------------------------------------------------------------------------


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(NOT_A_NUMBER)
    return value


_Money = Annotated[Decimal, Field(gt=-(10**18), lt=10**18, allow_inf_nan=False), BeforeValidator(_reject_bool)]
_Int = Annotated[int, BeforeValidator(_reject_bool)]


class ManualPayment(BaseModel):
    """One ``empty_transactions`` item of ``POST .../pay/`` (Campfire's ``MarkPaidEmptyTransaction``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    account_id: _Int
    account_name: str
    amount: _Money
    payment_date: Date
    department_id: _Int | None = None
    tag_ids: list[_Int] = Field(default_factory=list)
    memo: str | None = None
    currency: Annotated[str, Field(max_length=3)] | None = None
    amount_in_invoice_currency: _Money | None = None


class _MarkPaid(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_match_id: _Int | None = None
    transactions: list[dict[str, Any]] | None = None
    credit_memos: list[dict[str, Any]] | None = None
    debit_memos: list[dict[str, Any]] | None = None
    empty_transactions: list[ManualPayment] | None = None


class UnsupportedPayment(Exception):
    """A pay body that uses bank transactions or credit memos, which the sandbox does not emulate."""


def validate_payment(data: Any, fixtures: Fixtures) -> tuple[list[ManualPayment], Errors]:
    """Validate a ``POST .../pay/`` body; returns its manual payments or DRF's error body.

    Raises ``UnsupportedPayment`` for a body that only the real bank feed could satisfy.
    """
    if not isinstance(data, Mapping):
        return [], not_a_dict(data)
    try:
        body = _MarkPaid.model_validate(data)
    except ValidationError as exc:
        return [], translate(exc, data, lambda loc: False)
    if body.transactions or body.credit_memos or body.debit_memos:
        raise UnsupportedPayment()
    payments = body.empty_transactions or []
    if not payments:
        return [], {
            "non_field_errors": ["At least one of transactions, credit_memos or empty_transactions must not be empty."]
        }
    item_errors: list[Errors] = [{} for _ in payments]
    for payment, item in zip(payments, item_errors, strict=True):
        if not fixtures.exists("accounts", payment.account_id):
            item["account_id"] = [f'Invalid pk "{payment.account_id}" - object does not exist.']
        if payment.amount <= 0:
            item["amount"] = ["Ensure this value is greater than 0."]
    if any(item_errors):
        return [], {"empty_transactions": item_errors}
    return payments, {}


def parse_void_date(data: Any, field: str = "void_date") -> tuple[dt.date | None, Errors]:
    """The optional ``void_date`` of a void body (None when absent or null)."""
    if data is None:
        return None, {}
    if not isinstance(data, Mapping):
        return None, not_a_dict(data)
    value = data.get(field)
    if value is None:
        return None, {}
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return dt.date.fromisoformat(value), {}
        except ValueError:
            pass
    return None, {field: [DATE_FORMAT_MESSAGE]}

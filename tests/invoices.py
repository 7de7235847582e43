"""Builders of desired invoices, states and Campfire responses for planning and rendering tests.

In memory only: a ``DesiredInvoice`` as specs would produce it, a ``State`` whose bodies went through
JSON as the state file's do, and an invoice dict as Campfire returns it (money as Decimal).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoicesync.errors import SourceLocation
from invoicesync.models import (
    DesiredInvoice,
    InvoiceBody,
    Lifecycle,
    RemoteSnapshot,
    body_digest,
    dumps_json,
    loads_json,
    to_wire,
    with_source,
)
from invoicesync.state import InvoiceRecord, LifecycleRecord, State

LINEAGE = "0f1c2d3e-0000-4000-8000-000000000001"


def line(rate: str = "50", quantity: str = "1", tax: str | None = "5", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"product": 2545, "description": "Platform subscription", "quantity": quantity, "rate": rate}
    out["amount"] = str(Decimal(quantity) * Decimal(rate))
    if tax is not None:
        out["tax"] = tax
    out.update(extra)
    return out


def desired(
    address: str, *, lines: list[dict[str, Any]] | None = None, lifecycle: Lifecycle | None = None, **fields: Any
) -> DesiredInvoice:
    data: dict[str, Any] = {
        "entity": 54,
        "client": 33973,
        "invoice_date": "2025-07-01",
        "due_date": "2025-07-31",
        "lines": lines if lines is not None else [line()],
    }
    data.update(fields)
    body = InvoiceBody.model_validate({k: v for k, v in data.items() if v is not None})
    wire = to_wire(body)
    return DesiredInvoice(
        address, body, wire, body_digest(wire), SourceLocation("specs/acme.yaml", 3), lifecycle or Lifecycle()
    )


def new_state(*records: tuple[DesiredInvoice, int] | tuple[DesiredInvoice, int, LifecycleRecord]) -> State:
    state = State(lineage=LINEAGE, environment="sandbox", serial=4)
    for item in records:
        applied(state, *item)
    return state


def applied(state: State, spec: DesiredInvoice, invoice_id: int, lifecycle: LifecycleRecord | None = None) -> None:
    """Record ``spec`` as applied, its body read back from JSON as the state file would hold it."""
    body = loads_json(dumps_json(with_source(spec.wire, state.lineage, spec.address)))
    state.invoices[spec.address] = InvoiceRecord(
        id=invoice_id,
        digest=body_digest(body),
        body=body,
        lifecycle=lifecycle or LifecycleRecord(),
        created_at="2025-07-25T18:54:43+00:00",
        updated_at="2025-07-25T18:54:43+00:00",
    )


def remote(state: State, address: str, status: str = "open", **changed: Any) -> dict[str, Any]:
    """The invoice as Campfire returns it: the applied body plus server fields, money as Decimal."""
    record = state.invoices[address]
    invoice: dict[str, Any] = loads_json(dumps_json(record.body))
    invoice["lines"] = [{"id": 900 + i, **ln} for i, ln in enumerate(invoice["lines"])]
    for key in ("rate", "amount", "tax", "quantity"):
        for ln in invoice["lines"]:
            if key in ln:
                ln[key] = Decimal(str(ln[key])).quantize(Decimal("0.01"))
    total = sum((Decimal(str(ln.get("amount", 0))) + Decimal(str(ln.get("tax", 0))) for ln in invoice["lines"]), Decimal(0))
    invoice.update(
        id=record.id,
        status=status,
        payment_status=status,
        total_amount=total,
        amount_paid=total if status == "paid" else Decimal(0),
        amount_due=Decimal(0) if status == "paid" else total,
        journal_entry=7491952,
        entity_name="Acme Holdings",
        last_modified_at="2025-07-26T10:00:00Z",
    )
    invoice.update(changed)
    return invoice


#: When state records and journal records of the state tests were made.
T0 = "2025-07-25T18:54:43+00:00"


def recorded_body(number: str = "ACME-2025-07", rate: str = "50.10") -> dict[str, Any]:
    """A wire body as a state record or journal holds it (money as Decimal, with digits past the cent)."""
    return {
        "client": 33973,
        "entity": 54,
        "invoice_date": "2025-07-01",
        "invoice_number": number,
        "lines": [{"product": 2545, "quantity": 1, "rate": Decimal(rate), "tax": Decimal("5.005")}],
    }


def record(invoice_id: int = 145055, **changes: Any) -> InvoiceRecord:
    """A state record of an open invoice of ``recorded_body()``; ``changes`` replace its fields."""
    fields: dict[str, Any] = {
        "id": invoice_id,
        "digest": "sha256:aaa",
        "body": recorded_body(),
        "remote": RemoteSnapshot(status="open", total_amount=Decimal("55.105"), amount_due=Decimal("0.10")),
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(changes)
    return InvoiceRecord(**fields)

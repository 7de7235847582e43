"""The state as data: ``State``, ``InvoiceRecord`` and the rules they keep (and reading a state document into one).

Owns the model of one environment's state (``format_version``, ``lineage``, ``serial``, the invoices
by address, the retired ids) and its invariants (one invoice id per address). No IO: where the
state is kept is a backend's business (``state.local``, ``state.postgres``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from invoicesync.errors import StateError
from invoicesync.models import Lifecycle, Locked, RemoteSnapshot
from invoicesync.money import (
    MONEY_CONTEXT,
    InvoiceMoney,
    ManagedMoney,
    MoneyKey,
    invoice_total,
    money_key_order,
)

FORMAT_VERSION = 1


#: The spec's lifecycle as last applied (kept so that a removed spec is still handled per its lifecycle).
LifecycleRecord = Lifecycle


class InvoiceRecord(BaseModel):
    """One managed invoice: its Campfire id and the request body last applied to it."""

    model_config = ConfigDict(extra="forbid")

    id: int
    digest: str  # body_digest(body)
    body: dict[str, Any]  # the wire body last applied (money as Decimal, loaded with loads_json)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    remote: RemoteSnapshot | None = None
    created_at: str  # ISO 8601 with offset, e.g. 2025-07-25T18:54:43+00:00
    updated_at: str


class State(BaseModel):
    """The whole state file of one environment."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    lineage: str
    serial: int = 0
    environment: str
    # Which Campfire the ids belong to ("sandbox", or the API's scheme://host[:port]); set by the
    # first run that talks to it, so the state is never applied against another Campfire by mistake.
    endpoint: str | None = None
    invoices: dict[str, InvoiceRecord] = Field(default_factory=dict)
    # Ids once managed and let go (voided, deleted, forgotten, `state rm`): a look-up for a lost
    # create must never take one of them for the new invoice, though they may share its source_id.
    retired: list[int] = Field(default_factory=list)


def timestamp(timespec: str = "seconds") -> str:
    """The current time as the state and journal write it: ISO 8601, UTC, whole seconds by default."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec=timespec)


def state_from_document(data: Any, shown: str, hint: str = "") -> State:
    """The ``State`` a parsed state document holds, or ``StateError`` naming ``shown`` (``hint`` ends each message).

    A document of a newer state format is refused with the advice to upgrade, before it is validated.
    """
    if not isinstance(data, dict):
        raise StateError(f"{shown} is not a state file (expected a JSON object){hint}")
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise StateError(
            f"{shown} was written by a newer invoicesync (state format {version}; this version "
            f"reads format {FORMAT_VERSION}); upgrade invoicesync to use this state"
        )
    try:
        return State.model_validate(data)
    except ValidationError as exc:
        raise StateError(f"{shown} is not a valid state file: {_validation_problems(exc)}{hint}") from exc


def new_state(environment: str, lineage: str | None = None) -> State:
    """A state with nothing in it yet: ``serial`` 0 and a fresh uuid4 ``lineage`` unless one is given."""
    return State(lineage=lineage or str(uuid.uuid4()), serial=0, environment=environment)


def _validation_problems(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{loc}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def duplicate_ids(state: State) -> dict[int, list[str]]:
    """Every invoice id the state holds under more than one address: ``{id: [addresses, sorted]}``."""
    by_id: dict[int, list[str]] = {}
    for address, record in state.invoices.items():
        by_id.setdefault(record.id, []).append(address)
    return {i: sorted(addresses) for i, addresses in sorted(by_id.items()) if len(addresses) > 1}


def _addresses_text(addresses: Sequence[str]) -> str:
    quoted = [f'"{a}"' for a in addresses]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _duplicates_message(shown: str, shared: Mapping[int, Sequence[str]]) -> str:
    lines = [
        f"{shown} holds invoice {i} under {len(addresses)} addresses, {_addresses_text(addresses)}"
        for i, addresses in shared.items()
    ]
    first = next(iter(shared.values()))
    return (
        "; ".join(lines)
        + ". One Campfire invoice can be managed under one address only: a plan would change it from "
        "two specs, and removing either spec would void it for the other. Keep it under the right "
        "address and forget the others with `invoicesync state rm ADDRESS` (for example "
        f"`invoicesync state rm {first[-1]}`); the invoice stays in Campfire as it is"
    )


# --- what the state manages, in money --------------------------------------------------------------


#: The snapshot of an invoice never read back from Campfire (frozen, so one serves every record).
_NEVER_READ = RemoteSnapshot()


def invoice_money(record: InvoiceRecord, live: Mapping[str, Any] | None = None) -> InvoiceMoney:
    """An invoice's money from a refreshed invoice (``live``), else the state's snapshot, else its body."""
    snap = RemoteSnapshot.from_response(live) if live is not None else (record.remote or _NEVER_READ)
    known = live is not None or record.remote is not None
    currency = snap.currency or str(record.body.get("currency") or "USD")
    invoiced = Decimal(snap.total_amount) if snap.total_amount is not None else invoice_total(record.body)
    paid = Decimal(snap.amount_paid) if snap.amount_paid is not None else Decimal(0)
    due = Decimal(snap.amount_due) if snap.amount_due is not None else MONEY_CONTEXT.subtract(invoiced, paid)
    if snap.locked_reason is Locked.VOIDED:
        status = "voided"
    else:
        status = snap.payment_status or snap.status or ("open" if known else "unknown")
    return InvoiceMoney(currency, status, invoiced, paid, due)


def managed_money(
    state: State, remote: Mapping[str, Mapping[str, Any] | None] | None = None
) -> tuple[ManagedMoney, ...]:
    """Invoiced, paid and due per currency over every invoice the state manages (voided ones left out).

    An invoice whose currency neither Campfire nor its body names counts as USD here (``show``); a
    plan counts it in its entity's currency instead (see ``make_plan``).
    """
    return sum_managed(state, remote, lambda _address, _record, money: (money.currency, None))


def sum_managed(
    state: State,
    remote: Mapping[str, Mapping[str, Any] | None] | None,
    key_of: Callable[[str, InvoiceRecord, InvoiceMoney], MoneyKey],
) -> tuple[ManagedMoney, ...]:
    sums: dict[MoneyKey, tuple[int, Decimal, Decimal, Decimal]] = {}
    live_by_address = remote or {}
    for address, record in state.invoices.items():
        money = invoice_money(record, live_by_address.get(address))
        if money.voided:
            continue
        key = key_of(address, record, money)
        n, i, p, d = sums.get(key, (0, Decimal(0), Decimal(0), Decimal(0)))
        add = MONEY_CONTEXT.add
        sums[key] = (n + 1, add(i, money.invoiced), add(p, money.paid), add(d, money.due))
    return tuple(
        ManagedMoney(key[0], n, i, p, d, entity=None if key[0] else key[1])
        for key, (n, i, p, d) in sorted(sums.items(), key=lambda item: money_key_order(item[0]))
    )

"""Planning: a pure function from desired invoices, state and (optionally) refreshed remote invoices to a Plan.

Owns ``Action``, ``FieldChange``, ``Change``, ``Plan``, ``make_plan`` (the per-address decision: create,
update with a PATCH of the changed fields, replace, void/delete/forget, or no-op; drift and locked
invoices; creates whose invoice number Campfire already holds outside the state; ``--target``/``--replace``
globs; ``prevent_destroy``), each change's currency (the spec's, else its entity's, else what Campfire
reported; never a guessed USD), the money impact per currency (``plan_totals``) and the plan's dict form
(``plan_to_dict``/``plan_from_dict``: the ``--format json`` output and the saved-plan file are the same
document, described in README.md, "The JSON plan", sealed by its ``plan_digest``).

Never does IO, never reads the clock, never prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from fnmatch import translate
from typing import Any, Literal

from deepdiff import DeepDiff
from deepdiff.helper import NotPresent
from pydantic import BaseModel, ConfigDict, ValidationError

from invoicesync.errors import PlanError, field_path
from invoicesync.models import (
    MONEY_CONTEXT,
    DesiredInvoice,
    RemoteSnapshot,
    body_digest,
    canonical_decimal,
    canonical_json,
    invoice_total,
    project_remote,
    with_source,
)
from invoicesync.state import InvoiceRecord, State


class Action(str, Enum):
    """What apply will do for one address."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # void (or delete, per lifecycle) the old invoice, then create anew
    VOID = "void"
    DELETE = "delete"
    FORGET = "forget"  # drop from state, leave the invoice alone in Campfire
    NOOP = "no-op"


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``path`` like ``due_date`` or ``lines[0].rate``.

    ``before`` is what the state (or, with ``drift``, Campfire) holds; ``after`` what the spec wants.
    ``None`` on either side means absent.
    """

    path: str
    before: Any
    after: Any
    drift: bool = False


@dataclass(frozen=True)
class Change:
    """The planned action for one address, with everything apply needs to carry it out."""

    address: str
    action: Action
    invoice_id: int | None = None
    body: Mapping[str, Any] | None = None  # full wire body to create/update to (source/source_id included)
    digest: str | None = None  # body_digest(body)
    before: Mapping[str, Any] | None = None  # the body last applied (from state)
    patch: Mapping[str, Any] | None = None  # UPDATE: the PATCH payload (changed fields; all of lines if any line changed)
    field_changes: tuple[FieldChange, ...] = ()
    lifecycle: Mapping[str, Any] = field(default_factory=dict)  # {"prevent_destroy": bool, "on_remove": str}
    location: str | None = None  # where the spec declares it ("specs/acme.yaml:3")
    # the invoice's ISO currency; None when it is not known (no spec currency, and neither the entity's
    # nor Campfire's word for it was at hand): then the money is in "entity N's currency"
    currency: str | None = "USD"
    amount: Decimal = Decimal(0)  # invoice total after the change (0 for removals)
    # the currency of ``amount_before`` when it differs from ``currency`` (an update or replace that
    # changes the invoice currency); None means the same as ``currency``, unless ``entity_before`` is set
    currency_before: str | None = None
    amount_before: Decimal = Decimal(0)  # invoice total before (0 for creates)
    reason: str | None = None  # why, when not obvious: "deleted outside invoicesync", "replace requested", "drift"
    blocked: str | None = None  # set when the change cannot be carried out ("invoice is paid in Campfire")
    entity: int | None = None  # the invoice's entity (the body's; for removals, the body last applied)
    # set only when the currency of ``amount_before`` is not known and is not that of ``amount``: the
    # entity whose currency it is (``currency_before`` is then None)
    entity_before: int | None = None

    @property
    def money_key(self) -> MoneyKey:
        """The currency ``amount`` is in: ``(code, None)``, or ``(None, entity)`` when not known."""
        return (self.currency, None) if self.currency else (None, self.entity)

    @property
    def money_key_before(self) -> MoneyKey:
        """The currency ``amount_before`` is in (see ``money_key``)."""
        if self.currency_before:
            return (self.currency_before, None)
        if self.entity_before is not None:
            return (None, self.entity_before)
        return self.money_key


#: A currency as the plan knows it: ``("EUR", None)``, or ``(None, 55)`` for "entity 55's currency, not
#: known". Totals are kept per key, so an unknown currency is never summed with a known one.
MoneyKey = tuple[str | None, int | None]


@dataclass(frozen=True)
class CurrencyTotals:
    """Money impact of a plan in one currency (``currency`` None: entity ``entity``'s, not known)."""

    currency: str | None
    create: Decimal = Decimal(0)  # sum of totals of invoices created
    update: Decimal = Decimal(0)  # sum of (after - before) over updates
    remove: Decimal = Decimal(0)  # sum of totals of invoices voided/deleted (positive number)
    entity: int | None = None  # set with currency None: whose currency these amounts are in

    @property
    def net(self) -> Decimal:
        """Net change in billed money: created + updated - removed."""
        return MONEY_CONTEXT.subtract(MONEY_CONTEXT.add(self.create, self.update), self.remove)


@dataclass(frozen=True)
class InvoiceMoney:
    """One managed invoice's money as last seen: Campfire's figures when known, else the body's total."""

    currency: str
    status: str  # payment status ("open", "partial", "paid", "voided", ...), "unknown" if never read back
    invoiced: Decimal
    paid: Decimal
    due: Decimal

    @property
    def voided(self) -> bool:
        """Voided (or deleted) invoices bill nothing: they are listed but left out of totals."""
        return self.status in ("voided", "deleted")


@dataclass(frozen=True)
class ManagedMoney:
    """What the state manages in one currency, before the plan's changes (voided invoices left out).

    ``currency`` None (in a plan only): entity ``entity``'s currency, which is not known.
    """

    currency: str | None
    invoices: int
    invoiced: Decimal
    paid: Decimal
    due: Decimal
    entity: int | None = None


@dataclass(frozen=True)
class Plan:
    """An ordered (by address) list of changes, NOOPs included, and what it was planned against."""

    environment: str
    lineage: str
    serial: int
    specs_digest: str
    changes: tuple[Change, ...]
    refreshed: bool = False
    targets: tuple[str, ...] = ()
    managed: tuple[ManagedMoney, ...] = ()  # money the state manages now, per currency


def invoice_money(record: InvoiceRecord, live: Mapping[str, Any] | None = None) -> InvoiceMoney:
    """An invoice's money from a refreshed invoice (``live``), else the state's snapshot, else its body."""
    snap = RemoteSnapshot.from_response(live) if live is not None else (record.remote or RemoteSnapshot())
    known = live is not None or record.remote is not None
    currency = snap.currency or str(record.body.get("currency") or "USD")
    invoiced = Decimal(snap.total_amount) if snap.total_amount is not None else invoice_total(record.body)
    paid = Decimal(snap.amount_paid) if snap.amount_paid is not None else Decimal(0)
    due = Decimal(snap.amount_due) if snap.amount_due is not None else MONEY_CONTEXT.subtract(invoiced, paid)
    if snap.locked_reason == "voided":
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
    return _sum_managed(state, remote, lambda _address, _record, money: (money.currency, None))


def _sum_managed(
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
        for key, (n, i, p, d) in sorted(sums.items(), key=lambda item: _money_key_order(item[0]))
    )


@dataclass(frozen=True)
class Outcome:
    """What happened to one change during apply."""

    address: str
    action: Action
    ok: bool
    invoice_id: int | None = None
    message: str | None = None  # the error (ok=False) or a note ("found after a lost response")
    skipped: bool = False  # not attempted: blocked, interrupted, or its dependency failed


@dataclass(frozen=True)
class ApplyResult:
    """Every outcome of one apply, in plan order."""

    outcomes: tuple[Outcome, ...]
    interrupted: bool = False
    elapsed_seconds: float = 0.0  # carrying out the changes, journaling each outcome included; the final state write not

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Outcomes that were attempted and failed, or skipped."""
        return tuple(o for o in self.outcomes if not o.ok)


# --- planning --------------------------------------------------------------------------------------

PLAN_FORMAT_VERSION = 1
PLAN_KIND = "invoicesync-plan"
PLAN_DIGEST_KEY = "plan_digest"
_REMAKE = "Make it again with `invoicesync plan --out FILE`."

REASON_DELETED_OUTSIDE = "deleted outside invoicesync"
REASON_REPLACE = "replace requested"
REASON_DRIFT = "changed outside invoicesync"
REASON_STATE_ONLY = "only the state changes; nothing is sent to Campfire"
REASON_ALREADY_VOIDED = "already voided in Campfire"
REASON_REPLACE_VOIDED = "replace requested; the old invoice is already voided in Campfire"

_Path = tuple[str | int, ...]
_Diff = dict[_Path, tuple[Any, Any]]


def make_plan(
    desired: Sequence[DesiredInvoice],
    state: State,
    remote: Mapping[str, Mapping[str, Any] | None] | None = None,
    *,
    targets: Sequence[str] = (),
    replace: Sequence[str] = (),
    refreshed: bool = False,
    entity_currencies: Mapping[int, str] | None = None,
    existing_invoices: Mapping[tuple[int, str], Sequence[int]] | None = None,
) -> Plan:
    """Decide what apply must do for every address, sorted by address, no-ops included.

    ``remote`` holds the refresh results: the invoice as Campfire returned it, or ``None`` when
    Campfire answered 404; an address missing from it was not refreshed. ``targets`` and ``replace``
    are address globs (``fnmatch``).

    ``entity_currencies`` maps entity ids to their ISO currency (Campfire's ``GET /coa/api/entity``).
    A change's currency is its body's ``currency``; else its entity's; else the one Campfire reported
    for that invoice (refreshed, or the state's snapshot); else the one Campfire reported for another
    invoice of the same entity that names no currency itself; else it is not known (``None``), and its
    money is kept apart as "entity N's currency", never taken for USD.

    ``existing_invoices`` maps ``(entity, invoice_number)`` to the ids of the live (neither voided nor
    deleted) invoices Campfire holds with that number. A create, or the create of a replace, whose
    number is held by an invoice this state does not manage is blocked, with the command that adopts
    that invoice instead. ``None`` (an offline plan) checks nothing. Raises ``PlanError`` for duplicate addresses, a glob that
    matches nothing, or any invoice protected by ``lifecycle.prevent_destroy`` that the plan would
    void, delete or replace (all of them are listed).
    """
    by_address: dict[str, DesiredInvoice] = {}
    duplicates: list[str] = []
    for invoice in desired:
        if invoice.address in by_address:
            duplicates.append(invoice.address)
        by_address[invoice.address] = invoice
    if duplicates:
        raise PlanError("Addresses declared more than once: " + ", ".join(sorted(set(duplicates))) + ".")

    records = state.invoices
    selected = _select_targets(by_address.keys() | records.keys(), targets)
    replacing = _select_replacements(replace, selected, by_address, records)
    live_by_address: Mapping[str, Mapping[str, Any] | None] = remote or {}
    money = _Currencies.of(state, live_by_address, entity_currencies or {})
    managed_ids = frozenset(record.id for record in records.values())

    changes: list[Change] = []
    protected: list[Change] = []
    for address in sorted(selected):
        spec = by_address.get(address)
        record = records.get(address)
        refreshed_here = address in live_by_address
        live = live_by_address.get(address)
        if record is None:
            assert spec is not None  # selected addresses come from the specs or the state
            change = _create(spec, state.lineage, money)
        elif spec is None:
            change = _removal(address, record, refreshed_here, live, money)
        elif address in replacing:
            change = _replacement(spec, record, state.lineage, refreshed_here, live, money)
        else:
            change = _existing(spec, record, state.lineage, refreshed_here, live, money)
        if existing_invoices is not None and change.action in (Action.CREATE, Action.REPLACE) and not change.blocked:
            taken = _number_taken(change, existing_invoices, managed_ids, in_state=record is not None)
            if taken:
                change = dataclasses.replace(change, blocked=taken)
        if _destroys(change) and change.lifecycle.get("prevent_destroy"):
            protected.append(change)
        changes.append(change)
    if protected:
        raise PlanError(_protected_message(protected))

    return Plan(
        environment=state.environment,
        lineage=state.lineage,
        serial=state.serial,
        specs_digest=specs_digest(desired),
        changes=tuple(changes),
        refreshed=refreshed,
        targets=tuple(targets),
        managed=_sum_managed(state, remote, money.managed_key),
    )


def specs_digest(desired: Sequence[DesiredInvoice]) -> str:
    """``sha256:<hex>`` over the sorted (address, body digest, lifecycle) of every desired invoice.

    A saved plan records it; apply refuses the plan when the specs have moved on since. Lifecycle is
    part of it because a saved plan carries the lifecycle that apply records in the state.
    """
    items = sorted(
        (d.address, d.digest, d.lifecycle.prevent_destroy, d.lifecycle.on_remove) for d in desired
    )
    return "sha256:" + hashlib.sha256(canonical_json(items).encode()).hexdigest()


def check_saved_plan(
    plan: Plan, *, environment: str, state: State, state_exists: bool, desired: Sequence[DesiredInvoice]
) -> None:
    """Refuse (``PlanError``) a saved plan made for another environment, state or set of specs.

    A plan made before the state existed (serial 0) still applies while no state file exists.
    """
    problems = []
    if plan.environment != environment:
        problems.append(f'it was made for environment "{plan.environment}", not "{environment}"')
    if state_exists and (plan.lineage != state.lineage or plan.serial != state.serial):
        problems.append(
            f"the state has moved on since (planned against serial {plan.serial}, now {state.serial}"
            + (", another lineage" if plan.lineage != state.lineage else "")
            + ")"
        )
    if plan.specs_digest != specs_digest(desired):
        problems.append("the specs (or the variables given) have changed since")
    if problems:
        raise PlanError("the saved plan is stale: " + "; ".join(problems) + ". Run `invoicesync plan --out FILE` again.")


def plan_totals(plan: Plan) -> tuple[CurrencyTotals, ...]:
    """The money impact per currency, sorted by currency (currencies not known last, by entity).

    Created invoices count in ``create``, the change of total of updated ones in ``update``, the
    totals of voided and deleted ones in ``remove``; a replace counts its new invoice as created and
    its old one as removed (unless its lifecycle forgets it). Forgetting moves no money, and blocked
    changes will not happen so they count nowhere. A currency appears when a change that will be
    carried out touches it, even if its amounts do not move.
    """
    create: dict[MoneyKey, Decimal] = {}
    update: dict[MoneyKey, Decimal] = {}
    remove: dict[MoneyKey, Decimal] = {}
    seen: set[MoneyKey] = set()

    def add(bucket: dict[MoneyKey, Decimal], key: MoneyKey, amount: Decimal) -> None:
        seen.add(key)
        bucket[key] = MONEY_CONTEXT.add(bucket.get(key, Decimal(0)), amount)

    for change in plan.changes:
        if change.action is Action.NOOP or change.blocked:
            continue
        new = change.money_key
        old = change.money_key_before
        if change.action is Action.CREATE:
            add(create, new, change.amount)
        elif change.action is Action.UPDATE:
            add(update, new, change.amount)
            add(update, old, -change.amount_before)
        elif change.action is Action.REPLACE:
            add(create, new, change.amount)
            if change.lifecycle.get("on_remove", "void") != "forget":
                add(remove, old, change.amount_before)
            else:
                seen.add(old)
        elif change.action in (Action.VOID, Action.DELETE):
            add(remove, old, change.amount_before)
        else:  # FORGET: the invoice stays in Campfire
            seen.add(old)
    return tuple(
        CurrencyTotals(
            currency=key[0],
            create=create.get(key, Decimal(0)),
            update=update.get(key, Decimal(0)),
            remove=remove.get(key, Decimal(0)),
            entity=None if key[0] else key[1],
        )
        for key in sorted(seen, key=_money_key_order)
    )


def _money_key_order(key: MoneyKey) -> tuple[bool, str, int]:
    """Known currencies first, by code; then the unknown ones, by entity."""
    return (key[0] is None, key[0] or "", key[1] if key[1] is not None else -1)


COUNT_KEYS: tuple[str, ...] = ("create", "update", "replace", "remove", "noop", "blocked")


def counts(plan: Plan) -> Mapping[str, int]:
    """How many changes of each kind: ``create``, ``update``, ``replace``, ``remove``, ``noop``, ``blocked``.

    ``remove`` counts voids, deletes and forgets. A blocked change counts only as ``blocked``, since
    apply will not carry it out.
    """
    out = dict.fromkeys(COUNT_KEYS, 0)
    for change in plan.changes:
        if change.blocked:
            out["blocked"] += 1
        elif change.action is Action.NOOP:
            out["noop"] += 1
        elif change.action in (Action.VOID, Action.DELETE, Action.FORGET):
            out["remove"] += 1
        else:
            out[change.action.value] += 1
    return out


def has_changes(plan: Plan) -> bool:
    """Whether apply would do anything (what ``--detailed-exitcode`` reports as exit code 2)."""
    return any(c.action is not Action.NOOP and not c.blocked for c in plan.changes)


def money_text(amount: Decimal) -> str:
    """Plain decimal text with at least two decimals, more when the value has them.

    ``Decimal("55")`` -> ``"55.00"``, ``Decimal("0.3")`` -> ``"0.30"``, ``Decimal("0.125")`` ->
    ``"0.125"``, ``Decimal("-5")`` -> ``"-5.00"``. Never goes through float.
    """
    if not amount.is_finite():
        return str(amount)
    value = canonical_decimal(amount)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(Decimal("0.01"))
    return f"{value:f}"


# --- one address -----------------------------------------------------------------------------------


def _lifecycle_of(spec: DesiredInvoice) -> dict[str, Any]:
    return {"prevent_destroy": spec.lifecycle.prevent_destroy, "on_remove": spec.lifecycle.on_remove}


def _entity_of(body: Mapping[str, Any]) -> int | None:
    entity = body.get("entity")
    return entity if isinstance(entity, int) and not isinstance(entity, bool) else None


def _named_currency(body: Mapping[str, Any]) -> str | None:
    currency = body.get("currency")
    return str(currency) if currency else None


@dataclass(frozen=True)
class _Currencies:
    """Where a change's currency comes from when its body names none (see ``make_plan``)."""

    entities: Mapping[int, str]  # as Campfire lists its entities
    seen: Mapping[int, str]  # entity -> the currency Campfire reported for its invoices that name none
    reported: Mapping[str, str]  # address -> the currency Campfire reported for the invoice there

    @classmethod
    def of(
        cls, state: State, live: Mapping[str, Mapping[str, Any] | None], entities: Mapping[int, str]
    ) -> _Currencies:
        reported: dict[str, str] = {}
        found: dict[int, set[str]] = {}
        for address, record in state.invoices.items():
            currency = _reported(record, live.get(address), address in live)
            if currency is None:
                continue
            reported[address] = currency
            entity = _entity_of(record.body)
            if entity is not None and not _named_currency(record.body):
                # Only an invoice that names no currency of its own was billed in its entity's.
                found.setdefault(entity, set()).add(currency)
        # Invoices of one entity that disagree (its currency changed?) settle nothing.
        seen = {entity: next(iter(codes)) for entity, codes in found.items() if len(codes) == 1}
        return cls(entities, seen, reported)

    def of_body(self, body: Mapping[str, Any], address: str, record: InvoiceRecord | None = None) -> str | None:
        """The currency of ``body``, to be (or already) applied at ``address``, whose invoice is ``record``'s."""
        named = _named_currency(body)
        if named:
            return named
        entity = _entity_of(body)
        if entity is not None and entity in self.entities:
            return str(self.entities[entity])
        # The invoice's own currency, as Campfire reported it, is its entity's when its applied body
        # named none (and the entity is the same one).
        if record is not None and not _named_currency(record.body) and _entity_of(record.body) == entity:
            reported = self.reported.get(address)
            if reported:
                return reported
        if entity is not None:
            return self.seen.get(entity)
        return None

    def managed_key(self, address: str, record: InvoiceRecord, money: InvoiceMoney) -> MoneyKey:
        """The currency a managed invoice's money is in: Campfire's word, its body's, else as for a change."""
        currency = self.reported.get(address) or self.of_body(record.body, address, record)
        return (currency, None) if currency else (None, _entity_of(record.body))

    def money(
        self, address: str, body: Mapping[str, Any] | None, record: InvoiceRecord | None
    ) -> dict[str, Any]:
        """``currency``, ``entity``, ``currency_before`` and ``entity_before`` of a change.

        ``body`` is what the change applies (None for removals), ``record`` what the state holds.
        """
        after_body = body if body is not None else (record.body if record is not None else {})
        currency = self.of_body(after_body, address, record)
        entity = _entity_of(after_body)
        fields: dict[str, Any] = {"currency": currency, "entity": entity}
        if body is None or record is None:
            return fields
        before_entity = _entity_of(record.body)
        if before_entity == entity and _named_currency(record.body) == _named_currency(body):
            return fields  # the same entity and the same named currency (or none): the same currency
        before = self.of_body(record.body, address, record)
        after_key: MoneyKey = (currency, None) if currency else (None, entity)
        before_key: MoneyKey = (before, None) if before else (None, before_entity)
        if before_key != after_key:
            fields["currency_before"] = before
            fields["entity_before"] = None if before else before_entity
        return fields


def _reported(record: InvoiceRecord, live: Mapping[str, Any] | None, refreshed: bool) -> str | None:
    """What Campfire says an invoice's currency is: as refreshed now, else as the state last saw it."""
    if refreshed:
        if live is None:
            return None  # deleted in Campfire
        currency = live.get("currency")
        if isinstance(currency, str) and currency:
            return currency
    return record.remote.currency if record.remote is not None else None


def _number_taken(
    change: Change, existing: Mapping[tuple[int, str], Sequence[int]], managed: frozenset[int], *, in_state: bool
) -> str | None:
    """Why a create must not run when Campfire already holds its invoice number outside this state (else None)."""
    body = change.body or {}
    entity = _entity_of(body)
    number = body.get("invoice_number")
    if entity is None or not isinstance(number, str) or not number:
        return None
    ids = sorted({i for i in existing.get((entity, number), ()) if i not in managed})
    if not ids:
        return None
    address = shlex.quote(change.address)
    which = f"id {ids[0]}" if len(ids) == 1 else "ids " + ", ".join(map(str, ids))
    head = f"invoice number {number} already exists in Campfire ({which}), outside this state"
    target = str(ids[0]) if len(ids) == 1 else "ID"
    choice = "" if len(ids) == 1 else f", ID being the right one of {', '.join(map(str, ids))}"
    if in_state:
        # The address still holds the invoice this plan would replace (or one deleted in Campfire):
        # forget it first, so that the address is free to adopt the existing one.
        return (
            f"{head}; to manage {'it' if len(ids) == 1 else 'one of them'} instead: invoicesync state rm {address}, "
            f"then invoicesync import {address} {target}{choice}"
        )
    return f"{head}; adopt {'it' if len(ids) == 1 else 'one'} with: invoicesync import {address} {target}{choice}"


def _locked_reason(live: Mapping[str, Any] | None) -> str | None:
    if live is None:
        return None
    return RemoteSnapshot.from_response(live).locked_reason


def _create(
    spec: DesiredInvoice,
    lineage: str,
    money: _Currencies,
    *,
    body: dict[str, Any] | None = None,
    digest: str | None = None,
    reason: str | None = None,
) -> Change:
    if body is None or digest is None:
        body = with_source(spec.wire, lineage, spec.address)
        digest = body_digest(body)
    return Change(
        address=spec.address,
        action=Action.CREATE,
        body=body,
        digest=digest,
        lifecycle=_lifecycle_of(spec),
        location=str(spec.location),
        amount=invoice_total(body),
        reason=reason,
        **money.money(spec.address, body, None),
    )


def _removal(
    address: str, record: InvoiceRecord, refreshed_here: bool, live: Mapping[str, Any] | None, money: _Currencies
) -> Change:
    lifecycle = {"prevent_destroy": record.lifecycle.prevent_destroy, "on_remove": record.lifecycle.on_remove}
    common: dict[str, Any] = {
        "address": address,
        "invoice_id": record.id,
        "before": record.body,
        "lifecycle": lifecycle,
        "amount_before": invoice_total(record.body),
        **money.money(address, None, record),
    }
    if refreshed_here and live is None:
        return Change(action=Action.FORGET, reason=REASON_DELETED_OUTSIDE, **common)
    on_remove = record.lifecycle.on_remove
    if on_remove == "forget":
        return Change(action=Action.FORGET, **common)
    locked = _locked_reason(live)
    if on_remove == "void" and locked == "voided":
        return Change(action=Action.FORGET, reason=REASON_ALREADY_VOIDED, **common)
    action = Action.VOID if on_remove == "void" else Action.DELETE
    blocked = None
    if locked and locked != "voided":
        verb = "voided" if action is Action.VOID else "deleted"
        blocked = (
            f"invoice {record.id} is {locked} in Campfire; it can no longer be {verb}"
            f" (`invoicesync state rm {address}` stops managing it and leaves it in Campfire)"
        )
    return Change(action=action, blocked=blocked, **common)


def _replacement(
    spec: DesiredInvoice,
    record: InvoiceRecord,
    lineage: str,
    refreshed_here: bool,
    live: Mapping[str, Any] | None,
    money: _Currencies,
) -> Change:
    body = with_source(spec.wire, lineage, spec.address)
    digest = body_digest(body)
    if refreshed_here and live is None:
        return _create(spec, lineage, money, body=body, digest=digest, reason=REASON_DELETED_OUTSIDE)
    locked = _locked_reason(live)
    if locked == "voided":
        return _create(spec, lineage, money, body=body, digest=digest, reason=REASON_REPLACE_VOIDED)
    field_changes: list[FieldChange] = []
    if record.digest != digest:
        ignore = _bookkeeping_keys(spec)
        field_changes = _field_changes(_diff(_norm(_without(record.body, ignore)), _norm(_without(body, ignore))))
    field_changes += _lifecycle_changes(record, spec)
    on_remove = spec.lifecycle.on_remove
    blocked = None
    if locked and on_remove != "forget":
        verb = "voided" if on_remove == "void" else "deleted"
        blocked = f"invoice {record.id} is {locked} in Campfire; it can no longer be {verb}"
    return Change(
        address=spec.address,
        action=Action.REPLACE,
        invoice_id=record.id,
        body=body,
        digest=digest,
        before=record.body,
        field_changes=tuple(field_changes),
        lifecycle=_lifecycle_of(spec),
        location=str(spec.location),
        **money.money(spec.address, body, record),
        amount=invoice_total(body),
        amount_before=invoice_total(record.body),
        reason=REASON_REPLACE,
        blocked=blocked,
    )


def _existing(
    spec: DesiredInvoice,
    record: InvoiceRecord,
    lineage: str,
    refreshed_here: bool,
    live: Mapping[str, Any] | None,
    money: _Currencies,
) -> Change:
    body = with_source(spec.wire, lineage, spec.address)
    ignore = _bookkeeping_keys(spec)
    compared, applied = _without(body, ignore), _without(record.body, ignore)
    # Unchanged invoices are most of a plan: a body equal to the one applied (Decimal('50') == 50) is
    # settled without serialising it for a digest, normalising or diffing it.
    same_body = applied == compared
    digest = None if same_body else body_digest(body)

    def exact_digest() -> str:
        return digest if digest is not None else body_digest(body)

    if refreshed_here and live is None:
        return _create(spec, lineage, money, body=body, digest=exact_digest(), reason=REASON_DELETED_OUTSIDE)

    spec_changed = not same_body and record.digest != digest
    lifecycle_changes = _lifecycle_changes(record, spec)
    drift: _Diff = {}
    remote_view: dict[str, Any] = {}
    # Not refreshed: what the state last saw of Campfire still says whether it may be changed.
    locked = record.remote.locked_reason if record.remote is not None and not refreshed_here else None
    if live is not None:
        locked = _locked_reason(live)
        drift, remote_view = _drift(record.body, live, ignore=ignore)
    body_norm = _norm(compared) if spec_changed or drift else None
    spec_diff = _diff(_norm(applied), body_norm) if spec_changed else {}

    common: dict[str, Any] = {
        "address": spec.address,
        "invoice_id": record.id,
        "lifecycle": _lifecycle_of(spec),
        "location": str(spec.location),
        **money.money(spec.address, body, record),
    }

    def update(merged: _Diff, drifted: set[_Path], blocked: str | None = None) -> Change:
        return Change(
            action=Action.UPDATE,
            body=body,
            before=record.body,
            patch=_patch(merged, body),
            field_changes=tuple(_field_changes(merged, drifted) + lifecycle_changes),
            amount=invoice_total(body),
            amount_before=invoice_total({**record.body, **remote_view} if drifted else record.body),
            reason=REASON_DRIFT if drifted else None,
            blocked=blocked,
            digest=exact_digest(),
            **common,
        )

    if locked:
        merged, drifted = _merge(spec_diff, drift, body_norm) if spec_diff else ({}, set())
        if merged:
            return update(merged, drifted, f"invoice {record.id} is {locked} in Campfire; it can no longer be changed")
        if lifecycle_changes or spec_changed:
            return _state_only(common, body, exact_digest(), record, lifecycle_changes)
        if locked == "voided":
            note: str | None = "voided in Campfire"
        elif drift:
            note = f"{REASON_DRIFT}, but {locked} in Campfire: left as is"
        else:
            note = None
        total = invoice_total(record.body)
        return Change(
            action=Action.NOOP, amount=total, amount_before=total, reason=note, digest=record.digest, **common
        )

    merged, drifted = _merge(spec_diff, drift, body_norm)
    if merged:
        return update(merged, drifted)
    if lifecycle_changes or spec_changed:
        return _state_only(common, body, exact_digest(), record, lifecycle_changes)
    total = invoice_total(record.body)
    return Change(action=Action.NOOP, amount=total, amount_before=total, digest=record.digest, **common)


def _state_only(
    common: Mapping[str, Any],
    body: dict[str, Any],
    digest: str,
    record: InvoiceRecord,
    lifecycle_changes: list[FieldChange],
) -> Change:
    """An UPDATE with an empty patch: apply records the new body digest and lifecycle, and sends nothing."""
    return Change(
        action=Action.UPDATE,
        body=body,
        before=record.body,
        patch={},
        digest=digest,
        field_changes=tuple(lifecycle_changes),
        amount=invoice_total(body),
        amount_before=invoice_total(record.body),
        reason=REASON_STATE_ONLY,
        **common,
    )


_MARKING_KEYS = ("source", "source_id")


def _bookkeeping_keys(spec: DesiredInvoice) -> tuple[str, ...]:
    """``source``/``source_id`` when invoicesync adds them rather than the spec.

    They exist to find a create whose response was lost; once the invoice is created they are never
    compared: an invoice adopted with ``import`` lacks them, and ``state mv`` changes the address
    inside ``source_id``, and neither is a change to make in Campfire.
    """
    return tuple(k for k in _MARKING_KEYS if k not in spec.wire)


def _without(body: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    if not keys:
        return dict(body)
    return {k: v for k, v in body.items() if k not in keys}


def _destroys(change: Change) -> bool:
    """Whether carrying out the change voids or deletes an invoice in Campfire."""
    if change.action in (Action.VOID, Action.DELETE):
        return True
    return change.action is Action.REPLACE and change.lifecycle.get("on_remove", "void") != "forget"


def _protected_message(changes: Sequence[Change]) -> str:
    n = len(changes)
    lines = [
        f"The plan would destroy {n} invoice{'s' if n != 1 else ''} protected by lifecycle.prevent_destroy:"
    ]
    removed = False
    replaced = False
    for change in changes:
        if change.action is Action.REPLACE:
            replaced = True
            what = f"replace (the old invoice would be {change.lifecycle.get('on_remove', 'void')}ed)"
        else:
            removed = True
            what = f"{change.action.value}, its spec was removed"
        lines.append(f"  {change.address} (id {change.invoice_id}): {what}")
    lines.append("Nothing was changed. To go ahead:")
    if removed:
        lines.append(
            "  - to remove an invoice: put its spec back with `lifecycle: {prevent_destroy: false}`,"
            " apply, then remove the spec and apply again;"
        )
    if replaced:
        lines.append("  - to replace an invoice: set `prevent_destroy: false` in its spec and apply first, or drop --replace;")
    lines.append(
        "  - to stop managing an invoice and leave it in Campfire as it is: `invoicesync state rm ADDRESS`."
    )
    return "\n".join(lines)


# --- address globs ---------------------------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matching(addresses: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The addresses (sorted) matching any of the glob ``patterns``; all of them when there is none."""
    ordered = sorted(addresses)
    if not patterns:
        return ordered
    compiled = [_glob(p) for p in patterns]
    return [a for a in ordered if any(rx.match(a) for rx in compiled)]


def _select_targets(universe: Iterable[str], targets: Sequence[str]) -> set[str]:
    addresses = sorted(universe)
    if not targets:
        return set(addresses)
    selected: set[str] = set()
    unmatched: list[str] = []
    for pattern in targets:
        rx = _glob(pattern)
        hits = [a for a in addresses if rx.match(a)]
        if not hits:
            unmatched.append(pattern)
        selected.update(hits)
    if unmatched:
        raise PlanError(
            "\n".join(
                f"--target {p} matches no address in the specs or the state.{_did_you_mean(p, addresses)}"
                for p in unmatched
            )
        )
    return selected


def _select_replacements(
    replace: Sequence[str],
    selected: set[str],
    desired: Mapping[str, DesiredInvoice],
    records: Mapping[str, InvoiceRecord],
) -> set[str]:
    candidates = sorted(a for a in selected if a in desired and a in records)
    chosen: set[str] = set()
    problems: list[str] = []
    for pattern in replace:
        rx = _glob(pattern)
        hits = [a for a in candidates if rx.match(a)]
        if hits:
            chosen.update(hits)
            continue
        if any(rx.match(a) for a in desired if a not in records):
            why = "only invoices not created yet, so there is nothing to replace"
        elif any(rx.match(a) for a in records if a not in desired):
            why = "only invoices whose spec was removed; they are removed, not replaced"
        elif any(rx.match(a) for a in records):
            why = "only addresses outside the --target addresses"
        else:
            why = "no invoice in the specs or the state"
        problems.append(f"--replace {pattern} matches {why}.{_did_you_mean(pattern, candidates)}")
    if problems:
        raise PlanError("\n".join(problems))
    return chosen


def _did_you_mean(pattern: str, addresses: Sequence[str]) -> str:
    close = difflib.get_close_matches(pattern, addresses, n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


# --- field diffs -----------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """One Python value per JSON value: integral numbers as int, others as canonical Decimal.

    Bodies from the specs hold ``Decimal('50')`` where the state file read back ``50``; money must
    compare exactly (so no ``ignore_numeric_type_changes``, which rounds to significant digits).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return canonical_decimal(value) if value.is_finite() else value
    if isinstance(value, float):
        return _norm(Decimal(str(value)))
    if isinstance(value, Mapping):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def _diff(before: Any, after: Any) -> _Diff:
    """``{path: (before, after)}`` for every leaf that differs between two normalised bodies."""
    if before == after:
        return {}
    out: _Diff = {}
    tree = DeepDiff(before, after, view="tree", threshold_to_diff_deeper=0)
    for levels in tree.values():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            old = None if isinstance(level.t1, NotPresent) else level.t1
            new = None if isinstance(level.t2, NotPresent) else level.t2
            out[path] = (old, new)
    return out


def _drift(
    record_body: Mapping[str, Any], live: Mapping[str, Any], *, ignore: Iterable[str] = ()
) -> tuple[_Diff, dict[str, Any]]:
    """What Campfire holds that differs from the body last applied: ``({path: (applied, remote)}, remote view)``.

    Only the keys of the applied body are compared, and only those Campfire returned; ``ignore``
    names top-level keys left out of the comparison.
    """
    view = _align(project_remote(live, record_body), record_body)
    if not isinstance(view, dict):
        return {}, {}
    for key in ignore:
        view.pop(key, None)
    applied = _restrict(record_body, view)
    if applied == view:  # equal values (50 == Decimal("50.00")): no need to normalise and diff
        return {}, view
    return _diff(_norm(applied), _norm(view)), view


def _align(value: Any, like: Any) -> Any:
    """Read numeric strings as Decimal where the applied body has a number (``"50.00"`` vs ``50``)."""
    if isinstance(value, str) and isinstance(like, (int, Decimal)) and not isinstance(like, bool):
        try:
            return Decimal(value)
        except ArithmeticError:
            return value
    if isinstance(value, Mapping) and isinstance(like, Mapping):
        return {k: _align(v, like.get(k)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(like, list):
        return [_align(v, like[i] if i < len(like) else (like[-1] if like else None)) for i, v in enumerate(value)]
    return value


def _restrict(record_body: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    """The applied body cut to the keys the remote view has (line keys too, line by line)."""
    out: dict[str, Any] = {}
    for key, value in view.items():
        applied = record_body.get(key)
        if isinstance(applied, list) and isinstance(value, list):
            lines: list[Any] = []
            for i, item in enumerate(applied):
                other = value[i] if i < len(value) else None
                if isinstance(item, Mapping) and isinstance(other, Mapping):
                    lines.append({k: v for k, v in item.items() if k in other})
                else:
                    lines.append(item)
            out[key] = lines
        else:
            out[key] = applied
    return out


def _get(value: Any, path: _Path) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def _merge(spec_diff: _Diff, drift: _Diff, body_norm: Any) -> tuple[_Diff, set[_Path]]:
    """Spec changes plus drift put back to the spec, and which paths of the result are drift.

    A drifted path shows the remote value as ``before``; one whose remote value already is what the
    spec wants needs nothing and is dropped.
    """
    merged: _Diff = dict(spec_diff)
    drifted: set[_Path] = set()
    for path, (_applied, remote_value) in drift.items():
        wanted = spec_diff[path][1] if path in spec_diff else _get(body_norm, path)
        if remote_value == wanted:
            merged.pop(path, None)
            continue
        merged[path] = (remote_value, wanted)
        drifted.add(path)
    return merged, drifted


def _path_key(path: _Path) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in path)


def _field_changes(diff: _Diff, drift: Iterable[_Path] = ()) -> list[FieldChange]:
    drifted = set(drift)
    return [
        FieldChange(field_path(p), diff[p][0], diff[p][1], drift=p in drifted)
        for p in sorted(diff, key=_path_key)
    ]


def _patch(diff: _Diff, body: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH payload: each changed top-level field's new value (None when removed; all of lines)."""
    keys = sorted({str(p[0]) for p in diff if p})
    return {k: body.get(k) for k in keys}


def _lifecycle_changes(record: InvoiceRecord, spec: DesiredInvoice) -> list[FieldChange]:
    out: list[FieldChange] = []
    if record.lifecycle.prevent_destroy != spec.lifecycle.prevent_destroy:
        out.append(
            FieldChange("lifecycle.prevent_destroy", record.lifecycle.prevent_destroy, spec.lifecycle.prevent_destroy)
        )
    if record.lifecycle.on_remove != spec.lifecycle.on_remove:
        out.append(FieldChange("lifecycle.on_remove", record.lifecycle.on_remove, spec.lifecycle.on_remove))
    return out


# --- the plan document -----------------------------------------------------------------------------


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as the documented JSON document (``--format json`` and the saved-plan file).

    Keys are described in README.md, "The JSON plan". Money totals and amounts are strings with at least
    two decimals (``"55.00"``); bodies, patches and field values keep their numbers as ``Decimal``,
    so serialise with ``models.dumps_json`` (JSON numbers, never floats). No-op changes are included
    (so the document accounts for every address) but carry no body, before or patch.

    ``plan_digest`` is ``sha256:<hex>`` over every other key of the document, in a canonical form
    (sorted keys, one spelling per number): ``plan_from_dict`` refuses a document whose content no
    longer matches it, so that a saved plan is applied (and shown) exactly as it was made.
    """
    doc = _plan_document(plan)
    doc[PLAN_DIGEST_KEY] = _document_digest(doc)
    return doc


def _document_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a plan document, its own ``plan_digest`` left out."""
    content = {k: v for k, v in doc.items() if k != PLAN_DIGEST_KEY}
    return "sha256:" + hashlib.sha256(canonical_json(_canonical(content)).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """One spelling per JSON value, so that reformatting a saved plan (indentation, key order, ``50.00``
    for ``50``) keeps its digest while any change of content does not."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        value = canonical_decimal(value)
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)


def _plan_document(plan: Plan) -> dict[str, Any]:
    summary = counts(plan)
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "kind": PLAN_KIND,
        "environment": plan.environment,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "specs_digest": plan.specs_digest,
        "refreshed": plan.refreshed,
        "targets": list(plan.targets),
        "summary": {
            "create": summary["create"],
            "update": summary["update"],
            "replace": summary["replace"],
            "remove": summary["remove"],
            "no_op": summary["noop"],
            "blocked": summary["blocked"],
        },
        "totals": [
            {
                "currency": t.currency,
                "entity": t.entity,
                "create": money_text(t.create),
                "update": money_text(t.update),
                "remove": money_text(t.remove),
                "net": money_text(t.net),
            }
            for t in plan_totals(plan)
        ],
        "managed": [
            {
                "currency": m.currency,
                "entity": m.entity,
                "invoices": m.invoices,
                "invoiced": money_text(m.invoiced),
                "paid": money_text(m.paid),
                "due": money_text(m.due),
            }
            for m in plan.managed
        ],
        "changes": [_change_to_dict(c) for c in plan.changes],
    }


def _change_to_dict(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "action": change.action.value,
        "invoice_id": change.invoice_id,
        "reason": change.reason,
        "blocked": change.blocked,
        "location": change.location,
        "currency": change.currency,
        "currency_before": change.currency_before,
        "entity": change.entity,
        "entity_before": change.entity_before,
        "amount": money_text(change.amount),
        "amount_before": money_text(change.amount_before),
        "field_changes": [
            {"path": f.path, "before": f.before, "after": f.after, "drift": f.drift} for f in change.field_changes
        ],
        "lifecycle": dict(change.lifecycle),
        "digest": change.digest,
        "body": None if change.body is None else dict(change.body),
        "before": None if change.before is None else dict(change.before),
        "patch": None if change.patch is None else dict(change.patch),
    }


class _FieldChangeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    before: Any = None
    after: Any = None
    drift: bool = False


class _LifecycleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prevent_destroy: bool = False
    on_remove: Literal["void", "delete", "forget"] = "void"


class _ChangeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    action: Action
    invoice_id: int | None = None
    reason: str | None = None
    blocked: str | None = None
    location: str | None = None
    currency: str | None = "USD"
    currency_before: str | None = None
    entity: int | None = None
    entity_before: int | None = None
    amount: Decimal = Decimal(0)
    amount_before: Decimal = Decimal(0)
    field_changes: list[_FieldChangeDoc] = []
    lifecycle: _LifecycleDoc | None = None
    digest: str | None = None
    body: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None


class _ManagedDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str | None
    entity: int | None = None
    invoices: int
    invoiced: Decimal
    paid: Decimal
    due: Decimal


class _PlanDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int
    kind: str
    environment: str
    lineage: str
    serial: int
    specs_digest: str
    refreshed: bool = False
    targets: list[str] = []
    summary: dict[str, int] | None = None  # derived; recomputed from the changes
    totals: list[dict[str, Any]] | None = None  # derived; recomputed from the changes
    managed: list[_ManagedDoc] = []
    changes: list[_ChangeDoc]
    plan_digest: str | None = None


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """Read a plan document back (the inverse of ``plan_to_dict``; load the JSON with ``models.loads_json``).

    Raises ``PlanError`` when it is not an invoicesync plan, has a ``format_version`` this version
    does not know, or is malformed (the message names the offending key); and when it was changed
    after it was made: it has no ``plan_digest`` (made by an older version), its content does not
    match its ``plan_digest``, or a change contradicts itself (a ``patch`` that is not what its
    ``body`` and ``field_changes`` say, a ``digest`` that is not its body's, ...).
    """
    if not isinstance(data, Mapping):
        raise PlanError("This is not an invoicesync plan: expected a JSON object.")
    if data.get("kind") != PLAN_KIND:
        raise PlanError(f'This is not an invoicesync plan: "kind" is {data.get("kind")!r}, expected {PLAN_KIND!r}.')
    version = data.get("format_version")
    if version != PLAN_FORMAT_VERSION:
        raise PlanError(
            f"Plan format_version {version!r} is not supported: this invoicesync reads format_version "
            f"{PLAN_FORMAT_VERSION}. Make the plan again with this version."
        )
    try:
        doc = _PlanDoc.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{_loc_text(e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        more = len(exc.errors()) - 5
        suffix = f" (and {more} more)" if more > 0 else ""
        raise PlanError(f"The plan is malformed: {problems}{suffix}.") from exc
    if doc.plan_digest is None:
        raise PlanError(
            "The plan has no plan_digest: it was made by an older invoicesync (or assembled by hand), so "
            f"nothing shows that it is the plan that was reviewed. {_REMAKE}"
        )
    if doc.plan_digest != _document_digest(data):
        raise PlanError(
            "The plan file was changed after it was made: its content no longer matches its plan_digest. "
            f"A saved plan is applied exactly as it was made and reviewed, never as edited. {_REMAKE}"
        )
    plan = Plan(
        environment=doc.environment,
        lineage=doc.lineage,
        serial=doc.serial,
        specs_digest=doc.specs_digest,
        refreshed=doc.refreshed,
        targets=tuple(doc.targets),
        changes=tuple(_change_from_doc(c) for c in doc.changes),
        managed=tuple(
            ManagedMoney(m.currency, m.invoices, m.invoiced, m.paid, m.due, entity=m.entity) for m in doc.managed
        ),
    )
    for index, change in enumerate(plan.changes):
        problem = _inconsistency(change)
        if problem:
            raise PlanError(
                f"The plan file was changed after it was made: changes[{index}] ({change.address}): {problem}. "
                f"{_REMAKE}"
            )
    return plan


def _top_key(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _inconsistency(change: Change) -> str | None:
    """What in one change contradicts the rest of it (None when nothing does): what make_plan never writes."""
    action = change.action
    if action in (Action.CREATE, Action.UPDATE, Action.REPLACE):
        if change.body is None:
            return f"a {action.value} without a body"
        if change.digest != body_digest(_canonical(change.body)):
            return "its digest is not that of its body"
        if change.amount != invoice_total(change.body):
            return "its amount is not its body's total"
    if action is not Action.CREATE and action is not Action.NOOP and change.invoice_id is None:
        return f"a {action.value} without an invoice_id"
    if action is Action.UPDATE:
        if change.patch is None:
            return "an update without a patch"
        body = change.body or {}
        for key, value in change.patch.items():
            if _norm(value) != _norm(body.get(key)):
                return f"its patch sets {key} to what its body does not hold"
        changed = {_top_key(f.path) for f in change.field_changes if not f.path.startswith("lifecycle.")}
        if set(change.patch) != changed:
            return "its patch does not send exactly the fields its field_changes list"
    elif change.patch is not None:
        return f"a {action.value} with a patch"
    return None


def _change_from_doc(doc: _ChangeDoc) -> Change:
    lifecycle = doc.lifecycle.model_dump(exclude_unset=True) if doc.lifecycle is not None else {}
    return Change(
        address=doc.address,
        action=doc.action,
        invoice_id=doc.invoice_id,
        body=doc.body,
        digest=doc.digest,
        before=doc.before,
        patch=doc.patch,
        field_changes=tuple(FieldChange(f.path, f.before, f.after, f.drift) for f in doc.field_changes),
        lifecycle=lifecycle,
        location=doc.location,
        currency=doc.currency,
        currency_before=doc.currency_before,
        entity=doc.entity,
        entity_before=doc.entity_before,
        amount=doc.amount,
        amount_before=doc.amount_before,
        reason=doc.reason,
        blocked=doc.blocked,
    )


def _loc_text(loc: Sequence[str | int]) -> str:
    return field_path(tuple(loc)) or "(document)"

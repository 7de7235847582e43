"""Planning: a pure function from desired invoices, state and (optionally) refreshed remote invoices to a Plan.

Owns ``make_plan``: the per-address decision (create, update with a PATCH of the changed fields,
replace, void/delete/forget, or no-op; drift and locked invoices; creates whose invoice number
Campfire already holds outside the state; ``prevent_destroy``), each change's currency (the spec's,
else its entity's, else what Campfire reported; never a guessed USD), and the money impact per
currency (``plan_totals``). The rest of the package:

    model.py     Action, FieldChange, Change, Plan: the plan as data
    diff.py      the one normaliser and the field-level diff
    targets.py   --target / --replace globs
    planfile.py  the saved plan (the JSON document, its digest, its file)

Never does IO, never reads the clock, never prints (``planfile`` reads and writes its file).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from invoicesync.errors import PlanError
from invoicesync.models import DesiredInvoice, Locked, OnRemove, RemoteSnapshot, body_digest, with_source
from invoicesync.money import CurrencyTotals, InvoiceMoney, ManagedMoney, MoneyKey, invoice_total, money_text
from invoicesync.plan.diff import (
    Diff,
    FieldPath,
    diff_values,
    drift_of,
    lifecycle_field_changes,
    merge_drift,
    normalised,
    patch_body,
    to_field_changes,
)
from invoicesync.plan.model import (
    COUNT_KEYS,
    REASON_ALREADY_VOIDED,
    REASON_DELETED_OUTSIDE,
    REASON_DRIFT,
    REASON_REPLACE,
    REASON_REPLACE_VOIDED,
    REASON_STATE_ONLY,
    Action,
    Change,
    FieldChange,
    Plan,
    counts,
    has_changes,
    plan_totals,
)
from invoicesync.plan.planfile import (
    PLAN_DIGEST_KEY,
    PLAN_FORMAT_VERSION,
    PLAN_KIND,
    check_saved_plan,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    save_plan,
    specs_digest,
)
from invoicesync.plan.targets import address_order, matching, select_replacements, select_targets
from invoicesync.results import ApplyResult, Outcome
from invoicesync.state import InvoiceRecord, State
from invoicesync.state.model import invoice_money, managed_money, sum_managed

__all__ = [
    "Action",
    "ApplyResult",
    "COUNT_KEYS",
    "Change",
    "CurrencyTotals",
    "FieldChange",
    "InvoiceMoney",
    "ManagedMoney",
    "MoneyKey",
    "Outcome",
    "PLAN_DIGEST_KEY",
    "PLAN_FORMAT_VERSION",
    "PLAN_KIND",
    "Plan",
    "REASON_ALREADY_VOIDED",
    "REASON_DELETED_OUTSIDE",
    "REASON_DRIFT",
    "REASON_REPLACE",
    "REASON_REPLACE_VOIDED",
    "REASON_STATE_ONLY",
    "address_order",
    "check_saved_plan",
    "counts",
    "has_changes",
    "invoice_money",
    "load_plan",
    "make_plan",
    "managed_money",
    "matching",
    "money_text",
    "plan_from_dict",
    "plan_to_dict",
    "plan_totals",
    "save_plan",
    "specs_digest",
]


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
    selected = select_targets(by_address.keys() | records.keys(), targets)
    replacing = select_replacements(replace, selected, by_address, records)
    live_by_address: Mapping[str, Mapping[str, Any] | None] = remote or {}
    money = _Currencies.of(state, live_by_address, entity_currencies or {})
    managed_ids = frozenset(record.id for record in records.values())

    changes: list[Change] = []
    protected: list[Change] = []
    for address in sorted(selected, key=address_order):
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
        if _destroys(change) and change.lifecycle.prevent_destroy:
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
        managed=sum_managed(state, remote, money.managed_key),
    )




# --- one address -----------------------------------------------------------------------------------


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


def _locked_reason(live: Mapping[str, Any] | None) -> Locked | None:
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
        lifecycle=spec.lifecycle,
        location=str(spec.location),
        amount=invoice_total(body),
        reason=reason,
        **money.money(spec.address, body, None),
    )


def _removal(
    address: str, record: InvoiceRecord, refreshed_here: bool, live: Mapping[str, Any] | None, money: _Currencies
) -> Change:
    common: dict[str, Any] = {
        "address": address,
        "invoice_id": record.id,
        "before": record.body,
        "lifecycle": record.lifecycle,
        "amount_before": invoice_total(record.body),
        **money.money(address, None, record),
    }
    if refreshed_here and live is None:
        return Change(action=Action.FORGET, reason=REASON_DELETED_OUTSIDE, **common)
    on_remove = record.lifecycle.on_remove
    if on_remove is OnRemove.FORGET:
        return Change(action=Action.FORGET, **common)
    locked = _locked_reason(live)
    if on_remove is OnRemove.VOID and locked is Locked.VOIDED:
        return Change(action=Action.FORGET, reason=REASON_ALREADY_VOIDED, **common)
    action = Action.VOID if on_remove is OnRemove.VOID else Action.DELETE
    blocked = None
    if locked and locked is not Locked.VOIDED:
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
    if locked is Locked.VOIDED:
        return _create(spec, lineage, money, body=body, digest=digest, reason=REASON_REPLACE_VOIDED)
    field_changes: list[FieldChange] = []
    if record.digest != digest:
        ignore = _bookkeeping_keys(spec)
        field_changes = to_field_changes(diff_values(normalised(_without(record.body, ignore)), normalised(_without(body, ignore))))
    field_changes += lifecycle_field_changes(record, spec)
    on_remove = spec.lifecycle.on_remove
    blocked = None
    if locked and on_remove is not OnRemove.FORGET:
        verb = "voided" if on_remove is OnRemove.VOID else "deleted"
        blocked = f"invoice {record.id} is {locked} in Campfire; it can no longer be {verb}"
    return Change(
        address=spec.address,
        action=Action.REPLACE,
        invoice_id=record.id,
        body=body,
        digest=digest,
        before=record.body,
        field_changes=tuple(field_changes),
        lifecycle=spec.lifecycle,
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
    lifecycle_changes = lifecycle_field_changes(record, spec)
    drift: Diff = {}
    remote_view: dict[str, Any] = {}
    # Not refreshed: what the state last saw of Campfire still says whether it may be changed.
    locked = record.remote.locked_reason if record.remote is not None and not refreshed_here else None
    if live is not None:
        locked = _locked_reason(live)
        drift, remote_view = drift_of(record.body, live, ignore=ignore)
    body_norm = normalised(compared) if spec_changed or drift else None
    spec_diff = diff_values(normalised(applied), body_norm) if spec_changed else {}

    common: dict[str, Any] = {
        "address": spec.address,
        "invoice_id": record.id,
        "lifecycle": spec.lifecycle,
        "location": str(spec.location),
        **money.money(spec.address, body, record),
    }

    def update(merged: Diff, drifted: set[FieldPath], blocked: str | None = None) -> Change:
        return Change(
            action=Action.UPDATE,
            body=body,
            before=record.body,
            patch=patch_body(merged, body),
            field_changes=tuple(to_field_changes(merged, drifted) + lifecycle_changes),
            amount=invoice_total(body),
            amount_before=invoice_total({**record.body, **remote_view} if drifted else record.body),
            reason=REASON_DRIFT if drifted else None,
            blocked=blocked,
            digest=exact_digest(),
            **common,
        )

    if locked:
        merged, drifted = merge_drift(spec_diff, drift, body_norm) if spec_diff else ({}, set())
        if merged:
            return update(merged, drifted, f"invoice {record.id} is {locked} in Campfire; it can no longer be changed")
        if lifecycle_changes or spec_changed:
            return _state_only(common, body, exact_digest(), record, lifecycle_changes)
        if locked is Locked.VOIDED:
            note: str | None = "voided in Campfire"
        elif drift:
            note = f"{REASON_DRIFT}, but {locked} in Campfire: left as is"
        else:
            note = None
        total = invoice_total(record.body)
        return Change(
            action=Action.NOOP, amount=total, amount_before=total, reason=note, digest=record.digest, **common
        )

    merged, drifted = merge_drift(spec_diff, drift, body_norm)
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
    return change.action is Action.REPLACE and change.lifecycle.on_remove is not OnRemove.FORGET


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
            what = f"replace (the old invoice would be {change.lifecycle.on_remove}ed)"
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

"""The plan as data: ``Action``, ``FieldChange``, ``Change``, ``Plan`` and the reasons a change gives.

Plain frozen values that ``make_plan`` returns, ``render`` prints, ``planfile`` saves and ``apply``
carries out. No IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from invoicesync.models import Lifecycle, OnRemove
from invoicesync.money import MONEY_CONTEXT, CurrencyTotals, ManagedMoney, MoneyKey

REASON_DELETED_OUTSIDE = "deleted outside invoicesync"
REASON_REPLACE = "replace requested"
REASON_DRIFT = "changed outside invoicesync"
REASON_STATE_ONLY = "only the state changes; nothing is sent to Campfire"
REASON_ALREADY_VOIDED = "already voided in Campfire"
REASON_REPLACE_VOIDED = "replace requested; the old invoice is already voided in Campfire"


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
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # the spec's, or for a removal the one recorded
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
            if change.lifecycle.on_remove is not OnRemove.FORGET:
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
        for key in sorted(seen, key=money_key_order)
    )


def money_key_order(key: MoneyKey) -> tuple[bool, str, int]:
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

"""Planning: a pure function from desired invoices, state and (optionally) refreshed remote invoices to a Plan.

Owns ``Action``, ``FieldChange``, ``Change``, ``Plan``, ``make_plan`` and the plan's dict form (the
``--format json`` output and the saved-plan file are the same document). Never does IO, never reads
the clock, never prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any


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
    currency: str = "USD"
    amount: Decimal = Decimal(0)  # invoice total after the change (0 for removals)
    amount_before: Decimal = Decimal(0)  # invoice total before (0 for creates)
    reason: str | None = None  # why, when not obvious: "deleted outside invoicesync", "replace requested", "drift"
    blocked: str | None = None  # set when the change cannot be carried out ("invoice is paid in Campfire")


@dataclass(frozen=True)
class CurrencyTotals:
    """Money impact of a plan in one currency."""

    currency: str
    create: Decimal = Decimal(0)  # sum of totals of invoices created
    update: Decimal = Decimal(0)  # sum of (after - before) over updates
    remove: Decimal = Decimal(0)  # sum of totals of invoices voided/deleted (positive number)

    @property
    def net(self) -> Decimal:
        """Net change in billed money: created + updated - removed."""
        return self.create + self.update - self.remove


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
    elapsed_seconds: float = 0.0

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Outcomes that were attempted and failed, or skipped."""
        return tuple(o for o in self.outcomes if not o.ok)

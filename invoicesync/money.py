"""Money: the one decimal context, exact totals, and money as people read it.

Owns ``MONEY_CONTEXT`` (every sum and product of money is computed in it: wide enough for every
value the API's ranges allow, so nothing is ever rounded silently), the canonical spelling of a
decimal, what Campfire computes as a line's amount and an invoice's total, the per-currency totals
types of a plan and of what the state manages, and ``money_text``. Never a float; no IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

__all__ = [
    "MONEY_CONTEXT",
    "CurrencyTotals",
    "InvoiceMoney",
    "ManagedMoney",
    "MoneyKey",
    "canonical_decimal",
    "invoice_total",
    "line_amount",
    "money_key_order",
    "money_text",
]

# Wide enough for every value the API's ranges allow (quantity < 1e16 times rate < 1e13, with
# decimals): the default context's 28 digits would round a product silently.
MONEY_CONTEXT = Context(prec=80)


def canonical_decimal(value: Decimal) -> Decimal:
    """One spelling per value: ``50.00`` -> ``50``, ``0.30`` -> ``0.3``, ``-0`` -> ``0``."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1), context=MONEY_CONTEXT) + Decimal(0)
    return value.normalize(MONEY_CONTEXT)


def line_amount(line: Mapping[str, Any]) -> Decimal:
    """A wire line's amount: its ``amount``, else ``quantity`` x ``rate`` (quantity defaults to 1)."""
    if line.get("amount") is not None:
        return Decimal(line["amount"])
    rate = line.get("rate")
    if rate is None:
        return Decimal(0)
    quantity = line.get("quantity")
    return MONEY_CONTEXT.multiply(Decimal(1 if quantity is None else quantity), Decimal(rate))


def invoice_total(wire: Mapping[str, Any]) -> Decimal:
    """What Campfire computes as ``total_amount``: lines' amount plus tax, less the invoice discount."""
    total = Decimal(0)
    add = MONEY_CONTEXT.add
    for line in wire.get("lines", ()):
        total = add(total, add(line_amount(line), Decimal(line.get("tax") or 0)))
    return MONEY_CONTEXT.subtract(total, Decimal(wire.get("discount") or 0))


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


def money_key_order(key: MoneyKey) -> tuple[bool, str, int]:
    """Known currencies first, by code; then the unknown ones, by entity."""
    return (key[0] is None, key[0] or "", key[1] if key[1] is not None else -1)


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

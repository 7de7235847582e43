"""How a reviewer reads a plan: text (one line per change, field changes under it, a money summary per currency), markdown for a pull request, JSON; and money as text.

Decides nothing: every decision is already in the ``Plan``. Returns strings.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import simplejson

from invoicesync.errors import UsageError
from invoicesync.models import dumps_json
from invoicesync.money import canonical_decimal
from invoicesync.plan import (
    REASON_DRIFT,
    Action,
    Change,
    CurrencyTotals,
    FieldChange,
    ManagedMoney,
    MoneyKey,
    Plan,
    counts,
    money_text,
    plan_to_dict,
    plan_totals,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

PlanFormat = Literal["text", "markdown", "json"]
ResultFormat = Literal["text", "json"]

# --- money -----------------------------------------------------------------------------------------


def render_money(amount: Decimal, currency: str | None = None, *, signed: bool = False) -> str:
    """Money for people: ``USD 1,234.50``; at least two decimals, more when present (``USD 0.125``).

    A negative amount puts the sign before the currency (``-USD 5.00``); ``signed=True`` also marks
    positive amounts (``+USD 55.00``), zero never gets a sign. Never goes through float.
    """
    plain = money_text(abs(amount))
    if not amount.is_finite():
        return f"{currency} {amount}" if currency else str(amount)
    whole, _, decimals = plain.partition(".")
    grouped = f"{int(whole):,}" + (f".{decimals}" if decimals else "")
    text = f"{currency} {grouped}" if currency else grouped
    if amount < 0:
        return "-" + text
    if signed and amount > 0:
        return "+" + text
    return text


def _unknown_currency(entity: int | None) -> str:
    return f"entity {entity}'s currency" if entity is not None else "a currency not known"


def _money(amount: Decimal, key: MoneyKey, *, signed: bool = False) -> str:
    """Money in a plan's currency: ``EUR 55.00``, or ``55.00 in entity 55's currency`` when it is not known.

    An unknown currency is never shown as USD (nor as any code): a reviewer reads the figure with the
    note that says why the currency is not known.
    """
    currency, entity = key
    if currency:
        return render_money(amount, currency, signed=signed)
    return f"{render_money(amount, signed=signed)} in {_unknown_currency(entity)}"


def _currency_label(key: MoneyKey) -> str:
    """A currency as a table column shows it: ``EUR``, or ``entity 55's currency (not known)``."""
    return key[0] or f"{_unknown_currency(key[1])} (not known)"


def _moves_currency(change: Change) -> bool:
    return change.money_key_before != change.money_key


# --- styled lines ----------------------------------------------------------------------------------

# What rich drops from text it is given (bell, backspace, vertical tab, form feed, carriage return):
# a spec's text must not move the terminal's cursor.
_CONTROL_CODES = dict.fromkeys((7, 8, 11, 12, 13))


class _Line:
    """One line of text made of styled parts, as rich's ``Text`` holds it (control codes dropped).

    Plain text (no colour, no wrapping) is joined straight from the parts; rich is imported, and a
    ``Text`` made, only for a console that colours or wraps. rich is a tenth of the CLI's start-up,
    and building its ``Text`` per line dominated rendering a big plan.
    """

    __slots__ = ("_parts",)

    def __init__(self, text: str = "") -> None:
        self._parts: list[tuple[str, str]] = []
        self.append(text)

    def append(self, text: str, style: str = "") -> _Line:
        """Add ``text`` in ``style`` (none when empty); returns the line."""
        if text:
            self._parts.append((text.translate(_CONTROL_CODES), style))
        return self

    def append_text(self, other: _Line) -> _Line:
        """Add another line's parts, styles kept; returns the line."""
        self._parts.extend(other._parts)
        return self

    @property
    def plain(self) -> str:
        """The text without styles."""
        return "".join(text for text, _style in self._parts)

    def __bool__(self) -> bool:
        return any(text for text, _style in self._parts)

    def rstrip(self) -> None:
        """Drop white space from the end."""
        parts = self._parts
        while parts:
            text, style = parts[-1]
            stripped = text.rstrip()
            if stripped:
                parts[-1] = (stripped, style)
                return
            parts.pop()

    def to_rich(self) -> Text:
        """The line as rich's ``Text``."""
        from rich.text import Text

        text = Text()
        for part, style in self._parts:
            text.append(part, style=style)
        return text


# --- plans -----------------------------------------------------------------------------------------

ACTION_SYMBOLS: Mapping[Action, str] = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "-/+",
    Action.VOID: "-",
    Action.DELETE: "-",
    Action.FORGET: "x",
    Action.NOOP: " ",
}
ACTION_STYLES: Mapping[Action, str] = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.REPLACE: "magenta",
    Action.VOID: "red",
    Action.DELETE: "red",
    Action.FORGET: "blue",
    Action.NOOP: "",
}
_BLOCKED_SYMBOL = "!"
_BLOCKED_STYLE = "bold red"
_INDENT = "      "  # sub-lines (field changes, blocked reasons) sit under the address column
_GAP = "   "
# fields whose numbers are money, shown with two decimals at least ("50.00"); quantities stay as written
_MONEY_KEYS = frozenset({"rate", "amount", "tax", "discount", "discount_amount"})
# dates and times read best bare (as in "due_date: 2025-07-30 -> 2025-07-31"); every other string is quoted
_BARE_STRING = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$")


def render_plan(plan: Plan, fmt: PlanFormat = "text", *, color: bool = False, width: int | None = None) -> str:
    """The plan as a reviewer reads it: ``text`` (terminal), ``markdown`` (pull request) or ``json``.

    Text lists one line per change (no-ops are counted, not listed), field changes on their own
    lines, then ``Plan: ...   Billing: ...``. ``width`` wraps text lines at that many columns (the
    terminal's width); without it lines are never wrapped.
    """
    if fmt == "json":
        return dumps_json(plan_to_dict(plan), pretty=True)
    if fmt == "markdown":
        return _plan_markdown(plan)
    if fmt != "text":
        raise UsageError(f"Unknown plan format {fmt!r}: use text, markdown or json.")
    lines = _plan_lines(plan)
    if not color and width is None:
        # Plain text needs no console; rich's per-line rendering dominates big plans otherwise.
        return "".join(line.plain + "\n" for line in lines)
    from rich.text import Text

    console, out = _console(color, width)
    console.print(Text("\n").join(line.to_rich() for line in lines))
    return out.getvalue()


def _console(color: bool, width: int | None) -> tuple[Console, io.StringIO]:
    from rich.console import Console

    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=width or 200,
        soft_wrap=width is None,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
    )
    return console, out


def _listed(plan: Plan) -> list[Change]:
    return [c for c in plan.changes if c.action is not Action.NOOP]


def _plan_lines(plan: Plan) -> list[_Line]:
    listed = _listed(plan)
    n = counts(plan)
    lines: list[_Line] = []
    if not listed:
        lines.append(_Line(_no_changes_sentence(n["noop"])))
        notes = _notes(plan)
        if notes:
            lines.append(_Line(""))
            lines.extend(_Line(note) for note in notes)
        if plan.managed:
            lines.append(_Line(_managed_text(plan.managed)))
        return lines

    rows = [_Row.of(c) for c in listed]
    address_width = max(len(r.change.address) for r in rows)
    action_width = max(len(r.label) for r in rows)
    ident_width = max(len(r.ident) for r in rows)
    for row in rows:
        style = _BLOCKED_STYLE if row.change.blocked else ACTION_STYLES[row.change.action]
        symbol = _BLOCKED_SYMBOL if row.change.blocked else ACTION_SYMBOLS[row.change.action]
        line = _Line()
        line.append(symbol.rjust(3), style=style)
        line.append(" ")
        line.append(row.change.address.ljust(address_width), style="bold")
        line.append(_GAP)
        line.append(row.label.ljust(action_width), style=style)
        line.append(_GAP)
        line.append(row.ident.ljust(ident_width) if row.detail else row.ident)
        if row.detail:
            line.append(_GAP)
            line.append_text(row.detail)
        line.rstrip()
        lines.append(line)
        lines.extend(row.sub_lines)

    lines.append(_Line(""))
    for note in _notes(plan):
        lines.append(_Line(note))
    summary = _Line(_plan_sentence(n, plan))
    summary.append(_GAP)
    summary.append(f"Billing: {_billing_text(plan_totals(plan))}", style="bold")
    lines.append(summary)
    if plan.managed:
        lines.append(_Line(_managed_text(plan.managed)))
    return lines


def _managed_text(managed: Sequence[ManagedMoney]) -> str:
    """``Managed now: USD 110.00 invoiced, 20.00 paid, 90.00 due (2 invoices)``: the state's money before the plan."""
    parts = []
    for m in managed:
        figures = f"{render_money(m.invoiced)} invoiced, {render_money(m.paid)} paid, {render_money(m.due)} due"
        if m.currency:
            figures = f"{m.currency} {figures}"
        else:
            figures += f" in {_unknown_currency(m.entity)}"
        parts.append(f"{figures} ({_plural(m.invoices, 'invoice')})")
    return "Managed now: " + "; ".join(parts)


@dataclass
class _Row:
    """One listed change, laid out: the action label, the id column, the detail and the lines under it."""

    change: Change
    label: str
    ident: str
    detail: _Line
    sub_lines: list[_Line]

    @classmethod
    def of(cls, change: Change) -> _Row:
        action = change.action
        body = change.body or {}
        label = action.value
        if action is Action.CREATE:
            ident = f"client {body['client']}" if body.get("client") is not None else ""
        else:
            ident = f"id {change.invoice_id}" if change.invoice_id is not None else ""

        detail = _Line()
        fields = list(change.field_changes)
        inline: FieldChange | None = None
        if action is Action.CREATE:
            dates = _dates_text(body)
            if dates:
                detail.append(dates + _GAP)
            detail.append(_money(change.amount, change.money_key))
        elif action is Action.UPDATE:
            if change.amount != change.amount_before or _moves_currency(change):
                detail.append(_money_move(change))
            elif len(fields) == 1:
                inline = fields.pop()
                detail.append_text(_field_text(inline))
        elif action is Action.REPLACE:
            verb = str(change.lifecycle.on_remove)
            detail.append(f"{verb}, then create anew{_GAP}")
            same = change.amount == change.amount_before and not _moves_currency(change)
            detail.append(_money(change.amount, change.money_key) if same else _money_move(change))
        elif action in (Action.VOID, Action.DELETE):
            detail.append(_money(change.amount_before, change.money_key_before))
        elif action is Action.FORGET and change.reason is None:
            detail.append("stays in Campfire")

        reason = _reason_of(change)
        if reason and reason != REASON_DRIFT:
            if detail:
                detail.append(_GAP)
            detail.append(f"({reason})", style="italic")

        sub_lines = [_Line(_INDENT).append_text(_field_text(f)) for f in fields]
        if change.blocked:
            sub_lines.append(_Line(_INDENT).append(f"blocked: {change.blocked}", style=_BLOCKED_STYLE))
        return cls(change, label, ident, detail, sub_lines)


def _reason_of(change: Change) -> str | None:
    if change.reason is None and change.action in (Action.VOID, Action.DELETE, Action.FORGET):
        return "spec removed"
    return change.reason


def _dates_text(body: Mapping[str, Any]) -> str:
    invoice_date = body.get("invoice_date")
    due_date = body.get("due_date")
    if invoice_date and due_date:
        return f"{invoice_date} -> due {due_date}"
    if due_date:
        return f"due {due_date}"
    return str(invoice_date or "")


def _money_move(change: Change) -> str:
    before = _money(change.amount_before, change.money_key_before)
    return f"{before} -> {_money(change.amount, change.money_key)}"


def _field_parts(change: FieldChange) -> tuple[str, str, str]:
    """``(path, how, value text)``: how is ``"added"``/``"removed"`` for a whole line, else ``""``."""
    key = change.path.rsplit(".", 1)[-1].split("[", 1)[0]
    if change.before is None and isinstance(change.after, Mapping):
        return change.path, "added", _item_text(key, change.after)
    if change.after is None and isinstance(change.before, Mapping):
        return change.path, "removed", _item_text(key, change.before)
    return change.path, "", f"{_value_text(key, change.before)} -> {_value_text(key, change.after)}"


def _field_text(change: FieldChange) -> _Line:
    path, how, value = _field_parts(change)
    text = _Line(f"{path}: ")
    if how:
        text.append(how + " ", style="green" if how == "added" else "red")
    text.append(value)
    if change.drift:
        text.append(f"   ({REASON_DRIFT})", style="yellow")
    return text


def _item_text(key: str, item: Mapping[str, Any]) -> str:
    """A whole invoice line as a reviewer reads it: ``product 2545 "Support" 3 x 0.10 = 0.30, tax 0.05``."""
    if key != "lines" or "rate" not in item and "amount" not in item:
        return _value_text(key, item)
    parts: list[str] = []
    if item.get("product") is not None:
        parts.append(f"product {item['product']}")
    if item.get("description"):
        parts.append(_value_text("description", str(item["description"])))
    money = ""
    if item.get("rate") is not None:
        quantity = item.get("quantity")
        money = f"{_value_text('quantity', 1 if quantity is None else quantity)} x {_value_text('rate', item['rate'])}"
    if item.get("amount") is not None:
        money += (" = " if money else "") + _value_text("amount", item["amount"])
    if money:
        parts.append(money)
    shown = {"product", "description", "quantity", "rate", "amount"}
    extras = [f"{k} {_value_text(str(k), v)}" for k, v in item.items() if k not in shown and v is not None]
    return " ".join(parts) + ("" if not extras else ", " + ", ".join(extras))


def _value_text(key: str, value: Any) -> str:
    """A field value as the reviewer reads it: money with two decimals, strings quoted except dates."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
        return money_text(number) if key in _MONEY_KEYS else f"{canonical_decimal(number):f}"
    if isinstance(value, str):
        return value if _BARE_STRING.match(value) else simplejson.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value_text(str(k), v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(key, v) for v in value) + "]"
    return str(value)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _no_changes_sentence(noop: int) -> str:
    if noop == 0:
        return "No changes. There are no invoices in the specs or the state."
    verb = "matches" if noop == 1 else "match"
    return f"No changes. {_plural(noop, 'invoice')} {verb} the specs."


def _plan_sentence(n: Mapping[str, int], plan: Plan) -> str:
    parts = [f"{n['create']} to create", f"{n['update']} to update"]
    if n["replace"]:
        parts.append(f"{n['replace']} to replace")
    remove = f"{n['remove']} to remove"
    if n["remove"]:
        kinds = [
            f"{sum(1 for c in plan.changes if c.action is a and not c.blocked)} {a.value}"
            for a in (Action.VOID, Action.DELETE, Action.FORGET)
        ]
        remove += " (" + ", ".join(k for k in kinds if not k.startswith("0 ")) + ")"
    parts.append(remove)
    if n["noop"]:
        parts.append(f"{n['noop']} unchanged")
    if n["blocked"]:
        parts.append(f"{n['blocked']} blocked")
    return "Plan: " + ", ".join(parts) + "."


def _billing_text(totals: Sequence[CurrencyTotals]) -> str:
    parts: list[str] = []
    for t in totals:
        components = [
            (t.create, "created"),
            (t.update, "updated"),
            (-t.remove, "removed"),
        ]
        moving = [(amount, what) for amount, what in components if amount]
        if not moving:
            continue
        text = _money(t.net, (t.currency, t.entity), signed=True)
        if len(moving) > 1:
            text += " (" + ", ".join(f"{render_money(a, signed=True)} {what}" for a, what in moving) + ")"
        parts.append(text)
    return ", ".join(parts) if parts else "no change"


def _notes(plan: Plan) -> list[str]:
    notes = [
        f"Note: {c.address} (id {c.invoice_id}) is unchanged: {c.reason}."
        for c in plan.changes
        if c.action is Action.NOOP and c.reason
    ]
    if plan.targets:
        notes.append(
            "Note: only addresses matching --target "
            + ", ".join(plan.targets)
            + " were planned; other changes may be pending."
        )
    if not plan.refreshed:
        notes.append("Note: Campfire was not read (no refresh); changes made outside invoicesync are not shown.")
    keys = {key for c in _listed(plan) for key in (c.money_key, c.money_key_before)}
    keys |= {(m.currency, m.entity) for m in plan.managed}
    unknown = sorted(key[1] for key in keys if key[0] is None and key[1] is not None)
    if unknown:
        if len(unknown) == 1:
            which = f"entity {unknown[0]}'s currency is"
        else:
            which = "the currencies of entities " + ", ".join(map(str, unknown[:-1])) + f" and {unknown[-1]} are"
        notes.append(
            f"Note: {which} not known: the specs name none, and neither Campfire's entity list nor its invoices "
            "said which. Those amounts read \"in entity N's currency\" and are totalled apart, never as USD."
        )
    if (None, None) in keys:
        notes.append("Note: some invoices name neither a currency nor an entity; their amounts are totalled apart.")
    return notes


# --- markdown --------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe inside a markdown table cell: no HTML tags, no cell breaks, no line breaks."""
    return text.replace("<", "&lt;").replace("|", "\\|").replace("\n", "<br>")


def _md_code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _plan_markdown(plan: Plan) -> str:
    n = counts(plan)
    out: list[str] = [f"### invoicesync plan for {_md_code(plan.environment)}", ""]
    listed = _listed(plan)
    if not listed:
        out.append(_no_changes_sentence(n["noop"]))
    else:
        out += [
            "| Create | Update | Replace | Remove | Unchanged | Blocked |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {n['create']} | {n['update']} | {n['replace']} | {n['remove']} | {n['noop']} | {n['blocked']} |",
            "",
        ]
        totals = plan_totals(plan)
        if totals:
            out += [
                "| Currency | Created | Updated | Removed | Net |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            for t in totals:
                out.append(
                    f"| {_md(_currency_label((t.currency, t.entity)))} | {render_money(t.create)} "
                    f"| {render_money(t.update, signed=True)} | {render_money(t.remove)} "
                    f"| **{render_money(t.net, signed=True)}** |"
                )
            out.append("")
        out += [
            "| | Address | Action | Invoice | Amount | Changes |",
            "| --- | --- | --- | --- | ---: | --- |",
        ]
        for change in listed:
            out.append(_markdown_row(change))
    if plan.managed:
        out += [
            "",
            "Managed now (before this plan):",
            "",
            "| Currency | Invoices | Invoiced | Paid | Due |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        out += [
            f"| {_md(_currency_label((m.currency, m.entity)))} | {m.invoices} | {render_money(m.invoiced)} "
            f"| {render_money(m.paid)} | {render_money(m.due)} |"
            for m in plan.managed
        ]
    notes = _notes(plan)
    if notes:
        out.append("")
        out += [f"- {_md(note.removeprefix('Note: '))}" for note in notes]
    out += [
        "",
        f"<sub>State serial {plan.serial}, lineage {_md_code(plan.lineage)}, specs {_md_code(plan.specs_digest[:19])}</sub>",
    ]
    return "\n".join(out) + "\n"


def _markdown_row(change: Change) -> str:
    action = change.action
    body = change.body or {}
    symbol = _BLOCKED_SYMBOL if change.blocked else ACTION_SYMBOLS[action]
    if action is Action.CREATE:
        invoice = f"client {body['client']}" if body.get("client") is not None else ""
        amount = _money(change.amount, change.money_key)
    else:
        invoice = str(change.invoice_id) if change.invoice_id is not None else ""
        if action in (Action.VOID, Action.DELETE, Action.FORGET):
            amount = _money(change.amount_before, change.money_key_before)
        elif change.amount != change.amount_before or _moves_currency(change):
            amount = _money_move(change)
        else:
            amount = _money(change.amount, change.money_key)
    details: list[str] = []
    if change.blocked:
        details.append(f"**blocked**: {_md(change.blocked)}")
    if action is Action.CREATE:
        dates = _dates_text(body)
        if dates:
            details.append(_md(dates))
    elif action is Action.REPLACE:
        details.append(_md(f"{change.lifecycle.on_remove}, then create anew"))
    elif action is Action.FORGET and change.reason is None:
        details.append("stays in Campfire")
    reason = _reason_of(change)
    if reason and reason != REASON_DRIFT:
        details.append(f"_{_md(reason)}_")
    for f in change.field_changes:
        path, how, value = _field_parts(f)
        drift = f" _({REASON_DRIFT})_" if f.drift else ""
        details.append(f"{_md_code(path)}: {how + ' ' if how else ''}{_md(value)}{drift}")
    return (
        f"| {_md_code(symbol)} | {_md_code(change.address)} | {action.value} | {_md(invoice)} "
        f"| {_md(amount)} | {'<br>'.join(details)} |"
    )

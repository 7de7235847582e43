"""Rendering: plans, apply results and the state's contents as terminal text, markdown or JSON.

Owns how a reviewer reads a plan (one line per change, field changes under it, a money summary per
currency), the pull-request markdown, the JSON documents (``plan_to_dict`` for plans) and money
formatting. Decides nothing: every decision is already in the ``Plan``/``ApplyResult``/``State`` it
is given. Returns strings; printing them is the CLI's job.

Colour comes from rich, written to a ``StringIO``; with ``color=False`` the text holds no escape codes.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import simplejson
from rich.console import Console
from rich.text import Text

from invoicesync.errors import UsageError
from invoicesync.models import dumps_json
from invoicesync.money import canonical_decimal
from invoicesync.plan import (
    REASON_DRIFT,
    Action,
    ApplyResult,
    Change,
    CurrencyTotals,
    FieldChange,
    ManagedMoney,
    MoneyKey,
    Outcome,
    Plan,
    counts,
    invoice_money,
    managed_money,
    money_text,
    plan_to_dict,
    plan_totals,
)
from invoicesync.state import InvoiceRecord, State

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


# --- plans -----------------------------------------------------------------------------------------

_SYMBOLS: Mapping[Action, str] = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "-/+",
    Action.VOID: "-",
    Action.DELETE: "-",
    Action.FORGET: "x",
    Action.NOOP: " ",
}
_STYLES: Mapping[Action, str] = {
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
    console, out = _console(color, width)
    console.print(Text("\n").join(lines))
    return out.getvalue()


def _console(color: bool, width: int | None) -> tuple[Console, io.StringIO]:
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


def _plan_lines(plan: Plan) -> list[Text]:
    listed = _listed(plan)
    n = counts(plan)
    lines: list[Text] = []
    if not listed:
        lines.append(Text(_no_changes_sentence(n["noop"])))
        notes = _notes(plan)
        if notes:
            lines.append(Text(""))
            lines.extend(Text(note) for note in notes)
        if plan.managed:
            lines.append(Text(_managed_text(plan.managed)))
        return lines

    rows = [_Row.of(c) for c in listed]
    address_width = max(len(r.change.address) for r in rows)
    action_width = max(len(r.label) for r in rows)
    ident_width = max(len(r.ident) for r in rows)
    for row in rows:
        style = _BLOCKED_STYLE if row.change.blocked else _STYLES[row.change.action]
        symbol = _BLOCKED_SYMBOL if row.change.blocked else _SYMBOLS[row.change.action]
        line = Text()
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

    lines.append(Text(""))
    for note in _notes(plan):
        lines.append(Text(note))
    summary = Text(_plan_sentence(n, plan))
    summary.append(_GAP)
    summary.append(f"Billing: {_billing_text(plan_totals(plan))}", style="bold")
    lines.append(summary)
    if plan.managed:
        lines.append(Text(_managed_text(plan.managed)))
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
    detail: Text
    sub_lines: list[Text]

    @classmethod
    def of(cls, change: Change) -> _Row:
        action = change.action
        body = change.body or {}
        label = action.value
        if action is Action.CREATE:
            ident = f"client {body['client']}" if body.get("client") is not None else ""
        else:
            ident = f"id {change.invoice_id}" if change.invoice_id is not None else ""

        detail = Text()
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
            verb = str(change.lifecycle.get("on_remove", "void"))
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

        sub_lines = [Text(_INDENT).append_text(_field_text(f)) for f in fields]
        if change.blocked:
            sub_lines.append(Text(_INDENT).append(f"blocked: {change.blocked}", style=_BLOCKED_STYLE))
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


def _field_text(change: FieldChange) -> Text:
    path, how, value = _field_parts(change)
    text = Text(f"{path}: ")
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
    symbol = _BLOCKED_SYMBOL if change.blocked else _SYMBOLS[action]
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
        details.append(_md(f"{change.lifecycle.get('on_remove', 'void')}, then create anew"))
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


# --- apply results ---------------------------------------------------------------------------------

_DONE: Mapping[Action, str] = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.REPLACE: "replaced",
    Action.VOID: "voided",
    Action.DELETE: "deleted",
    Action.FORGET: "forgotten",
    Action.NOOP: "unchanged",
}


def render_apply_result(
    result: ApplyResult, fmt: ResultFormat = "text", *, color: bool = False, only_failures: bool = False
) -> str:
    """What an apply did: one line per attempted or skipped change, then a one-line verdict.

    ``only_failures`` lists just the changes that failed (when each outcome was already shown as it
    happened: failures are repeated at the end, where a long CI log is read first).

    ``json`` gives ``{"format_version", "kind": "invoicesync-apply-result", "interrupted",
    "elapsed_seconds", "summary": {"succeeded", "failed", "skipped"}, "outcomes": [...]}``.
    """
    outcomes = [o for o in result.outcomes if o.action is not Action.NOOP]
    succeeded = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok and not o.skipped]
    skipped = [o for o in outcomes if not o.ok and o.skipped]
    if fmt == "json":
        doc = {
            "format_version": 1,
            "kind": "invoicesync-apply-result",
            "interrupted": result.interrupted,
            "elapsed_seconds": round(result.elapsed_seconds, 3),
            "summary": {"succeeded": len(succeeded), "failed": len(failed), "skipped": len(skipped)},
            "outcomes": [
                {
                    "address": o.address,
                    "action": o.action.value,
                    "ok": o.ok,
                    "skipped": o.skipped,
                    "invoice_id": o.invoice_id,
                    "message": o.message,
                }
                for o in outcomes
            ],
        }
        return dumps_json(doc, pretty=True)
    if fmt != "text":
        raise UsageError(f"Unknown result format {fmt!r}: use text or json.")

    console, out = _console(color, None)
    listed = [o for o in outcomes if not o.ok and not o.skipped] if only_failures else outcomes
    if listed and only_failures:
        console.print(Text(""))
        console.print(Text("Failed:", style="bold red"))
    if listed:
        address_width = max(len(o.address) for o in listed)
        action_width = max(len(o.action.value) for o in listed)
        for o in listed:
            for line in _outcome_lines(o, address_width, action_width):
                console.print(line)
        console.print(Text(""))

    elapsed = f"{result.elapsed_seconds:.1f} s"
    done = _done_counts(succeeded)
    if result.interrupted:
        verdict = Text(f"Apply interrupted after {elapsed}: {done}", style="bold yellow")
        verdict.append(_failures_text(failed, skipped))
        verdict.append(". Everything done so far is recorded in the state; run apply again to finish.")
    elif failed or skipped:
        verdict = Text(f"Apply finished with errors in {elapsed}: {done}", style="bold red")
        verdict.append(_failures_text(failed, skipped))
        verdict.append(". Every success is recorded in the state; fix the errors above and apply again.")
    else:
        verdict = Text(f"Apply complete in {elapsed}: {done}.", style="bold green")
    console.print(verdict)
    return out.getvalue()


def render_outcome(outcome: Outcome, *, color: bool = False, address_width: int = 0, action_width: int = 0) -> str:
    """One finished change as apply reports it while running (``  + acme-2025-07   create   ok   id 145055``).

    The widths align the columns of successive lines (pass the longest address and action of the plan).
    """
    console, out = _console(color, None)
    widths = (max(address_width, len(outcome.address)), max(action_width, len(outcome.action.value)))
    for line in _outcome_lines(outcome, *widths):
        console.print(line)
    return out.getvalue()


def _outcome_lines(o: Outcome, address_width: int, action_width: int) -> list[Text]:
    status, style = ("ok", "green") if o.ok else (("skipped", "dim") if o.skipped else ("failed", "bold red"))
    symbol = _SYMBOLS[o.action] if o.ok else ("·" if o.skipped else _BLOCKED_SYMBOL)
    line = Text()
    line.append(symbol.rjust(3), style=_STYLES[o.action] if o.ok else style)
    line.append(" ")
    line.append(o.address.ljust(address_width), style="bold")
    line.append(_GAP + o.action.value.ljust(action_width) + _GAP)
    line.append(status.ljust(7), style=style)
    message_lines = (o.message or "").splitlines()
    extra = [f"id {o.invoice_id}"] if o.invoice_id is not None else []
    if message_lines:
        extra.append(message_lines[0])
    if extra:
        line.append(_GAP + "   ".join(extra))
    line.rstrip()
    return [line] + [Text(_INDENT + more) for more in message_lines[1:]]


def _done_counts(succeeded: Iterable[Any]) -> str:
    by_action: dict[Action, int] = {}
    for o in succeeded:
        by_action[o.action] = by_action.get(o.action, 0) + 1
    parts = [f"{by_action[a]} {_DONE[a]}" for a in Action if a in by_action]
    return ", ".join(parts) if parts else "nothing done"


def _failures_text(failed: Sequence[Any], skipped: Sequence[Any]) -> str:
    parts = []
    if failed:
        parts.append(f"{len(failed)} failed")
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    return (", " + ", ".join(parts)) if parts else ""


# --- show ------------------------------------------------------------------------------------------


_STATUS_STYLES = {"paid": "green", "partial": "yellow", "voided": "dim", "uncollectible": "red"}


def render_show(
    state: State, address: str | None = None, fmt: ResultFormat = "text", *, color: bool = False
) -> str:
    """What the state holds: every invoice with its money, and invoiced/paid/due per currency.

    Money comes from the remote snapshot the state keeps (as of the last apply or refresh), else
    from the body last applied; voided invoices are listed but not counted. With ``address``, that
    one record in full; an address the state does not hold raises ``UsageError``.
    """
    if address is not None:
        record = state.invoices.get(address)
        if record is None:
            close = difflib.get_close_matches(address, list(state.invoices), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UsageError(
                f"The state of environment {state.environment!r} holds no invoice at address {address!r}.{hint}"
            )
        return _show_one(state, address, record, fmt, color)
    if fmt == "json":
        return dumps_json(_show_doc(state), pretty=True)
    if fmt != "text":
        raise UsageError(f"Unknown format {fmt!r}: use text or json.")

    console, out = _console(color, None)
    if not state.invoices:
        console.print(Text(f"The state of environment {state.environment!r} holds no invoices."))
        return out.getvalue()
    rows = [(a, r, invoice_money(r)) for a, r in sorted(state.invoices.items())]
    header = ("Address", "Id", "Status", "Currency", "Invoiced", "Paid", "Due")
    cells = [
        (a, str(r.id), m.status, m.currency, render_money(m.invoiced), render_money(m.paid), render_money(m.due))
        for a, r, m in rows
    ]
    _print_table(console, header, cells, right=(4, 5, 6), styles={2: _STATUS_STYLES})
    console.print(Text(""))
    managed = managed_money(state)
    voided = sum(1 for _, _, m in rows if m.voided)
    count = _plural(len(rows), "invoice")
    tail = f"; {voided} voided or deleted {'is' if voided == 1 else 'are'} not counted in the totals" if voided else ""
    console.print(Text(f"{count} in the state of {state.environment!r} (serial {state.serial}){tail}."))
    if managed:
        console.print(Text(""))
        _print_table(
            console,
            ("Currency", "Invoiced", "Paid", "Due"),
            [
                (_currency_label((m.currency, m.entity)), render_money(m.invoiced), render_money(m.paid), render_money(m.due))
                for m in managed
            ],
            right=(1, 2, 3),
        )
    return out.getvalue()


def _print_table(
    console: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    styles: Mapping[int, Mapping[str, str]] | None = None,
) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str], bold: bool = False) -> Text:
        text = Text()
        for i, cell in enumerate(row):
            if i:
                text.append(_GAP)
            padded = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            style = "bold" if bold else (styles or {}).get(i, {}).get(cell, "")
            text.append(padded, style=style)
        text.rstrip()
        return text

    console.print(line(header, bold=True))
    for row in rows:
        console.print(line(row))


def _show_doc(state: State) -> dict[str, Any]:
    rows = [(a, r, invoice_money(r)) for a, r in sorted(state.invoices.items())]
    return {
        "format_version": 1,
        "kind": "invoicesync-show",
        "environment": state.environment,
        "lineage": state.lineage,
        "serial": state.serial,
        "invoices": [
            {
                "address": a,
                "id": r.id,
                "status": m.status,
                "currency": m.currency,
                "invoiced": money_text(m.invoiced),
                "paid": money_text(m.paid),
                "due": money_text(m.due),
            }
            for a, r, m in rows
        ],
        "totals": [
            {"currency": m.currency, "invoiced": money_text(m.invoiced), "paid": money_text(m.paid), "due": money_text(m.due)}
            for m in managed_money(state)
        ],
    }


def _show_one(state: State, address: str, record: InvoiceRecord, fmt: ResultFormat, color: bool) -> str:
    money = invoice_money(record)
    if fmt == "json":
        return dumps_json(
            {
                "format_version": 1,
                "kind": "invoicesync-show",
                "environment": state.environment,
                "address": address,
                "status": money.status,
                "currency": money.currency,
                "invoiced": money_text(money.invoiced),
                "paid": money_text(money.paid),
                "due": money_text(money.due),
                "record": record.model_dump(mode="python"),
            },
            pretty=True,
        )
    if fmt != "text":
        raise UsageError(f"Unknown format {fmt!r}: use text or json.")
    snap = record.remote
    fields: list[tuple[str, str]] = [
        ("id", str(record.id)),
        ("status", money.status if snap is not None else "unknown (never read back from Campfire)"),
        ("invoice number", str((snap.invoice_number if snap else None) or record.body.get("invoice_number") or "-")),
        ("invoiced", render_money(money.invoiced, money.currency)),
        ("paid", render_money(money.paid, money.currency)),
        ("due", render_money(money.due, money.currency)),
    ]
    if snap is not None and snap.journal_entry is not None:
        fields.append(("journal entry", str(snap.journal_entry)))
    if snap is not None and snap.voided_date:
        fields.append(("voided on", snap.voided_date))
    fields += [
        (
            "lifecycle",
            f"prevent_destroy: {'true' if record.lifecycle.prevent_destroy else 'false'}, "
            f"on_remove: {record.lifecycle.on_remove}",
        ),
        ("digest", record.digest),
        ("created", record.created_at),
        ("updated", record.updated_at),
    ]
    console, out = _console(color, None)
    console.print(Text(address, style="bold"))
    label_width = max(len(k) for k, _ in fields)
    for key, value in fields:
        style = _STATUS_STYLES.get(value, "") if key == "status" else ""
        console.print(Text("  " + key.ljust(label_width) + _GAP).append(value, style=style))
    console.print(Text("  body last applied:"))
    for body_line in dumps_json(record.body, pretty=True).splitlines():
        console.print(Text("    " + body_line))
    return out.getvalue()

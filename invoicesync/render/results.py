"""How an apply's results and the state's contents read: a line per outcome, a summary, ``show``'s table, JSON.

Decides nothing: every decision is already in the ``ApplyResult`` or ``State``. Returns strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from invoicesync.errors import NotFoundError, UsageError, did_you_mean
from invoicesync.models import dumps_json
from invoicesync.plan import (
    Action,
    ApplyResult,
    address_order,
    Outcome,
    invoice_money,
    managed_money,
    money_text,
)
from invoicesync.render.plan import (
    _BLOCKED_SYMBOL,
    _GAP,
    _INDENT,
    ACTION_STYLES,
    ACTION_SYMBOLS,
    ResultFormat,
    _console,
    _currency_label,
    _plural,
    render_money,
)
from invoicesync.state import InvoiceRecord, State

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

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

    from rich.text import Text  # only text needs rich (a tenth of the start-up)

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
    from rich.text import Text

    status, style = ("ok", "green") if o.ok else (("skipped", "dim") if o.skipped else ("failed", "bold red"))
    symbol = ACTION_SYMBOLS[o.action] if o.ok else ("·" if o.skipped else _BLOCKED_SYMBOL)
    line = Text()
    line.append(symbol.rjust(3), style=ACTION_STYLES[o.action] if o.ok else style)
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
            raise NotFoundError(
                f"The state of environment {state.environment!r} holds no invoice at address {address!r}."
                + did_you_mean(address, state.invoices, several=True)
            )
        return _show_one(state, address, record, fmt, color)
    if fmt == "json":
        return dumps_json(_show_doc(state), pretty=True)
    if fmt != "text":
        raise UsageError(f"Unknown format {fmt!r}: use text or json.")

    from rich.text import Text

    console, out = _console(color, None)
    if not state.invoices:
        console.print(Text(f"The state of environment {state.environment!r} holds no invoices."))
        return out.getvalue()
    rows = [(a, r, invoice_money(r)) for a, r in sorted(state.invoices.items(), key=lambda item: address_order(item[0]))]
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
    from rich.text import Text

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
    rows = [(a, r, invoice_money(r)) for a, r in sorted(state.invoices.items(), key=lambda item: address_order(item[0]))]
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
    from rich.text import Text

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

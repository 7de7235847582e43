"""Rendering plans, apply results and the state: whole-text snapshots, no colour unless asked."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from invoicesync.errors import InvoiceSyncError
from invoicesync.models import RemoteSnapshot, dumps_json, loads_json
from invoicesync.plan import Action, ApplyResult, Outcome, Plan, make_plan, plan_to_dict
from invoicesync.render import render_apply_result, render_money, render_outcome, render_plan, render_show
from invoicesync.state import LifecycleRecord, State
from tests.invoices import desired, line, new_state, remote

ANSI = re.compile(r"\x1b\[")
# Entity 54 bills in USD (as Campfire's entity list says; the bodies of these tests name no currency).
USD_ENTITY = {54: "USD"}


def review_plan() -> Plan:
    """One change of every kind a reviewer meets, in two currencies."""
    state = new_state(
        (desired("acme-2025-06"), 145054),
        (desired("beta-2025-06"), 145060),
        (desired("drifted-2025-06"), 145061),
        (desired("gamma-2025-05"), 145050),
        (desired("old-2025-01"), 145001),
        (desired("old-2025-02", currency="EUR"), 145002, LifecycleRecord(on_remove="delete")),
        (desired("old-2025-03"), 145003, LifecycleRecord(on_remove="forget")),
        (desired("paid-2025-04"), 145040),
        (desired("same-2025-06"), 145070),
        (desired("voided-2025-03"), 145030),
    )
    live = {
        "drifted-2025-06": remote(state, "drifted-2025-06", due_date="2025-08-15"),
        "paid-2025-04": remote(state, "paid-2025-04", "paid"),
        "voided-2025-03": remote(state, "voided-2025-03", "voided"),
    }
    specs = [
        desired("acme-2025-06", due_date="2025-07-30"),
        desired("acme-2025-07"),
        desired("beta-2025-06", lines=[line("60")], message_on_invoice="Thank you for your business"),
        desired("drifted-2025-06"),
        desired("gamma-2025-05"),
        desired("hours-2025-07", lines=[line("0.1", quantity="3", tax=None, description="Support hours")]),
        desired("paid-2025-04", due_date="2025-09-01"),
        desired("same-2025-06"),
        desired("voided-2025-03"),
    ]
    return make_plan(specs, state, live, replace=["gamma-*"], refreshed=True, entity_currencies=USD_ENTITY)


# --- plan text -------------------------------------------------------------------------------------

REVIEW_TEXT = """\
  ~ acme-2025-06      update    id 145054      due_date: 2025-07-31 -> 2025-07-30
  + acme-2025-07      create    client 33973   2025-07-01 -> due 2025-07-31   USD 55.00
  ~ beta-2025-06      update    id 145060      USD 55.00 -> USD 65.00
      lines[0].amount: 50.00 -> 60.00
      lines[0].rate: 50.00 -> 60.00
      message_on_invoice: (unset) -> "Thank you for your business"
  ~ drifted-2025-06   update    id 145061      due_date: 2025-08-15 -> 2025-07-31   (changed outside invoicesync)
-/+ gamma-2025-05     replace   id 145050      void, then create anew   USD 55.00   (replace requested)
  + hours-2025-07     create    client 33973   2025-07-01 -> due 2025-07-31   USD 0.30
  - old-2025-01       void      id 145001      USD 55.00   (spec removed)
  - old-2025-02       delete    id 145002      EUR 55.00   (spec removed)
  x old-2025-03       forget    id 145003      stays in Campfire   (spec removed)
  ! paid-2025-04      update    id 145040      due_date: 2025-07-31 -> 2025-09-01
      blocked: invoice 145040 is paid in Campfire; it can no longer be changed

Note: voided-2025-03 (id 145030) is unchanged: voided in Campfire.
Plan: 2 to create, 3 to update, 1 to replace, 3 to remove (1 void, 1 delete, 1 forget), 2 unchanged, 1 blocked.\
   Billing: -EUR 55.00, +USD 10.30 (+110.30 created, +10.00 updated, -110.00 removed)
Managed now: EUR 55.00 invoiced, 0.00 paid, 55.00 due (1 invoice); USD 440.00 invoiced, 55.00 paid, 385.00 due (8 invoices)
"""


def test_plan_text_shows_every_kind_of_change_for_review() -> None:
    assert render_plan(review_plan()) == REVIEW_TEXT


def test_plan_text_matches_the_design_example() -> None:
    state = new_state((desired("acme-2025-06", due_date="2025-07-30"), 145054))
    specs = [desired("acme-2025-06", due_date="2025-07-31"), desired("acme-2025-07")]
    plan = make_plan(specs, state, refreshed=True, entity_currencies=USD_ENTITY)
    assert render_plan(plan) == (
        "  ~ acme-2025-06   update   id 145054      due_date: 2025-07-30 -> 2025-07-31\n"
        "  + acme-2025-07   create   client 33973   2025-07-01 -> due 2025-07-31   USD 55.00\n"
        "\n"
        "Plan: 1 to create, 1 to update, 0 to remove.   Billing: +USD 55.00\n"
        "Managed now: USD 55.00 invoiced, 0.00 paid, 55.00 due (1 invoice)\n"
    )


def test_plan_without_changes_says_how_many_invoices_match() -> None:
    specs = [desired("a"), desired("b"), desired("c")]
    state = new_state(*((s, i) for i, s in enumerate(specs, 1)))
    assert render_plan(make_plan(specs, state, refreshed=True, entity_currencies=USD_ENTITY)) == (
        "No changes. 3 invoices match the specs.\n"
        "Managed now: USD 165.00 invoiced, 0.00 paid, 165.00 due (3 invoices)\n"
    )
    one = new_state((specs[0], 1))
    assert render_plan(make_plan(specs[:1], one, refreshed=True, entity_currencies=USD_ENTITY)) == (
        "No changes. 1 invoice matches the specs.\n"
        "Managed now: USD 55.00 invoiced, 0.00 paid, 55.00 due (1 invoice)\n"
    )


def test_plan_text_says_when_campfire_was_not_read_and_what_was_targeted() -> None:
    specs = [desired("acme-2025-07"), desired("beta")]
    plan = make_plan(specs, new_state(), targets=["acme-*"], entity_currencies=USD_ENTITY)
    assert render_plan(plan) == (
        "  + acme-2025-07   create   client 33973   2025-07-01 -> due 2025-07-31   USD 55.00\n"
        "\n"
        "Note: only addresses matching --target acme-* were planned; other changes may be pending.\n"
        "Note: Campfire was not read (no refresh); changes made outside invoicesync are not shown.\n"
        "Plan: 1 to create, 0 to update, 0 to remove.   Billing: +USD 55.00\n"
    )


def test_plan_text_shows_added_lines_and_a_billing_line_without_money_moving() -> None:
    state = new_state((desired("acme", lines=[line(), line("10", tax=None, description="Setup")]), 1), (desired("b"), 2))
    specs = [desired("acme", lines=[line(), line("10", tax=None, description="Setup, once")]), desired("b", due_date="2025-08-01")]
    assert render_plan(make_plan(specs, state, refreshed=True, entity_currencies=USD_ENTITY)) == (
        '  ~ acme   update   id 1   lines[1].description: "Setup" -> "Setup, once"\n'
        "  ~ b      update   id 2   due_date: 2025-07-31 -> 2025-08-01\n"
        "\n"
        "Plan: 0 to create, 2 to update, 0 to remove.   Billing: no change\n"
        "Managed now: USD 120.00 invoiced, 0.00 paid, 120.00 due (2 invoices)\n"
    )
    grown = make_plan(
        [desired("b", lines=[line(), line("12.5", tax=None, description="Extra seat")])],
        new_state((desired("b"), 2)),
        refreshed=True,
        entity_currencies=USD_ENTITY,
    )
    assert render_plan(grown) == (
        "  ~ b   update   id 2   USD 55.00 -> USD 67.50\n"
        '      lines[1]: added product 2545 "Extra seat" 1 x 12.50 = 12.50\n'
        "\n"
        "Plan: 0 to create, 1 to update, 0 to remove.   Billing: +USD 12.50\n"
        "Managed now: USD 55.00 invoiced, 0.00 paid, 55.00 due (1 invoice)\n"
    )


def test_plan_text_has_no_escape_codes_without_colour_and_some_with_it() -> None:
    plan = review_plan()
    assert not ANSI.search(render_plan(plan, color=False))
    coloured = render_plan(plan, color=True)
    assert "\x1b[32m  +" in coloured  # green create
    assert "\x1b[31m  -" in coloured  # red void
    assert ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == REVIEW_TEXT


def test_plan_text_wraps_only_when_given_a_width() -> None:
    plan = review_plan()
    assert max(len(ln) for ln in render_plan(plan).splitlines()) > 100
    assert max(len(ln) for ln in render_plan(plan, width=100).splitlines()) <= 100


# --- plan markdown and json ------------------------------------------------------------------------

REVIEW_MARKDOWN = """\
### invoicesync plan for `sandbox`

| Create | Update | Replace | Remove | Unchanged | Blocked |
| ---: | ---: | ---: | ---: | ---: | ---: |
| 2 | 3 | 1 | 3 | 2 | 1 |

| Currency | Created | Updated | Removed | Net |
| --- | ---: | ---: | ---: | ---: |
| EUR | 0.00 | 0.00 | 55.00 | **-55.00** |
| USD | 110.30 | +10.00 | 110.00 | **+10.30** |

| | Address | Action | Invoice | Amount | Changes |
| --- | --- | --- | --- | ---: | --- |
| `~` | `acme-2025-06` | update | 145054 | USD 55.00 | `due_date`: 2025-07-31 -> 2025-07-30 |
| `+` | `acme-2025-07` | create | client 33973 | USD 55.00 | 2025-07-01 -> due 2025-07-31 |
| `~` | `beta-2025-06` | update | 145060 | USD 55.00 -> USD 65.00 | `lines[0].amount`: 50.00 -> 60.00<br>`lines[0].rate`: 50.00 -> 60.00<br>`message_on_invoice`: (unset) -> "Thank you for your business" |
| `~` | `drifted-2025-06` | update | 145061 | USD 55.00 | `due_date`: 2025-08-15 -> 2025-07-31 _(changed outside invoicesync)_ |
| `-/+` | `gamma-2025-05` | replace | 145050 | USD 55.00 | void, then create anew<br>_replace requested_ |
| `+` | `hours-2025-07` | create | client 33973 | USD 0.30 | 2025-07-01 -> due 2025-07-31 |
| `-` | `old-2025-01` | void | 145001 | USD 55.00 | _spec removed_ |
| `-` | `old-2025-02` | delete | 145002 | EUR 55.00 | _spec removed_ |
| `x` | `old-2025-03` | forget | 145003 | USD 55.00 | stays in Campfire<br>_spec removed_ |
| `!` | `paid-2025-04` | update | 145040 | USD 55.00 | **blocked**: invoice 145040 is paid in Campfire; it can no longer be changed<br>`due_date`: 2025-07-31 -> 2025-09-01 |

Managed now (before this plan):

| Currency | Invoices | Invoiced | Paid | Due |
| --- | ---: | ---: | ---: | ---: |
| EUR | 1 | 55.00 | 0.00 | 55.00 |
| USD | 8 | 440.00 | 55.00 | 385.00 |

- voided-2025-03 (id 145030) is unchanged: voided in Campfire.

<sub>State serial 4, lineage `0f1c2d3e-0000-4000-8000-000000000001`, specs `SPECS`</sub>
"""


def test_plan_markdown_for_a_pull_request_comment() -> None:
    plan = review_plan()
    expected = REVIEW_MARKDOWN.replace("SPECS", plan.specs_digest[:19])
    assert render_plan(plan, "markdown") == expected


def test_plan_markdown_keeps_table_cells_intact() -> None:
    state = new_state((desired("acme", message_on_invoice="a"), 1))
    spec = desired("acme", message_on_invoice="pay | now <b>\nthanks")
    plan = make_plan([spec], state, refreshed=True, entity_currencies=USD_ENTITY)
    lines = render_plan(plan, "markdown").splitlines()
    row = next(ln for ln in lines if ln.startswith("| `~`"))
    assert row == '| `~` | `acme` | update | 1 | USD 55.00 | `message_on_invoice`: "a" -> "pay \\| now &lt;b>\\nthanks" |'


def test_plan_markdown_without_changes() -> None:
    spec = desired("a")
    plan = make_plan([spec], new_state((spec, 1)), refreshed=True, entity_currencies=USD_ENTITY)
    assert render_plan(plan, "markdown").splitlines()[:3] == [
        "### invoicesync plan for `sandbox`",
        "",
        "No changes. 1 invoice matches the specs.",
    ]


def test_plan_json_is_the_plan_document() -> None:
    plan = review_plan()
    text = render_plan(plan, "json")
    assert loads_json(text) == loads_json(dumps_json(plan_to_dict(plan)))
    assert text.endswith("}\n") and "\n  " in text


# --- money -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "signed", "text"),
    [
        ("55", "USD", False, "USD 55.00"),
        ("0.3", "USD", False, "USD 0.30"),
        ("0.125", "EUR", False, "EUR 0.125"),
        ("1234567.5", "USD", False, "USD 1,234,567.50"),
        ("-5", "USD", False, "-USD 5.00"),
        ("55", "USD", True, "+USD 55.00"),
        ("0", "USD", True, "USD 0.00"),
        ("-0.1", None, True, "-0.10"),
    ],
)
def test_money_has_two_decimals_at_least_and_the_sign_before_the_currency(
    amount: str, currency: str | None, signed: bool, text: str
) -> None:
    assert render_money(Decimal(amount), currency, signed=signed) == text


# --- apply results ---------------------------------------------------------------------------------


def apply_result() -> ApplyResult:
    return ApplyResult(
        (
            Outcome("acme-2025-07", Action.CREATE, True, 145055),
            Outcome(
                "beta",
                Action.UPDATE,
                False,
                2,
                'Campfire answered 400 to PATCH /coa/api/v1/invoice/2/:\nlines[0].product: Invalid pk "999" - object does not exist.',
            ),
            Outcome("paid", Action.UPDATE, False, 7, "blocked: invoice 7 is paid in Campfire", skipped=True),
            Outcome("old", Action.VOID, True, 3),
        ),
        elapsed_seconds=1.234,
    )


def test_apply_result_text_lists_each_outcome_and_a_verdict() -> None:
    assert render_apply_result(apply_result()) == (
        "  + acme-2025-07   create   ok        id 145055\n"
        "  ! beta           update   failed    id 2   Campfire answered 400 to PATCH /coa/api/v1/invoice/2/:\n"
        '      lines[0].product: Invalid pk "999" - object does not exist.\n'
        "  · paid           update   skipped   id 7   blocked: invoice 7 is paid in Campfire\n"
        "  - old            void     ok        id 3\n"
        "\n"
        "Apply finished with errors in 1.2 s: 1 created, 1 voided, 1 failed, 1 skipped."
        " Every success is recorded in the state; fix the errors above and apply again.\n"
    )


def test_apply_result_text_for_a_clean_and_an_interrupted_run() -> None:
    clean = ApplyResult((Outcome("a", Action.CREATE, True, 1), Outcome("b", Action.FORGET, True, 2)), elapsed_seconds=0.5)
    assert render_apply_result(clean).splitlines()[-1] == "Apply complete in 0.5 s: 1 created, 1 forgotten."
    stopped = ApplyResult((Outcome("a", Action.CREATE, True, 1),), interrupted=True, elapsed_seconds=2)
    assert render_apply_result(stopped).splitlines()[-1] == (
        "Apply interrupted after 2.0 s: 1 created. Everything done so far is recorded in the state;"
        " run apply again to finish."
    )
    assert not ANSI.search(render_apply_result(apply_result()))
    assert ANSI.search(render_apply_result(apply_result(), color=True))


def test_apply_result_json_keys_are_stable() -> None:
    doc = loads_json(render_apply_result(apply_result(), "json"))
    assert set(doc) == {"format_version", "kind", "interrupted", "elapsed_seconds", "summary", "outcomes"}
    assert doc["summary"] == {"succeeded": 2, "failed": 1, "skipped": 1}
    assert set(doc["outcomes"][0]) == {"address", "action", "ok", "skipped", "invoice_id", "message"}


# --- show ------------------------------------------------------------------------------------------


def shown_state() -> State:
    state = new_state(
        (desired("acme-2025-06"), 145054),
        (desired("acme-2025-07"), 145055, LifecycleRecord(prevent_destroy=True)),
        (desired("eur-2025-07", currency="EUR", lines=[line("1000")]), 145056),
        (desired("void-2025-01"), 145001),
        (desired("never-read"), 145002),
    )
    snapshots = {
        "acme-2025-06": remote(state, "acme-2025-06", "paid", invoice_number="ACME-2025-06"),
        "acme-2025-07": remote(state, "acme-2025-07", "partial", amount_paid=Decimal("20"), amount_due=Decimal("35")),
        "eur-2025-07": remote(state, "eur-2025-07", currency="EUR"),
        "void-2025-01": remote(state, "void-2025-01", "voided", voided_date="2025-07-02"),
    }
    for address, invoice in snapshots.items():
        state.invoices[address].remote = RemoteSnapshot.from_response(invoice)
    return state


def test_show_lists_invoices_and_money_per_currency() -> None:
    assert render_show(shown_state()) == (
        "Address        Id       Status    Currency   Invoiced    Paid        Due\n"
        "acme-2025-06   145054   paid      USD           55.00   55.00       0.00\n"
        "acme-2025-07   145055   partial   USD           55.00   20.00      35.00\n"
        "eur-2025-07    145056   open      EUR        1,005.00    0.00   1,005.00\n"
        "never-read     145002   unknown   USD           55.00    0.00      55.00\n"
        "void-2025-01   145001   voided    USD           55.00    0.00      55.00\n"
        "\n"
        "5 invoices in the state of 'sandbox' (serial 4); 1 voided or deleted is not counted in the totals.\n"
        "\n"
        "Currency   Invoiced    Paid        Due\n"
        "EUR        1,005.00    0.00   1,005.00\n"
        "USD          165.00   75.00      90.00\n"
    )


def test_show_json_totals_per_currency() -> None:
    doc = loads_json(render_show(shown_state(), fmt="json"))
    assert doc["totals"] == [
        {"currency": "EUR", "invoiced": "1005.00", "paid": "0.00", "due": "1005.00"},
        {"currency": "USD", "invoiced": "165.00", "paid": "75.00", "due": "90.00"},
    ]
    assert [i["address"] for i in doc["invoices"]] == sorted(shown_state().invoices)


def test_show_of_one_address_shows_the_record_in_full() -> None:
    text = render_show(shown_state(), "acme-2025-06")
    assert text.splitlines()[:10] == [
        "acme-2025-06",
        "  id               145054",
        "  status           paid",
        "  invoice number   ACME-2025-06",
        "  invoiced         USD 55.00",
        "  paid             USD 55.00",
        "  due              USD 0.00",
        "  journal entry    7491952",
        "  lifecycle        prevent_destroy: false, on_remove: void",
        "  digest           " + shown_state().invoices["acme-2025-06"].digest,
    ]
    assert '      "source": "invoicesync",' in text
    doc = loads_json(render_show(shown_state(), "acme-2025-06", "json"))
    assert doc["record"]["id"] == 145054 and doc["paid"] == "55.00"


def test_show_of_an_unknown_address_suggests_a_close_one() -> None:
    with pytest.raises(InvoiceSyncError, match="no invoice at address 'acme-2025-7'.*Did you mean acme-2025-07"):
        render_show(shown_state(), "acme-2025-7")


def test_show_of_an_empty_state() -> None:
    assert render_show(new_state()) == "The state of environment 'sandbox' holds no invoices.\n"


def test_outcome_as_it_lands_is_one_line_per_change() -> None:
    assert render_outcome(Outcome("acme-2025-07", Action.CREATE, True, 145055)) == "  + acme-2025-07   create   ok        id 145055\n"
    failed = Outcome("beta", Action.VOID, False, 2, "Campfire answered 409:\nalready paid")
    assert render_outcome(failed) == "  ! beta   void   failed    id 2   Campfire answered 409:\n      already paid\n"

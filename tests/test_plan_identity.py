"""A saved plan means what it shows: its digest, the currency of each change, numbers already in Campfire."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from invoicesync.errors import PlanError
from invoicesync.models import RemoteSnapshot, dumps_json, loads_json
from invoicesync.plan import Action, CurrencyTotals, Plan, make_plan, plan_from_dict, plan_to_dict, plan_totals
from invoicesync.render import render_plan
from invoicesync.state import LifecycleRecord
from tests.invoices import desired, line, new_state, remote


# As Campfire's GET /coa/api/entity lists them (and as the sandbox's fixtures hold them).
CURRENCIES = {54: "USD", 55: "EUR"}


def only(plan: Plan, address: str) -> Any:
    return next(c for c in plan.changes if c.address == address)


def saved_plan() -> Plan:
    """A create, an update, a replace, a removal and a blocked update, as `plan --out` saves them."""
    state = new_state(
        (desired("acme-2025-06"), 145054),
        (desired("gamma"), 145050),
        (desired("old"), 145001, LifecycleRecord(on_remove="delete")),
        (desired("paid"), 145040),
    )
    live = {"paid": remote(state, "paid", "paid")}
    specs = [
        desired("acme-2025-06", due_date="2025-07-30", lines=[line("60")]),
        desired("acme-2025-07"),
        desired("gamma"),
        desired("paid", due_date="2025-09-01"),
    ]
    return make_plan(specs, state, live, replace=["gamma"], refreshed=True, entity_currencies=CURRENCIES)


def saved_document() -> dict[str, Any]:
    """The plan as `apply plan.json` reads it back: written as the file is, parsed as the CLI does."""
    return loads_json(dumps_json(plan_to_dict(saved_plan()), pretty=True))  # type: ignore[no-any-return]


def change_of(doc: dict[str, Any], address: str) -> dict[str, Any]:
    return next(c for c in doc["changes"] if c["address"] == address)  # type: ignore[no-any-return]


# --- a saved plan is applied as it was made --------------------------------------------------------

EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "patch": lambda d: change_of(d, "acme-2025-06")["patch"].update(due_date="2025-12-31"),
    "body": lambda d: change_of(d, "acme-2025-07")["body"]["lines"][0].update(rate=Decimal("5000")),
    "field change": lambda d: change_of(d, "acme-2025-06")["field_changes"][0].update(after="2025-12-31"),
    "action": lambda d: change_of(d, "old").update(action="void"),
    "invoice id": lambda d: change_of(d, "old").update(invoice_id=145099),
    "lifecycle": lambda d: change_of(d, "gamma").update(lifecycle={"prevent_destroy": False, "on_remove": "forget"}),
    "blocked": lambda d: change_of(d, "paid").update(blocked=None),
    "digest": lambda d: change_of(d, "acme-2025-07").update(digest="sha256:" + "0" * 64),
    "amount": lambda d: change_of(d, "acme-2025-07").update(amount="5.00"),
    "serial": lambda d: d.update(serial=99),
    "lineage": lambda d: d.update(lineage="another"),
    "environment": lambda d: d.update(environment="production"),
    "specs digest": lambda d: d.update(specs_digest="sha256:" + "1" * 64),
    "a change dropped": lambda d: d["changes"].pop(),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_plan_edited_by_hand_is_refused(edit: str) -> None:
    doc = saved_document()
    EDITS[edit](doc)
    with pytest.raises(PlanError) as info:
        plan_from_dict(doc)
    message = str(info.value)
    assert "changed after it was made" in message
    assert "invoicesync plan --out" in message


def test_reformatted_plan_still_applies() -> None:
    plan = saved_plan()
    compact = loads_json(dumps_json(plan_to_dict(plan)))
    reordered = dict(reversed(list(compact.items())))
    assert plan_from_dict(reordered) == plan
    spelled = saved_document()
    spelled["changes"][1]["body"]["lines"][0]["rate"] = Decimal("50.000")  # the same number, spelled longer
    assert plan_from_dict(spelled).changes[1].body == plan.changes[1].body


def test_plan_without_a_digest_is_refused_as_made_by_an_older_version() -> None:
    doc = saved_document()
    del doc["plan_digest"]
    with pytest.raises(PlanError, match=r"no plan_digest: it was made by an older invoicesync.*invoicesync plan --out"):
        plan_from_dict(doc)


def test_patch_that_contradicts_its_body_is_refused_even_with_a_fresh_digest() -> None:
    plan = saved_plan()
    index = next(i for i, c in enumerate(plan.changes) if c.address == "acme-2025-06")
    forged = dataclasses.replace(plan.changes[index], patch={"due_date": "2025-12-31"})
    changes = plan.changes[:index] + (forged,) + plan.changes[index + 1 :]
    doc = loads_json(dumps_json(plan_to_dict(dataclasses.replace(plan, changes=changes))))  # digest recomputed
    with pytest.raises(PlanError, match=r"changes\[0\] \(acme-2025-06\): its patch sets due_date to what its body"):
        plan_from_dict(doc)


def test_update_patching_fields_it_does_not_list_is_refused() -> None:
    plan = saved_plan()
    update = plan.changes[0]
    assert update.action is Action.UPDATE and update.body is not None
    forged = dataclasses.replace(update, patch={**(update.patch or {}), "client": update.body["client"]})
    doc = loads_json(dumps_json(plan_to_dict(dataclasses.replace(plan, changes=(forged, *plan.changes[1:])))))
    with pytest.raises(PlanError, match="its patch does not send exactly the fields its field_changes list"):
        plan_from_dict(doc)


# --- the currency of an invoice is its entity's when its spec names none ---------------------------


def test_invoice_of_a_eur_entity_without_a_currency_is_planned_and_summed_in_eur() -> None:
    plan = make_plan([desired("eu-2025-07", entity=55)], new_state(), entity_currencies=CURRENCIES)
    change = only(plan, "eu-2025-07")
    assert (change.currency, change.entity) == ("EUR", 55)
    assert plan_totals(plan) == (CurrencyTotals("EUR", create=Decimal("55")),)
    assert render_plan(plan) == (
        "  + eu-2025-07   create   client 33973   2025-07-01 -> due 2025-07-31   EUR 55.00\n"
        "\n"
        "Note: Campfire was not read (no refresh); changes made outside invoicesync are not shown.\n"
        "Plan: 1 to create, 0 to update, 0 to remove.   Billing: +EUR 55.00\n"
    )


def test_usd_and_eur_entities_are_totalled_apart() -> None:
    state = new_state((desired("eu-old", entity=55), 7), (desired("us-old"), 8))
    specs = [
        desired("eu-new", entity=55, lines=[line("100", tax=None)]),
        desired("eu-old", entity=55, lines=[line("60")]),
        desired("us-new", lines=[line("20", tax=None)]),
        desired("gbp", currency="GBP", entity=55),  # a spec's own currency wins over its entity's
    ]
    plan = make_plan(specs, state, entity_currencies=CURRENCIES)
    assert plan_totals(plan) == (
        CurrencyTotals("EUR", create=Decimal("100"), update=Decimal("10")),
        CurrencyTotals("GBP", create=Decimal("55")),
        CurrencyTotals("USD", create=Decimal("20"), remove=Decimal("55")),
    )
    assert "Billing: +EUR 110.00 (+100.00 created, +10.00 updated), +GBP 55.00, -USD 35.00" in render_plan(plan)


def test_currency_campfire_reported_for_the_invoice_or_its_entity_is_used_offline() -> None:
    state = new_state((desired("eu-old", entity=55), 7), (desired("eu-named", entity=55, currency="CHF"), 9))
    state.invoices["eu-old"].remote = RemoteSnapshot(status="open", currency="EUR")
    state.invoices["eu-named"].remote = RemoteSnapshot(status="open", currency="CHF")
    specs = [desired("eu-old", entity=55, lines=[line("60")]), desired("eu-new", entity=55),
             desired("eu-named", entity=55, currency="CHF")]
    plan = make_plan(specs, state)  # no entity list: offline
    assert only(plan, "eu-old").currency == "EUR"  # Campfire's word for that invoice
    assert only(plan, "eu-new").currency == "EUR"  # ... for another invoice of entity 55 that names none
    assert {(m.currency, m.invoices) for m in plan.managed} == {("CHF", 1), ("EUR", 1)}


def test_unknown_currency_is_never_shown_or_summed_as_usd() -> None:
    state = new_state((desired("eu-old", entity=55), 7))
    specs = [desired("eu-new", entity=55), desired("eu-old", entity=55, lines=[line("60")]),
             desired("us-new", currency="USD")]
    plan = make_plan(specs, state)
    assert (only(plan, "eu-new").currency, only(plan, "eu-new").entity) == (None, 55)
    assert plan_totals(plan) == (
        CurrencyTotals("USD", create=Decimal("55")),
        CurrencyTotals(None, create=Decimal("55"), update=Decimal("10"), entity=55),
    )
    assert render_plan(plan) == (
        "  + eu-new   create   client 33973   2025-07-01 -> due 2025-07-31   55.00 in entity 55's currency\n"
        "  ~ eu-old   update   id 7           55.00 in entity 55's currency -> 65.00 in entity 55's currency\n"
        "      lines[0].amount: 50.00 -> 60.00\n"
        "      lines[0].rate: 50.00 -> 60.00\n"
        "  + us-new   create   client 33973   2025-07-01 -> due 2025-07-31   USD 55.00\n"
        "\n"
        "Note: Campfire was not read (no refresh); changes made outside invoicesync are not shown.\n"
        "Note: entity 55's currency is not known: the specs name none, and neither Campfire's entity list nor "
        "its invoices said which. Those amounts read \"in entity N's currency\" and are totalled apart, never as USD.\n"
        "Plan: 2 to create, 1 to update, 0 to remove.   Billing: +USD 55.00, +65.00 in entity 55's currency "
        "(+55.00 created, +10.00 updated)\n"
        "Managed now: 55.00 invoiced, 0.00 paid, 55.00 due in entity 55's currency (1 invoice)\n"
    )
    markdown = render_plan(plan, "markdown")
    assert "| entity 55's currency (not known) | 55.00 | +10.00 | 0.00 | **+65.00** |" in markdown
    assert "| `+` | `eu-new` | create | client 33973 | 55.00 in entity 55's currency |" in markdown
    doc = plan_to_dict(plan)
    created = next(c for c in doc["changes"] if c["address"] == "eu-new")
    assert (created["currency"], created["entity"]) == (None, 55)
    assert [(t["currency"], t["entity"], t["net"]) for t in doc["totals"]] == [("USD", None, "55.00"), (None, 55, "65.00")]


def test_a_spec_naming_the_currency_of_an_entity_not_known_keeps_the_two_apart() -> None:
    state = new_state((desired("eu", entity=55), 7))
    plan = make_plan([desired("eu", entity=55, currency="EUR")], state)
    change = only(plan, "eu")
    assert (change.currency, change.currency_before, change.entity_before) == ("EUR", None, 55)
    assert plan_totals(plan) == (
        CurrencyTotals("EUR", update=Decimal("55")),
        CurrencyTotals(None, update=Decimal("-55"), entity=55),
    )
    assert "55.00 in entity 55's currency -> EUR 55.00" in render_plan(plan)


def test_saved_plan_shows_the_same_currencies() -> None:
    state = new_state((desired("eu-old", entity=55), 7))
    plan = make_plan([desired("eu-new", entity=55), desired("eu-old", entity=55, currency="EUR")], state)
    loaded = plan_from_dict(loads_json(dumps_json(plan_to_dict(plan), pretty=True)))
    assert loaded == plan
    for fmt in ("text", "markdown", "json"):
        assert render_plan(loaded, fmt) == render_plan(plan, fmt)  # type: ignore[arg-type]


# --- a create whose invoice number Campfire already holds outside this state ----------------------

ADOPT = (
    "invoice number ACME-2025-07 already exists in Campfire (id 145055), outside this state; "
    "adopt it with: invoicesync import acme-2025-07 145055"
)


def test_create_of_a_number_campfire_already_holds_is_blocked_with_the_import_command() -> None:
    specs = [desired("acme-2025-07", invoice_number="ACME-2025-07"), desired("beta", invoice_number="BETA-1")]
    existing = {(54, "ACME-2025-07"): [145055]}
    plan = make_plan(specs, new_state(), {}, refreshed=True, entity_currencies=CURRENCIES, existing_invoices=existing)
    assert only(plan, "acme-2025-07").blocked == ADOPT
    assert only(plan, "beta").blocked is None
    assert render_plan(plan) == (
        "  ! acme-2025-07   create   client 33973   2025-07-01 -> due 2025-07-31   USD 55.00\n"
        f"      blocked: {ADOPT}\n"
        "  + beta           create   client 33973   2025-07-01 -> due 2025-07-31   USD 55.00\n"
        "\n"
        "Plan: 1 to create, 0 to update, 0 to remove, 1 blocked.   Billing: +USD 55.00\n"
    )
    assert f"**blocked**: {ADOPT}" in render_plan(plan, "markdown")
    doc = loads_json(render_plan(plan, "json"))
    assert next(c for c in doc["changes"] if c["address"] == "acme-2025-07")["blocked"] == ADOPT
    assert doc["summary"]["blocked"] == 1 and doc["summary"]["create"] == 1


def test_numbers_held_by_this_state_or_another_entity_or_nothing_known_do_not_block() -> None:
    held = desired("acme-2025-06", invoice_number="ACME-2025-07")
    state = new_state((held, 145055))
    spec = desired("acme-2025-07", invoice_number="ACME-2025-07")
    assert only(make_plan([held, spec], state, existing_invoices={(54, "ACME-2025-07"): [145055]}), "acme-2025-07").blocked is None
    assert only(make_plan([spec], new_state(), existing_invoices={(55, "ACME-2025-07"): [9]}), "acme-2025-07").blocked is None
    assert only(make_plan([spec], new_state()), "acme-2025-07").blocked is None  # offline: not asked


def test_several_invoices_with_the_number_are_all_named() -> None:
    spec = desired("acme-2025-07", invoice_number="ACME-2025-07")
    plan = make_plan([spec], new_state(), existing_invoices={(54, "ACME-2025-07"): [145099, 145055]})
    assert only(plan, "acme-2025-07").blocked == (
        "invoice number ACME-2025-07 already exists in Campfire (ids 145055, 145099), outside this state; "
        "adopt one with: invoicesync import acme-2025-07 ID, ID being the right one of 145055, 145099"
    )


def test_replace_is_blocked_by_another_invoice_with_its_number_but_not_by_its_own() -> None:
    spec = desired("acme-2025-07", invoice_number="ACME-2025-07")
    state = new_state((spec, 145050))
    own = make_plan([spec], state, replace=["acme-2025-07"], existing_invoices={(54, "ACME-2025-07"): [145050]})
    assert only(own, "acme-2025-07").action is Action.REPLACE and only(own, "acme-2025-07").blocked is None
    other = make_plan([spec], state, replace=["acme-2025-07"], existing_invoices={(54, "ACME-2025-07"): [145050, 145099]})
    change = only(other, "acme-2025-07")
    assert change.action is Action.REPLACE
    assert change.blocked == (
        "invoice number ACME-2025-07 already exists in Campfire (id 145099), outside this state; to manage it "
        "instead: invoicesync state rm acme-2025-07, then invoicesync import acme-2025-07 145099"
    )
    assert not any(c.action is not Action.NOOP and not c.blocked for c in other.changes)  # apply attempts nothing


def test_blocked_create_survives_a_saved_plan() -> None:
    spec = desired("acme-2025-07", invoice_number="ACME-2025-07")
    plan = make_plan([spec], new_state(), existing_invoices={(54, "ACME-2025-07"): [145055]})
    assert plan_from_dict(loads_json(dumps_json(plan_to_dict(plan)))).changes[0].blocked == ADOPT

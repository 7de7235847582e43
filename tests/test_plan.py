"""make_plan and the plan document: pure tests, no files, no server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from invoicesync.errors import PlanError
from invoicesync.models import Lifecycle, OnRemove, body_digest, dumps_json, loads_json
from invoicesync.plan import (
    Action,
    Change,
    CurrencyTotals,
    FieldChange,
    Plan,
    counts,
    has_changes,
    make_plan,
    money_text,
    plan_from_dict,
    plan_to_dict,
    plan_totals,
    specs_digest,
)
from invoicesync.state import LifecycleRecord
from tests.invoices import LINEAGE, desired, line, new_state, remote


# Entity 54 bills in USD (as Campfire's entity list says; the bodies of these tests name no currency).
USD_ENTITY = {54: "USD"}


def only(plan: Plan, address: str) -> Any:
    return next(c for c in plan.changes if c.address == address)


# --- create, update, no-op -------------------------------------------------------------------------


def test_spec_not_in_state_is_created_with_its_total_and_source_marking() -> None:
    plan = make_plan([desired("acme-2025-07")], new_state(), entity_currencies=USD_ENTITY)
    (change,) = plan.changes
    assert change.action is Action.CREATE
    assert change.invoice_id is None
    assert change.amount == Decimal("55")
    assert change.currency == "USD"
    assert change.body is not None
    assert change.body["source"] == "invoicesync"
    assert change.body["source_id"] == f"{LINEAGE}/acme-2025-07"
    assert change.digest == body_digest(change.body)
    assert change.location == "specs/acme.yaml:3"


def test_unchanged_invoice_is_a_noop_without_body_but_counted() -> None:
    spec = desired("acme-2025-06")
    plan = make_plan([spec], new_state((spec, 145054)))
    (change,) = plan.changes
    assert change.action is Action.NOOP
    assert change.body is None and change.patch is None and change.field_changes == ()
    assert counts(plan)["noop"] == 1
    assert not has_changes(plan)
    assert plan_totals(plan) == ()


def test_changed_due_date_is_an_update_patching_only_that_field() -> None:
    state = new_state((desired("acme-2025-06"), 145054))
    plan = make_plan([desired("acme-2025-06", due_date="2025-08-15")], state)
    (change,) = plan.changes
    assert change.action is Action.UPDATE
    assert change.invoice_id == 145054
    assert change.field_changes == (FieldChange("due_date", "2025-07-31", "2025-08-15"),)
    assert change.patch == {"due_date": "2025-08-15"}
    assert change.reason is None and change.blocked is None


def test_changed_line_rate_reports_its_path_and_patches_all_lines() -> None:
    state = new_state((desired("acme", lines=[line(), line("20", description="Support")]), 1))
    spec = desired("acme", lines=[line(), line("25", description="Support")])
    change = only(make_plan([spec], state), "acme")
    assert [(f.path, f.before, f.after) for f in change.field_changes] == [
        ("lines[1].amount", Decimal("20"), Decimal("25")),
        ("lines[1].rate", Decimal("20"), Decimal("25")),
    ]
    assert change.patch == {"lines": spec.wire["lines"]}
    assert (change.amount_before, change.amount) == (Decimal("80"), Decimal("85"))


def test_added_line_is_reported_at_its_index() -> None:
    state = new_state((desired("acme"), 1))
    spec = desired("acme", lines=[line(), line("10", tax=None, description="Setup")])
    change = only(make_plan([spec], state), "acme")
    (added,) = change.field_changes
    assert added.path == "lines[1]" and added.before is None
    assert added.after["description"] == "Setup"
    assert list(change.patch) == ["lines"]


def test_removed_line_is_reported_at_its_index() -> None:
    state = new_state((desired("acme", lines=[line(), line("10", tax=None, description="Setup")]), 1))
    change = only(make_plan([desired("acme")], state), "acme")
    (removed,) = change.field_changes
    assert removed.path == "lines[1]" and removed.after is None
    assert removed.before["description"] == "Setup"


def test_field_removed_from_the_spec_is_patched_to_none() -> None:
    state = new_state((desired("acme", message_on_invoice="Thank you"), 1))
    change = only(make_plan([desired("acme")], state), "acme")
    assert change.field_changes == (FieldChange("message_on_invoice", "Thank you", None),)
    assert change.patch == {"message_on_invoice": None}


def test_same_money_spelled_differently_is_not_a_change() -> None:
    state = new_state((desired("acme", lines=[line("50")]), 1))
    plan = make_plan([desired("acme", lines=[line("50.000", tax="5.0")])], state)
    assert only(plan, "acme").action is Action.NOOP


def test_tiny_money_difference_is_a_change() -> None:
    state = new_state((desired("acme", lines=[line("0.1")]), 1))
    change = only(make_plan([desired("acme", lines=[line("0.10000001")])], state), "acme")
    assert change.action is Action.UPDATE
    assert FieldChange("lines[0].rate", Decimal("0.1"), Decimal("0.10000001")) in change.field_changes


def test_body_equal_to_the_applied_one_is_a_noop_whatever_digest_the_state_recorded() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    state.invoices["acme"].digest = "sha256:written-by-an-older-version"
    change = only(make_plan([spec], state), "acme")
    assert change.action is Action.NOOP
    assert change.digest == "sha256:written-by-an-older-version"


def test_changes_carry_the_digest_of_the_body_to_send() -> None:
    state = new_state((desired("drifted"), 1), (desired("edited"), 2))
    live = {"drifted": remote(state, "drifted", due_date="2025-08-15")}
    plan = make_plan([desired("drifted"), desired("edited", due_date="2025-08-01")], state, live)
    for change in plan.changes:
        assert change.action is Action.UPDATE
        assert change.body is not None and change.digest == body_digest(change.body)


def test_lifecycle_change_is_a_state_only_update_so_apply_records_it() -> None:
    spec = desired("acme", lifecycle=Lifecycle(prevent_destroy=False))
    state = new_state((spec, 1, LifecycleRecord(prevent_destroy=True)))
    change = only(make_plan([spec], state), "acme")
    assert change.action is Action.UPDATE
    assert change.patch == {}
    assert change.field_changes == (FieldChange("lifecycle.prevent_destroy", True, False),)
    assert change.lifecycle == Lifecycle(prevent_destroy=False, on_remove=OnRemove.VOID)


def test_changes_are_sorted_by_address() -> None:
    specs = [desired(a) for a in ("b", "c", "a")]
    state = new_state((desired("d"), 4), (specs[1], 3))
    plan = make_plan(specs, state)
    assert [c.address for c in plan.changes] == ["a", "b", "c", "d"]


def test_duplicate_addresses_are_refused() -> None:
    with pytest.raises(PlanError, match="acme"):
        make_plan([desired("acme"), desired("acme")], new_state())


# --- removal ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_remove", "action"),
    [("void", Action.VOID), ("delete", Action.DELETE), ("forget", Action.FORGET)],
)
def test_removed_spec_is_removed_per_its_lifecycle(on_remove: str, action: Action) -> None:
    state = new_state((desired("old"), 7, LifecycleRecord(on_remove=on_remove)))
    plan = make_plan([], state, entity_currencies=USD_ENTITY)
    (change,) = plan.changes
    assert change.action is action
    assert change.invoice_id == 7
    assert change.amount_before == Decimal("55") and change.amount == 0
    assert counts(plan)["remove"] == 1
    expected_removed = Decimal(0) if action is Action.FORGET else Decimal("55")
    assert plan_totals(plan) == (CurrencyTotals("USD", remove=expected_removed),)


def test_prevent_destroy_fails_the_plan_listing_every_protected_address() -> None:
    state = new_state(
        (desired("a-protected"), 1, LifecycleRecord(prevent_destroy=True)),
        (desired("b-protected"), 2, LifecycleRecord(prevent_destroy=True, on_remove="delete")),
        (desired("c-free"), 3),
    )
    with pytest.raises(PlanError) as excinfo:
        make_plan([], state)
    message = str(excinfo.value)
    assert "a-protected (id 1)" in message and "b-protected (id 2)" in message
    assert "c-free" not in message
    assert "prevent_destroy: false" in message and "invoicesync state rm" in message


def test_prevent_destroy_allows_forgetting() -> None:
    state = new_state((desired("a"), 1, LifecycleRecord(prevent_destroy=True, on_remove="forget")))
    assert make_plan([], state).changes[0].action is Action.FORGET


def test_prevent_destroy_blocks_replace() -> None:
    spec = desired("a", lifecycle=Lifecycle(prevent_destroy=True))
    with pytest.raises(PlanError, match=r"a \(id 1\): replace"):
        make_plan([spec], new_state((spec, 1)), replace=["a"])


def test_prevent_destroy_outside_the_targets_does_not_fail_the_plan() -> None:
    state = new_state((desired("protected"), 1, LifecycleRecord(prevent_destroy=True)))
    plan = make_plan([desired("new")], state, targets=["new"])
    assert [c.address for c in plan.changes] == ["new"]


# --- money -----------------------------------------------------------------------------------------


def test_money_is_exact_decimal() -> None:
    plan = make_plan(
        [desired("hours", lines=[line("0.1", quantity="3", tax=None)])], new_state(), entity_currencies=USD_ENTITY
    )
    change = plan.changes[0]
    assert change.amount == Decimal("0.3")
    assert money_text(change.amount) == "0.30"
    assert plan_to_dict(plan)["totals"] == [
        {"currency": "USD", "entity": None, "create": "0.30", "update": "0.00", "remove": "0.00", "net": "0.30"}
    ]


def test_money_text_keeps_extra_decimals_and_never_uses_float() -> None:
    assert [money_text(Decimal(v)) for v in ("55", "0.3", "0.125", "-5", "1E+3", "-0")] == [
        "55.00", "0.30", "0.125", "-5.00", "1000.00", "0.00",
    ]


def test_totals_are_per_currency_and_add_up() -> None:
    state = new_state(
        (desired("eur-up", currency="EUR"), 2),
        (desired("gbp-gone", currency="GBP"), 3),
        (desired("usd-replaced"), 4),
    )
    specs = [
        desired("usd-new", lines=[line("100", tax=None)]),
        desired("eur-up", currency="EUR", lines=[line("60")]),
        desired("usd-replaced", lines=[line("20", tax=None)]),
    ]
    plan = make_plan(specs, state, replace=["usd-replaced"], entity_currencies=USD_ENTITY)
    assert plan_totals(plan) == (
        CurrencyTotals("EUR", update=Decimal("10")),
        CurrencyTotals("GBP", remove=Decimal("55")),
        CurrencyTotals("USD", create=Decimal("120"), remove=Decimal("55")),
    )
    assert [t.net for t in plan_totals(plan)] == [Decimal("10"), Decimal("-55"), Decimal("65")]


def test_currency_change_moves_money_between_currencies() -> None:
    state = new_state((desired("acme"), 1))
    plan = make_plan([desired("acme", currency="EUR")], state, entity_currencies=USD_ENTITY)
    change = only(plan, "acme")
    assert (change.currency, change.currency_before) == ("EUR", "USD")
    assert plan_totals(plan) == (
        CurrencyTotals("EUR", update=Decimal("55")),
        CurrencyTotals("USD", update=Decimal("-55")),
    )


# --- remote: drift, deleted, locked ----------------------------------------------------------------


def test_field_changed_outside_is_planned_back_and_marked_drift() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = {"acme": remote(state, "acme", due_date="2025-08-15")}
    change = only(make_plan([spec], state, live, refreshed=True), "acme")
    assert change.action is Action.UPDATE
    assert change.reason == "changed outside invoicesync"
    assert change.field_changes == (FieldChange("due_date", "2025-08-15", "2025-07-31", drift=True),)
    assert change.patch == {"due_date": "2025-07-31"}


def test_drift_and_spec_change_are_merged() -> None:
    state = new_state((desired("acme"), 1))
    live = {"acme": remote(state, "acme", message_on_invoice="edited by accounting", due_date="2025-08-15")}
    spec = desired("acme", due_date="2025-09-01", lines=[line("60")])
    change = only(make_plan([spec], state, live), "acme")
    assert [(f.path, f.before, f.after, f.drift) for f in change.field_changes] == [
        ("due_date", "2025-08-15", "2025-09-01", True),
        ("lines[0].amount", Decimal("50"), Decimal("60"), False),
        ("lines[0].rate", Decimal("50"), Decimal("60"), False),
    ]
    assert set(change.patch) == {"due_date", "lines"}  # message_on_invoice is not ours: left alone


def test_remote_already_matching_the_new_spec_needs_no_patch() -> None:
    state = new_state((desired("acme"), 1))
    live = {"acme": remote(state, "acme", due_date="2025-08-15")}
    change = only(make_plan([desired("acme", due_date="2025-08-15")], state, live), "acme")
    assert change.action is Action.UPDATE and change.patch == {}


def test_remote_money_as_strings_and_extra_fields_is_not_drift() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = remote(state, "acme")
    live["lines"][0]["rate"] = "50.00"
    assert only(make_plan([spec], state, {"acme": live}), "acme").action is Action.NOOP


def test_payments_are_not_drift() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = {"acme": remote(state, "acme", "partial", amount_paid=Decimal("20"), amount_due=Decimal("35"))}
    assert only(make_plan([spec], state, live), "acme").action is Action.NOOP


def test_invoice_deleted_outside_is_created_again() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    change = only(make_plan([spec], state, {"acme": None}, refreshed=True), "acme")
    assert change.action is Action.CREATE
    assert change.reason == "deleted outside invoicesync"
    assert change.invoice_id is None


def test_removed_spec_of_invoice_deleted_outside_is_only_forgotten() -> None:
    state = new_state((desired("acme"), 1, LifecycleRecord(prevent_destroy=True)))
    change = only(make_plan([], state, {"acme": None}), "acme")
    assert change.action is Action.FORGET and change.reason == "deleted outside invoicesync"


def test_address_missing_from_the_refresh_is_not_treated_as_deleted() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    assert only(make_plan([spec], state, {}, refreshed=True), "acme").action is Action.NOOP


@pytest.mark.parametrize(("status", "reason"), [("paid", "paid"), ("partial", "partly paid"), ("voided", "voided")])
def test_locked_invoice_blocks_a_spec_change(status: str, reason: str) -> None:
    state = new_state((desired("acme"), 145040))
    live = {"acme": remote(state, "acme", status)}
    plan = make_plan([desired("acme", due_date="2025-09-01")], state, live)
    change = only(plan, "acme")
    assert change.action is Action.UPDATE
    assert change.blocked == f"invoice 145040 is {reason} in Campfire; it can no longer be changed"
    assert counts(plan)["blocked"] == 1 and counts(plan)["update"] == 0
    assert not has_changes(plan)
    assert plan_totals(plan) == ()


def test_paid_invoice_with_unchanged_spec_is_a_noop() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    change = only(make_plan([spec], state, {"acme": remote(state, "acme", "paid")}), "acme")
    assert change.action is Action.NOOP and change.blocked is None and change.reason is None


def test_voided_invoice_with_unchanged_spec_is_a_noop_that_says_so() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = remote(state, "acme", "voided", voided_date="2025-07-28")
    change = only(make_plan([spec], state, {"acme": live}), "acme")
    assert change.action is Action.NOOP and change.reason == "voided in Campfire"


def test_drift_on_a_paid_invoice_is_left_alone() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = {"acme": remote(state, "acme", "paid", due_date="2025-08-15")}
    change = only(make_plan([spec], state, live), "acme")
    assert change.action is Action.NOOP and change.blocked is None
    assert change.reason == "changed outside invoicesync, but paid in Campfire: left as is"


def test_removing_a_paid_invoice_is_blocked() -> None:
    state = new_state((desired("acme"), 9))
    change = only(make_plan([], state, {"acme": remote(state, "acme", "paid")}), "acme")
    assert change.action is Action.VOID
    assert change.blocked is not None and change.blocked.startswith("invoice 9 is paid in Campfire")


def test_removing_an_invoice_voided_outside_only_forgets_it() -> None:
    state = new_state((desired("acme"), 9))
    change = only(make_plan([], state, {"acme": remote(state, "acme", "voided")}), "acme")
    assert change.action is Action.FORGET and change.reason == "already voided in Campfire"


# --- targets and replace ---------------------------------------------------------------------------


def test_targets_plan_only_matching_addresses() -> None:
    state = new_state((desired("acme-2025-06"), 1), (desired("beta-2025-06"), 2))
    specs = [desired("acme-2025-06", due_date="2025-08-01"), desired("acme-2025-07"), desired("beta-2025-07")]
    plan = make_plan(specs, state, targets=["acme-*"])
    assert [c.address for c in plan.changes] == ["acme-2025-06", "acme-2025-07"]
    assert plan.targets == ("acme-*",)


def test_target_matching_nothing_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"--target acme-2026-\* matches no address.*Did you mean"):
        make_plan([desired("acme-2025-07")], new_state(), targets=["acme-2026-*"])


def test_replace_glob_replaces_existing_invoices() -> None:
    state = new_state((desired("acme-2025-06"), 1), (desired("acme-2025-07"), 2))
    specs = [desired("acme-2025-06"), desired("acme-2025-07"), desired("acme-2025-08")]
    plan = make_plan(specs, state, replace=["acme-2025-0[67]"])
    assert [(c.address, c.action) for c in plan.changes] == [
        ("acme-2025-06", Action.REPLACE),
        ("acme-2025-07", Action.REPLACE),
        ("acme-2025-08", Action.CREATE),
    ]
    replaced = plan.changes[0]
    assert replaced.invoice_id == 1 and replaced.reason == "replace requested"
    assert replaced.body is not None and replaced.before is not None
    assert counts(plan)["replace"] == 2


def test_replace_matching_nothing_is_an_error() -> None:
    with pytest.raises(PlanError, match="--replace acme-2025-07 matches only invoices not created yet"):
        make_plan([desired("acme-2025-07")], new_state(), replace=["acme-2025-07"])
    with pytest.raises(PlanError, match="--replace zzz matches no invoice"):
        make_plan([desired("acme-2025-07")], new_state(), replace=["zzz"])


def test_replace_of_a_paid_invoice_is_blocked_and_of_a_voided_one_is_a_create() -> None:
    state = new_state((desired("paid"), 1), (desired("void"), 2))
    live = {"paid": remote(state, "paid", "paid"), "void": remote(state, "void", "voided")}
    plan = make_plan([desired("paid"), desired("void")], state, live, replace=["*"])
    assert only(plan, "paid").blocked == "invoice 1 is paid in Campfire; it can no longer be voided"
    assert only(plan, "void").action is Action.CREATE


# --- the plan document -----------------------------------------------------------------------------


def representative_plan() -> Plan:
    state = new_state(
        (desired("acme-2025-06"), 145054),
        (desired("beta", currency="EUR"), 2),
        (desired("old"), 3, LifecycleRecord(on_remove="delete")),
        (desired("same"), 5),
        (desired("drifted"), 6),
    )
    live = {"drifted": remote(state, "drifted", due_date="2025-08-15"), "same": remote(state, "same", "voided")}
    specs = [
        desired("acme-2025-06", due_date="2025-08-01"),
        desired("acme-2025-07", lines=[line("0.1", quantity="3", tax=None)], message_on_invoice="Thanks | bye"),
        desired("beta", currency="EUR", lines=[line(), line("12.5", tax=None)]),
        desired("same"),
        desired("drifted"),
    ]
    return make_plan(specs, state, live, refreshed=True, entity_currencies=USD_ENTITY)


def test_plan_round_trips_through_its_json_document() -> None:
    plan = representative_plan()
    assert plan_from_dict(loads_json(dumps_json(plan_to_dict(plan)))) == plan
    assert plan_from_dict(loads_json(dumps_json(plan_to_dict(plan), pretty=True))) == plan


def test_plan_document_keys_are_stable() -> None:
    doc = plan_to_dict(representative_plan())
    assert set(doc) == {
        "format_version", "kind", "environment", "lineage", "serial", "specs_digest",
        "refreshed", "targets", "summary", "totals", "managed", "changes", "plan_digest",
    }
    assert doc["plan_digest"].startswith("sha256:")
    assert {frozenset(m) for m in doc["managed"]} == {
        frozenset({"currency", "entity", "invoices", "invoiced", "paid", "due"})
    }
    assert (doc["format_version"], doc["kind"]) == (1, "invoicesync-plan")
    assert set(doc["summary"]) == {"create", "update", "replace", "remove", "no_op", "blocked"}
    assert {frozenset(t) for t in doc["totals"]} == {
        frozenset({"currency", "entity", "create", "update", "remove", "net"})
    }
    for change in doc["changes"]:
        assert set(change) == {
            "address", "action", "invoice_id", "reason", "blocked", "location", "currency", "currency_before",
            "amount", "amount_before", "field_changes", "lifecycle", "digest", "body", "before", "patch",
            "entity", "entity_before",
        }
        for f in change["field_changes"]:
            assert set(f) == {"path", "before", "after", "drift"}
    assert doc["summary"] == {"create": 1, "update": 3, "replace": 0, "remove": 1, "no_op": 1, "blocked": 0}
    noop = next(c for c in doc["changes"] if c["action"] == "no-op")
    assert noop["body"] is None and noop["before"] is None and noop["patch"] is None


def test_money_in_the_document_is_text_and_bodies_keep_decimal_numbers() -> None:
    text = dumps_json(plan_to_dict(representative_plan()))
    doc = loads_json(text)
    created = next(c for c in doc["changes"] if c["address"] == "acme-2025-07")
    assert created["amount"] == "0.30"
    assert created["body"]["lines"][0]["rate"] == Decimal("0.1")
    assert '"rate":0.1' in text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(kind="terraform-plan"), "not an invoicesync plan"),
        (lambda d: d.update(format_version=2), "format_version 2 is not supported"),
        (lambda d: d["changes"][0].update(action="explode"), r"malformed: changes\[0\]\.action"),
        (lambda d: d.pop("lineage"), "malformed: lineage"),
    ],
)
def test_plan_from_dict_refuses_foreign_or_malformed_documents(mutate: Any, message: str) -> None:
    doc = loads_json(dumps_json(plan_to_dict(representative_plan())))
    mutate(doc)
    with pytest.raises(PlanError, match=message):
        plan_from_dict(doc)


def test_specs_digest_follows_content_not_order() -> None:
    a, b = desired("a"), desired("b")
    assert specs_digest([a, b]) == specs_digest([b, a])
    assert specs_digest([a, b]) != specs_digest([a, desired("b", due_date="2025-08-01")])
    assert specs_digest([a]) != specs_digest([desired("a", lifecycle=Lifecycle(prevent_destroy=True))])
    assert specs_digest([a]).startswith("sha256:")


def test_hand_built_plans_round_trip_too() -> None:
    plan = Plan("prod", LINEAGE, 9, "sha256:x", (Change("a", Action.FORGET, invoice_id=3),), targets=("a*",))
    assert plan_from_dict(loads_json(dumps_json(plan_to_dict(plan)))) == plan


def test_imported_invoice_without_source_marking_is_not_drift() -> None:
    spec = desired("acme")
    state = new_state((spec, 1))
    live = remote(state, "acme", source=None, source_id=None)
    assert only(make_plan([spec], state, {"acme": live}), "acme").action is Action.NOOP
    live_other = remote(state, "acme", source="another-integration")
    assert only(make_plan([spec], state, {"acme": live_other}), "acme").action is Action.NOOP
    spec_marked = desired("marked", source="billing-bot")
    marked = new_state((spec_marked, 2))
    change = only(make_plan([spec_marked], marked, {"marked": remote(marked, "marked", source=None)}), "marked")
    assert change.field_changes == (FieldChange("source", None, "billing-bot", drift=True),)


def test_renamed_address_keeps_its_invoice_without_patching_source_id() -> None:
    state = new_state((desired("acme-2025-07"), 1))
    state.invoices["acme/2025-07"] = state.invoices.pop("acme-2025-07")  # what `state mv` does
    plan = make_plan([desired("acme/2025-07")], state)
    assert only(plan, "acme/2025-07").action is Action.NOOP
    moved = make_plan([desired("acme/2025-07", due_date="2025-08-01")], state)
    assert only(moved, "acme/2025-07").patch == {"due_date": "2025-08-01"}

"""A saved plan means what it shows: its digest, the currency of each change, numbers already in Campfire."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from invoicesync.errors import PlanError
from invoicesync.models import dumps_json, loads_json
from invoicesync.plan import Action, Plan, make_plan, plan_from_dict, plan_to_dict
from invoicesync.state import LifecycleRecord
from tests.invoices import desired, line, new_state, remote


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
    return make_plan(specs, state, live, replace=["gamma"], refreshed=True)


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

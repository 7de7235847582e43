"""Refresh by listing, end to end: the real CLI against the sandbox over loopback.

The managed invoices are read with a few list queries instead of one GET each; what the list cannot
settle (an id it did not return, a field its items omit, payments a change depends on) is read by id.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import SandboxServer, Workspace
from tests.e2e.specs import load

COUNT = 30


def applied(workspace: Workspace, sandbox_server: SandboxServer, text: str | None = None) -> dict[str, int]:
    workspace.write("specs/load.yaml", text if text is not None else load(COUNT))
    result = workspace.run("apply", "--auto-approve", "--parallelism", "8")
    assert result.exit_code == 0, result.output
    return {a: r["id"] for a, r in workspace.state()["invoices"].items()}


def pay(amount: Any) -> dict[str, Any]:
    """A manual payment of ``amount`` (Campfire's ``empty_transactions``)."""
    return {"empty_transactions": [{"account_id": 2553, "account_name": "1100 - Accounts Receivable",
                                    "amount": str(amount), "payment_date": "2025-10-01"}]}


def reads(sandbox_server: SandboxServer) -> tuple[int, int]:
    """(list pages served, invoices read by id) so far."""
    stats: dict[str, Any] = sandbox_server.request("GET", "/_sandbox/stats").json()
    return stats["lists"], stats["reads"]


def since(sandbox_server: SandboxServer, before: tuple[int, int]) -> tuple[int, int]:
    lists, by_id = reads(sandbox_server)
    return lists - before[0], by_id - before[1]


def test_plan_with_nothing_changed_reads_every_invoice_with_one_list_query(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    applied(workspace, sandbox_server)
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert since(sandbox_server, before) == (1, 0)


def test_an_invoice_deleted_behind_the_tools_back_is_confirmed_by_id_and_created_again(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    ids = applied(workspace, sandbox_server)
    assert sandbox_server.request("DELETE", f"/coa/api/v1/invoice/{ids['inv-007']}/").status_code == 204
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert re.search(r"\+ inv-007 .*deleted outside invoicesync", plan.stdout), plan.stdout
    assert since(sandbox_server, before) == (1, 1)  # the list, then a GET that answered 404


def test_an_invoice_moved_out_of_the_listing_is_read_by_id_as_drift_not_as_deleted(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    ids = applied(workspace, sandbox_server)
    moved = sandbox_server.request("PATCH", f"/coa/api/v1/invoice/{ids['inv-003']}/", {"client": 33973})
    assert moved.status_code == 200, moved.text
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "inv-003" in plan.stdout and "client" in plan.stdout and "deleted" not in plan.stdout
    assert since(sandbox_server, before) == (1, 1)


def test_refresh_names_each_invoice_changed_outside_and_what_changed(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    ids = applied(workspace, sandbox_server)
    sandbox_server.request("PATCH", f"/coa/api/v1/invoice/{ids['inv-001']}/", {"due_date": "2025-12-31"})
    sandbox_server.request("DELETE", f"/coa/api/v1/invoice/{ids['inv-002']}/")
    total = sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['inv-004']}/").json()["total_amount"]
    paid = sandbox_server.request("POST", f"/coa/api/v1/invoice/{ids['inv-004']}/pay/", pay(total))
    assert paid.status_code in (200, 201), paid.text
    refresh = workspace.run("refresh")
    assert refresh.exit_code == 0, refresh.output
    out = refresh.stdout
    assert f"Refreshed {COUNT} invoices (1 list query, 1 read by id)." in out
    assert "3 invoices changed outside invoicesync:" in out
    assert re.search(r"inv-001 \(id \d+\):\n\s+due_date 2025-09-\d\d -> 2025-12-31", out), out
    assert "inv-002 (id" in out and "no longer exists in Campfire" in out
    assert re.search(r"inv-004 \(id \d+\):(\n\s+.*)*\n\s+payment_status open -> paid", out), out
    # Payments and the deletion are recorded now; the edit still differs from what invoicesync applied.
    again = workspace.run("refresh")
    assert "1 invoice changed outside invoicesync:" in again.stdout and "inv-001" in again.stdout, again.output
    assert workspace.run("apply", "--auto-approve").exit_code == 0  # puts the due date back, creates inv-002
    assert "Nothing changed outside invoicesync." in workspace.run("refresh").stdout


def test_a_change_to_a_paid_invoice_reads_its_payments_by_id(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    ids = applied(workspace, sandbox_server)
    total = sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['inv-005']}/").json()["total_amount"]
    sandbox_server.request("POST", f"/coa/api/v1/invoice/{ids['inv-005']}/pay/", pay(total))
    workspace.write("specs/load.yaml", load(COUNT).replace("description: Support, seat 5\n",
                                                           "description: Support, seat five\n"))
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert "inv-005" in plan.stdout and "paid" in plan.stdout, plan.output
    assert since(sandbox_server, before) == (1, 1)  # the list, and the paid invoice a change depends on


def test_listing_follows_pages_and_gives_way_to_gets_when_it_would_read_too_much(
    workspace: Workspace, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied(workspace, sandbox_server)
    # Other invoices of the same entity and client, outside the state, in the same dates.
    others = []
    for n in range(40):
        body = {"entity": 54, "client": 33974, "invoice_date": "2025-09-10", "due_date": "2025-09-25",
                "lines": [{"product": 2546, "description": f"other {n}", "quantity": 1, "rate": 5}]}
        created = sandbox_server.request("POST", "/coa/api/v1/invoice/", body)
        assert created.status_code == 201
        others.append(created.json()["id"])
    monkeypatch.setattr("invoicesync.refresh.LOOKUP_PAGE_SIZE", 7)
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    # 70 invoices in those dates at 7 a page would be 10 pages: more than one per 4 of the 30 managed
    # (7.5), so after the first page said so, they are read by id.
    assert since(sandbox_server, before) == (1, COUNT)
    for invoice_id in others[:30]:
        assert sandbox_server.request("DELETE", f"/coa/api/v1/invoice/{invoice_id}/").status_code == 204
    before = reads(sandbox_server)
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert since(sandbox_server, before) == (6, 0)  # 40 invoices, 6 pages: listed


def test_listing_pages_under_a_rate_limit_are_paced_not_failed(
    workspace: Workspace, sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied(workspace, sandbox_server)
    monkeypatch.setattr("invoicesync.refresh.LOOKUP_PAGE_SIZE", 7)
    sandbox_server.set_faults(rate_limit=4, burst=1)
    refresh = workspace.run("refresh", "--parallelism", "4")
    assert refresh.exit_code == 0, refresh.output
    assert f"Refreshed {COUNT} invoices (1 list query, 0 read by id)." in refresh.stdout
    stats = sandbox_server.request("GET", "/_sandbox/stats").json()
    assert stats["lists"] == 5  # 30 invoices, 7 a page, each page once (a refused page is not served)
    assert stats["rate_limited"] >= 1  # the pages after the first were read together: the limit was met

"""Drift and adoption end to end: invoices changed behind the tool's back through the sandbox's own API."""

from __future__ import annotations

from tests.e2e.conftest import SandboxServer, Workspace

SPEC = """\
defaults:
  entity: 54
  client: 33973
  terms: net_30
invoices:
  acme-2025-07:
    invoice_date: 2025-07-01
    invoice_number: ACME-2025-07
    lines:
      - product: 2545
        description: Platform subscription, July 2025
        quantity: 1
        rate: 50
        tax: 5
  acme-2025-08:
    invoice_date: 2025-08-01
    invoice_number: ACME-2025-08
    lines:
      - product: 2545
        description: Platform subscription, August 2025
        quantity: 1
        rate: 50
        tax: 5
"""


def _applied(workspace: Workspace) -> dict[str, int]:
    workspace.write("specs/acme.yaml", SPEC)
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    return {a: r["id"] for a, r in workspace.state()["invoices"].items()}


def test_field_edited_outside_is_planned_back_as_drift(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    assert sandbox_server.request("PATCH", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/", {"due_date": "2025-08-15"}).status_code == 200
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2
    assert "due_date" in plan.stdout and "2025-08-15" in plan.stdout and "outside" in plan.stdout
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    assert sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/").json()["due_date"] == "2025-07-31"
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_plan_without_refresh_does_not_see_drift(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    sandbox_server.request("PATCH", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/", {"due_date": "2025-08-15"})
    assert workspace.run("plan", "--refresh=false", "--detailed-exitcode").exit_code == 0


def test_deleted_outside_is_created_again(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    assert sandbox_server.request("DELETE", f"/coa/api/v1/invoice/{ids['acme-2025-08']}/").status_code == 204
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2
    assert "deleted outside" in plan.stdout
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    new_id = workspace.state()["invoices"]["acme-2025-08"]["id"]
    assert new_id != ids["acme-2025-08"]
    assert len(sandbox_server.invoices()) == 2
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_paid_outside_blocks_changes_but_not_unchanged_invoices(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    paid = sandbox_server.request("POST", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/pay/", {
        "empty_transactions": [{"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": 55, "payment_date": "2025-07-20"}]
    })
    assert paid.status_code == 200, paid.text
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0

    workspace.write("specs/acme.yaml", SPEC.replace("rate: 50", "rate: 80"))
    plan = workspace.run("plan")
    assert plan.exit_code == 0
    assert "paid" in plan.stdout
    applied = workspace.run("apply", "--auto-approve")
    assert "paid" in applied.output
    again = workspace.run("apply", "--auto-approve")
    assert "paid" in again.output
    assert str(sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/").json()["total_amount"]) == "55"
    assert str(sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['acme-2025-08']}/").json()["total_amount"]) == "85"


def test_voided_outside_is_left_alone_while_the_spec_is_unchanged(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    assert sandbox_server.request("POST", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/void/", {}).status_code == 200
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


def test_refresh_records_payments_and_show_sums_money(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    sandbox_server.request("POST", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/pay/", {
        "empty_transactions": [{"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": 20, "payment_date": "2025-07-20"}]
    })
    assert workspace.run("refresh").exit_code == 0
    snapshot = workspace.state()["invoices"]["acme-2025-07"]["remote"]
    assert str(snapshot["amount_paid"]) == "20" and str(snapshot["amount_due"]) == "35"
    shown = workspace.run("show")
    assert shown.exit_code == 0
    assert "110.00" in shown.stdout and "20.00" in shown.stdout and "90.00" in shown.stdout


def test_import_by_id_then_plan_is_empty(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", SPEC)
    made = sandbox_server.request("POST", "/coa/api/v1/invoice/", {
        "entity": 54, "client": 33973, "terms": "net_30", "invoice_date": "2025-07-01", "due_date": "2025-07-31",
        "invoice_number": "ACME-2025-07",
        "lines": [{"product": 2545, "description": "Platform subscription, July 2025", "quantity": 1, "rate": 50, "amount": 50, "tax": 5}],
    })
    assert made.status_code == 201, made.text
    result = workspace.run("import", "acme-2025-07", str(made.json()["id"]))
    assert result.exit_code == 0, result.output
    plan = workspace.run("plan", "--target", "acme-2025-07", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


def test_import_by_invoice_number_then_only_real_differences(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", SPEC)
    made = sandbox_server.request("POST", "/coa/api/v1/invoice/", {
        "entity": 54, "client": 33973, "terms": "net_30", "invoice_date": "2025-08-01", "due_date": "2025-08-31",
        "invoice_number": "ACME-2025-08",
        "lines": [{"product": 2545, "description": "Platform subscription, August 2025", "quantity": 1, "rate": 45, "tax": 5}],
    })
    assert made.status_code == 201
    assert workspace.run("import", "acme-2025-08", "--invoice-number", "ACME-2025-08").exit_code == 0
    plan = workspace.run("plan", "--target", "acme-2025-08")
    assert "lines[0].rate" in plan.stdout and "45" in plan.stdout
    assert "due_date" not in plan.stdout


def test_import_of_unknown_invoice_fails_clearly(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", SPEC)
    by_id = workspace.run("import", "acme-2025-07", "999999")
    assert by_id.exit_code == 1 and "999999" in by_id.stderr and "Traceback" not in by_id.output
    by_number = workspace.run("import", "acme-2025-07", "--invoice-number", "NOPE-1")
    assert by_number.exit_code == 1 and "NOPE-1" in by_number.stderr


def test_import_of_an_id_managed_elsewhere_is_refused(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    workspace.write("specs/more.yaml", SPEC.replace("acme-2025-0", "other-2025-0").replace("ACME-", "OTHER-"))
    result = workspace.run("import", "other-2025-07", str(ids["acme-2025-07"]))
    assert result.exit_code == 1 and "acme-2025-07" in result.stderr


def test_state_mv_with_renamed_spec_gives_an_empty_plan(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    workspace.write("specs/acme.yaml", SPEC.replace("  acme-2025-07:", "  acme/2025-07:"))
    assert workspace.run("state", "mv", "acme-2025-07", "acme/2025-07").exit_code == 0
    assert workspace.state()["invoices"]["acme/2025-07"]["id"] == ids["acme-2025-07"]
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output


def test_state_rm_then_plan_blocks_the_create_of_a_number_campfire_has(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    assert workspace.run("state", "rm", "acme-2025-07").exit_code == 0
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output  # blocked changes are not changes apply would make
    assert "! acme-2025-07" in plan.stdout
    assert f"already exists in Campfire (id {ids['acme-2025-07']})" in plan.stdout
    assert f"invoicesync import acme-2025-07 {ids['acme-2025-07']}" in plan.stdout
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    assert len(sandbox_server.invoices()) == 2  # no second ACME-2025-07
    assert workspace.run("import", "acme-2025-07", str(ids["acme-2025-07"])).exit_code == 0
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_target_limits_apply_to_matching_addresses(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", SPEC)
    assert workspace.run("apply", "--auto-approve", "--target", "*-07").exit_code == 0
    assert [i["invoice_number"] for i in sandbox_server.invoices()] == ["ACME-2025-07"]


def test_replace_voids_and_creates_anew(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    ids = _applied(workspace)
    plan = workspace.run("plan", "--replace", "acme-2025-07")
    assert "replace" in plan.stdout
    assert workspace.run("apply", "--auto-approve", "--replace", "acme-2025-07").exit_code == 0
    new_id = workspace.state()["invoices"]["acme-2025-07"]["id"]
    assert new_id != ids["acme-2025-07"]
    statuses = {i["id"]: i["status"] for i in sandbox_server.invoices()}
    assert statuses[new_id] == "open"
    old = sandbox_server.request("GET", f"/coa/api/v1/invoice/{ids['acme-2025-07']}/").json()
    assert old["status"] == "voided" or old["payment_status"] == "voided"

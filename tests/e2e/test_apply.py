"""apply end to end: the real CLI against the sandbox over loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tests.e2e.conftest import API_KEY, SandboxServer, Workspace

TWO_INVOICES = """\
defaults:
  entity: 54
  client: 33973
  currency: USD
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
        quantity: 3
        rate: 0.1
"""


def _by_number(server: SandboxServer) -> dict[str, dict[str, Any]]:
    return {inv["invoice_number"]: inv for inv in server.invoices()}


def test_apply_creates_each_invoice_once_and_records_its_id(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    remote = _by_number(sandbox_server)
    assert sorted(remote) == ["ACME-2025-07", "ACME-2025-08"]
    state = workspace.state()
    assert state["invoices"]["acme-2025-07"]["id"] == remote["ACME-2025-07"]["id"]
    assert str(remote["ACME-2025-08"]["total_amount"]) == "0.3"
    assert remote["ACME-2025-07"]["source"] == "invoicesync"
    assert remote["ACME-2025-07"]["source_id"] == f"{state['lineage']}/acme-2025-07"
    assert API_KEY not in (workspace.root / "state" / "e2e.json").read_text()


def test_second_apply_is_a_no_op(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    second = workspace.run("apply", "--auto-approve")
    assert second.exit_code == 0
    assert "No changes" in second.stdout
    assert len(sandbox_server.invoices()) == 2
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_changed_spec_updates_the_invoice_in_place(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    before = _by_number(sandbox_server)["ACME-2025-07"]
    workspace.write("specs/acme.yaml", TWO_INVOICES.replace("rate: 50", "rate: 60"))
    plan = workspace.run("plan", "--detailed-exitcode")
    assert plan.exit_code == 2
    assert "lines[0].rate" in plan.stdout
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    after = _by_number(sandbox_server)["ACME-2025-07"]
    assert after["id"] == before["id"]
    assert str(after["total_amount"]) == "65"
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def _remove_second(text: str) -> str:
    return text[: text.index("  acme-2025-08:")]


def test_removed_spec_voids_by_default(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/acme.yaml", _remove_second(TWO_INVOICES))
    plan = workspace.run("plan")
    assert "void" in plan.stdout
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    with sandbox_server.http() as http:
        invoice_id = [i for i in sandbox_server.invoices() if i["invoice_number"] == "ACME-2025-08"][0]["id"]
        voided = http.get(f"/coa/api/v1/invoice/{invoice_id}/").json()
    assert voided["status"] == "voided" or voided["payment_status"] == "voided"
    assert "acme-2025-08" not in workspace.state()["invoices"]
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


def test_removed_spec_with_on_remove_delete_deletes(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    spec = TWO_INVOICES.replace("        tax: 5\n", "        tax: 5\n    lifecycle:\n      on_remove: delete\n")
    workspace.write("specs/acme.yaml", spec)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/acme.yaml", spec.replace("  acme-2025-07:", "  acme-2025-07-renamed-away:").split("  acme-2025-07-renamed-away:")[0] + "  acme-2025-08:" + spec.split("  acme-2025-08:")[1])
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert sorted(_by_number(sandbox_server)) == ["ACME-2025-08"]


def test_removed_spec_with_on_remove_forget_leaves_the_invoice(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    spec = TWO_INVOICES.replace("        rate: 0.1\n", "        rate: 0.1\n    lifecycle:\n      on_remove: forget\n")
    workspace.write("specs/acme.yaml", spec)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/acme.yaml", _remove_second(spec))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    remote = _by_number(sandbox_server)["ACME-2025-08"]
    assert remote["status"] == "open"
    assert "acme-2025-08" not in workspace.state()["invoices"]


def test_prevent_destroy_fails_the_plan_and_changes_nothing(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    spec = TWO_INVOICES.replace("        rate: 0.1\n", "        rate: 0.1\n    lifecycle:\n      prevent_destroy: true\n")
    workspace.write("specs/acme.yaml", spec)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    serial = workspace.state()["serial"]
    workspace.write("specs/acme.yaml", _remove_second(spec))
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "acme-2025-08" in result.stderr and "prevent_destroy" in result.stderr
    assert "Traceback" not in result.output
    assert workspace.state()["serial"] == serial
    assert all(i["status"] == "open" for i in sandbox_server.invoices())


def test_saved_plan_applies_exactly_that_plan_without_a_prompt(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("plan", "--out", str(workspace.root / "plan.json")).exit_code == 0
    saved = json.loads((workspace.root / "plan.json").read_text())
    assert API_KEY not in json.dumps(saved)
    result = workspace.run("apply", str(workspace.root / "plan.json"))
    assert result.exit_code == 0, result.output
    assert len(sandbox_server.invoices()) == 2


def test_stale_saved_plan_is_refused(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("plan", "--out", str(workspace.root / "plan.json")).exit_code == 0
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    result = workspace.run("apply", str(workspace.root / "plan.json"))
    assert result.exit_code == 1
    assert "stale" in result.stderr
    assert len(sandbox_server.invoices()) == 2


def test_saved_plan_is_refused_when_specs_changed(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    assert workspace.run("plan", "--out", str(workspace.root / "plan.json")).exit_code == 0
    workspace.write("specs/acme.yaml", TWO_INVOICES.replace("rate: 50", "rate: 70"))
    result = workspace.run("apply", str(workspace.root / "plan.json"))
    assert result.exit_code == 1
    assert "specs" in result.stderr
    assert sandbox_server.invoices() == []


def test_apply_without_terminal_or_auto_approve_refuses(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    result = workspace.run_process("apply")
    assert result.exit_code == 1
    assert "--auto-approve" in result.stderr
    assert sandbox_server.invoices() == []


def test_second_apply_fails_at_once_while_the_state_is_locked(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    (workspace.root / "state").mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from invoicesync.state import StateStore\n"
            f"store = StateStore(Path({str(workspace.root / 'state')!r}), 'e2e')\n"
            "with store.lock('apply'):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(30)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = workspace.run("apply", "--auto-approve")
        assert time.monotonic() - started < 5
        assert result.exit_code == 1
        assert f"pid {holder.pid}" in result.stderr
        assert sandbox_server.invoices() == []
    finally:
        holder.kill()
        holder.wait()
    assert workspace.run("apply", "--auto-approve", "--lock-timeout", "5").exit_code == 0


def test_corrupt_state_is_an_error_and_is_left_untouched(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    path = workspace.write("state/e2e.json", '{"format_version": 1, "lineage": ')
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "e2e.json" in result.stderr
    assert "Traceback" not in result.output
    assert path.read_text() == '{"format_version": 1, "lineage": '
    assert sandbox_server.invoices() == []


def test_rejected_invoice_is_reported_against_its_spec_and_others_still_land(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES.replace("      - product: 2545\n        description: Platform subscription, August", "      - product: 999\n        description: Platform subscription, August"))
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "acme-2025-08" in result.output and "lines[0].product" in result.output
    assert "specs/acme.yaml" in result.output
    assert sorted(_by_number(sandbox_server)) == ["ACME-2025-07"]
    assert sorted(workspace.state()["invoices"]) == ["acme-2025-07"]


def test_missing_api_key_names_the_variable(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/acme.yaml", TWO_INVOICES)
    workspace.env = {"CAMPFIRE_API_KEY": ""}
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "CAMPFIRE_API_KEY" in result.stderr

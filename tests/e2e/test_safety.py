"""Safety rails found in review: each would otherwise lose, duplicate or wrongly change an invoice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoicesync.client import CampfireClient, InvoiceLookup
from invoicesync.errors import ApiError
from invoicesync.models import dumps_json, loads_json
from tests.e2e.conftest import API_KEY, SandboxServer, Workspace
from tests.e2e.specs import ONE, SECOND



def _sandbox_workspace(tmp_path: Path, capsys: Any) -> Workspace:
    """A workspace on the embedded sandbox, which honours Idempotency-Key (replays a reused key)."""
    ws = Workspace(tmp_path / "ws", env={}, capsys=capsys)
    (ws.root / "specs").mkdir(parents=True)
    ws.write("invoicesync.toml", 'default_environment = "dev"\n[environments.dev]\nendpoint = "sandbox"\n')
    return ws


def _sandbox_invoices(ws: Workspace) -> dict[int, dict[str, Any]]:
    from invoicesync.sandbox import Sandbox

    return {int(i["id"]): i for i in Sandbox(data_file=ws.root / "state" / "dev.sandbox.json").invoices()}


def test_a_removed_then_restored_spec_creates_a_new_invoice(tmp_path: Path, capsys: Any) -> None:
    ws = _sandbox_workspace(tmp_path, capsys)
    ws.write("specs/a.yaml", ONE.replace("{extra}", SECOND))
    assert ws.run("apply", "--auto-approve").exit_code == 0
    first = ws.state("dev")["invoices"]["inv-b"]["id"]
    ws.write("specs/a.yaml", ONE.replace("{extra}", ""))
    assert ws.run("apply", "--auto-approve").exit_code == 0
    ws.write("specs/a.yaml", ONE.replace("{extra}", SECOND))
    assert ws.run("apply", "--auto-approve").exit_code == 0
    second = ws.state("dev")["invoices"]["inv-b"]["id"]
    assert second != first
    invoices = _sandbox_invoices(ws)
    assert invoices[first]["status"] == "voided" and invoices[second]["status"] == "open"
    assert ws.run("plan", "--detailed-exitcode").exit_code == 0


def test_replace_with_on_remove_forget_leaves_the_old_invoice_alone(tmp_path: Path, capsys: Any) -> None:
    ws = _sandbox_workspace(tmp_path, capsys)
    ws.write("specs/a.yaml", ONE.replace("{extra}", "    lifecycle: {on_remove: forget, prevent_destroy: true}\n"))
    assert ws.run("apply", "--auto-approve").exit_code == 0
    old = ws.state("dev")["invoices"]["inv-a"]["id"]
    result = ws.run("apply", "--auto-approve", "--replace", "inv-a")
    assert result.exit_code == 0, result.output
    new = ws.state("dev")["invoices"]["inv-a"]["id"]
    invoices = _sandbox_invoices(ws)
    assert new != old
    assert invoices[old]["status"] == "open" and invoices[new]["status"] == "open"


def test_a_paid_invoice_is_never_deleted_even_without_refresh(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", "    lifecycle: {on_remove: delete}\n" + SECOND))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    paid_id = workspace.state()["invoices"]["inv-a"]["id"]
    paid = sandbox_server.request("POST", f"/coa/api/v1/invoice/{paid_id}/pay/", {"empty_transactions": [
        {"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": 40, "payment_date": "2025-07-10"}]})
    assert paid.status_code == 200, paid.text
    workspace.write("specs/a.yaml", "invoices:\n" + SECOND)
    result = workspace.run("apply", "--auto-approve", "--refresh=false")
    assert result.exit_code == 1
    assert "paid" in result.output
    assert sandbox_server.request("GET", f"/coa/api/v1/invoice/{paid_id}/").status_code == 200
    assert "inv-a" in workspace.state()["invoices"]


def test_a_state_is_never_used_against_another_campfire(tmp_path: Path, capsys: Any, sandbox_server: SandboxServer) -> None:
    ws = _sandbox_workspace(tmp_path, capsys)
    ws.write("specs/a.yaml", ONE.replace("{extra}", ""))
    assert ws.run("apply", "--auto-approve").exit_code == 0
    ws.env = {"CAMPFIRE_BASE_URL": sandbox_server.url, "CAMPFIRE_API_KEY": API_KEY}
    for command in (["plan"], ["apply", "--auto-approve"], ["refresh"]):
        result = ws.run(*command)
        assert result.exit_code == 1, command
        assert "sandbox" in result.stderr and sandbox_server.url in result.stderr
    assert sandbox_server.invoices() == []


def test_an_api_key_with_a_line_break_is_refused_without_showing_it(workspace: Workspace) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    workspace.env = {"CAMPFIRE_API_KEY": "supersecret-key-1234\r\nX"}
    result = workspace.run("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "CAMPFIRE_API_KEY" in result.stderr and "supersecret" not in result.output


def test_a_saved_plan_cannot_be_changed_by_plan_flags(workspace: Workspace) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    assert workspace.run("plan", "--out", "plan.json").exit_code == 0
    assert (workspace.root / "plan.json").exists()  # relative to the workspace, as with git -C
    for flag in (["--target", "inv-a"], ["--replace", "inv-a"], ["--refresh=false"]):
        result = workspace.run("apply", "plan.json", *flag)
        assert result.exit_code == 1 and "saved plan" in result.stderr, flag


def test_apply_json_without_auto_approve_is_refused(workspace: Workspace) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    result = workspace.run("apply", "--json")
    assert result.exit_code == 1 and "--auto-approve" in result.stderr


def test_a_create_refused_after_a_lost_reply_stays_unresolved() -> None:
    """A 409 after a timed-out POST does not prove nothing was created: the error says so."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "GET":
            return httpx.Response(200, json={"count": 0, "next": None, "previous": None, "results": []})
        if calls.count("POST") == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(409, json={"detail": "Idempotency-Key in use."})

    client = CampfireClient("https://api.example.test", "k" * 20, transport=httpx.MockTransport(handler), backoff_base=0)
    body = loads_json('{"entity": 54, "client": 1, "invoice_date": "2025-07-01", "source_id": "L/a", "lines": []}')

    async def create() -> None:
        async with client:
            await client.create_invoice(body, idempotency_key="k1", lookup=InvoiceLookup.from_body(body))

    with pytest.raises(ApiError) as caught:
        asyncio.run(create())
    assert caught.value.status == 409 and caught.value.uncertain


def test_force_unlock_refuses_to_break_a_live_runs_lock(workspace: Workspace) -> None:
    import subprocess
    import sys

    (workspace.root / "state").mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time\nfrom pathlib import Path\nfrom invoicesync.state import StateStore\n"
            f"store = StateStore(Path({str(workspace.root / 'state')!r}), 'e2e')\n"
            "with store.lock('apply'):\n    print('locked', flush=True)\n    time.sleep(30)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = workspace.run("force-unlock")
        assert result.exit_code == 1 and f"pid {holder.pid}" in result.stderr
        assert (workspace.root / "state" / "e2e.lock").exists()
    finally:
        holder.kill()
        holder.wait()
    assert workspace.run("force-unlock").exit_code == 0  # the holder is gone: a stale file may go


def test_show_works_offline_beside_an_unfinished_journal(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    journal = workspace.root / "state" / "e2e.journal"
    journal.write_text('{"op": "removed", "address": "inv-a", "id": 1, "time": "2025-07-25T18:54:43+00:00"}\n')
    workspace.env["CAMPFIRE_BASE_URL"] = "http://127.0.0.1:9"  # a dead server: show must not need it
    shown = workspace.run("show")
    assert shown.exit_code == 0, shown.output
    assert "unfinished" in shown.stderr
    assert journal.exists()  # reading never settles a journal


def test_a_forgotten_invoice_is_never_taken_for_its_re_added_spec(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", "    lifecycle: {on_remove: forget}\n"))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    forgotten = workspace.state()["invoices"]["inv-a"]["id"]
    workspace.write("specs/a.yaml", "invoices: {}\n")
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    # Renumbered: the forgotten invoice still holds A-1, and a create of A-1 would be blocked as existing.
    workspace.write("specs/a.yaml", ONE.replace("{extra}", "").replace("A-1", "A-2"))
    # Seeded so that the create fails with a 5xx before committing and the look-up that follows
    # succeeds: the forgotten invoice has the same source_id and is open, and must not be taken.
    sandbox_server.set_faults(fail_rate=0.5, seed=1)
    workspace.env["INVOICESYNC_RETRY_BASE"] = "0.001"
    applied = workspace.run("apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert sandbox_server.sandbox.stats().get("failed", 0) >= 1
    recorded = workspace.state()["invoices"]["inv-a"]["id"]
    assert recorded != forgotten
    assert {i["id"] for i in sandbox_server.invoices()} == {forgotten, recorded}


def test_a_refused_replace_of_a_paid_invoice_leaves_nothing_to_settle(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    paid_id = workspace.state()["invoices"]["inv-a"]["id"]
    sandbox_server.request("POST", f"/coa/api/v1/invoice/{paid_id}/pay/", {"empty_transactions": [
        {"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": 10, "payment_date": "2025-07-10"}]})
    result = workspace.run("apply", "--auto-approve", "--refresh=false", "--replace", "inv-a")
    assert result.exit_code == 1
    assert "partly paid" in result.output and "not voided" in result.output
    assert not (workspace.root / "state" / "e2e.journal").exists()
    assert workspace.state()["invoices"]["inv-a"]["id"] == paid_id
    assert len(sandbox_server.invoices()) == 1


def test_the_state_never_records_credentials_of_the_api_url(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", ""))
    host_port = sandbox_server.url.removeprefix("http://")
    workspace.env["CAMPFIRE_BASE_URL"] = f"http://proxyuser:s3cret-pw@{host_port}"
    workspace.run("apply", "--auto-approve")
    text = (workspace.root / "state" / "e2e.json").read_text()
    assert "s3cret-pw" not in text and f'"endpoint": "http://{host_port}"' in text


def test_a_state_with_one_id_under_two_addresses_is_refused_and_state_rm_repairs_it(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    workspace.write("specs/a.yaml", ONE.replace("{extra}", SECOND))
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    path = workspace.root / "state" / "e2e.json"
    state = loads_json(path.read_text())
    state["invoices"]["inv-b"]["id"] = state["invoices"]["inv-a"]["id"]  # a bad merge of two branches, say
    path.write_text(dumps_json(state, pretty=True))
    refused = workspace.run("plan")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert '"inv-a" and "inv-b"' in refused.stderr and "invoicesync state rm" in refused.stderr
    assert workspace.run("state", "rm", "inv-b").exit_code == 0
    repaired = loads_json(path.read_text())
    assert repaired["invoices"]["inv-a"]["id"] not in repaired["retired"]  # still held by inv-a: not let go
    assert workspace.run("plan").exit_code == 0

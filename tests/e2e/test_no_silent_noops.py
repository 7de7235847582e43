"""Runs that change nothing write nothing; recovery waits out a dead run's settle window; reading never waits."""

from __future__ import annotations

import threading
import time
from typing import Any

from invoicesync.client import InvoiceLookup
from invoicesync.models import dumps_json, loads_json
from tests.e2e.conftest import SandboxServer, Workspace
from tests.e2e.specs import ONE as ONE_TEMPLATE

ONE = ONE_TEMPLATE.replace("{extra}", "")

LATER = """\
  inv-b:
    entity: 54
    client: 33974
    invoice_date: 2025-07-02
    terms: net_30
    lines:
      - {product: 2546, description: Support, quantity: 1, rate: 25}
"""


def _state_files(workspace: Workspace) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workspace.root / "state").iterdir()) if p.suffix != ".lock"}


def test_an_apply_that_changes_nothing_leaves_the_state_untouched(workspace: Workspace) -> None:
    workspace.write("specs/a.yaml", ONE)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    before = _state_files(workspace)
    again = workspace.run("apply", "--auto-approve")
    assert again.exit_code == 0, again.output
    assert "No changes" in again.stdout
    assert _state_files(workspace) == before  # serial, backup and all


def test_a_refresh_that_finds_nothing_new_leaves_the_state_untouched(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    before = _state_files(workspace)
    assert workspace.run("refresh").exit_code == 0
    assert _state_files(workspace) == before
    # Drift is news: then the refresh writes it.
    invoice_id = workspace.state()["invoices"]["inv-a"]["id"]
    assert sandbox_server.request("PATCH", f"/coa/api/v1/invoice/{invoice_id}/", {"invoice_number": "A-1-renumbered"}).status_code == 200
    assert workspace.run("refresh").exit_code == 0
    assert workspace.state()["serial"] == loads_json(before["e2e.json"])["serial"] + 1


def test_a_first_apply_against_a_dead_endpoint_binds_no_state(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    workspace.write("specs/a.yaml", ONE)
    workspace.env["CAMPFIRE_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens there
    workspace.env["INVOICESYNC_RETRY_BASE"] = "0.001"
    dead = workspace.run("apply", "--auto-approve")
    assert dead.exit_code == 1
    assert "Traceback" not in dead.output
    assert not (workspace.root / "state" / "e2e.json").exists()
    assert not (workspace.root / "state" / "e2e.journal").exists()
    del workspace.env["CAMPFIRE_BASE_URL"]
    live = workspace.run("apply", "--auto-approve")  # the real endpoint is not refused as "another Campfire"
    assert live.exit_code == 0, live.output
    assert len(sandbox_server.invoices()) == 1


def _lost_create(workspace: Workspace) -> dict[str, Any]:
    """Journal a create of inv-b as a run that died right after sending it would have left it."""
    saved = workspace.run("plan", "--out", "plan.json")
    assert saved.exit_code == 0, saved.output
    plan = loads_json((workspace.root / "plan.json").read_text())
    change = next(c for c in plan["changes"] if c["address"] == "inv-b")
    body = dict(change["body"])
    body.setdefault("source", "invoicesync")
    body.setdefault("source_id", f"{plan['lineage']}/inv-b")
    record = {
        "op": "intent", "address": "inv-b", "digest": change["digest"], "idempotency_key": "k-lost",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "lookup": InvoiceLookup.from_body(body).to_dict(), "body": body, "lifecycle": {}, "replaces": None,
        "lineage": plan["lineage"],
    }
    (workspace.root / "state" / "e2e.journal").write_text(dumps_json(record) + "\n")
    return body


def _land_later(sandbox_server: SandboxServer, body: dict[str, Any], delay: float) -> threading.Thread:
    """Campfire commits the lost create ``delay`` seconds from now (behind a gateway that gave up on it)."""

    def land() -> None:
        time.sleep(delay)
        assert sandbox_server.request("POST", "/coa/api/v1/invoice/", body).status_code == 201

    thread = threading.Thread(target=land, daemon=True)
    thread.start()
    return thread


def _with_settle(workspace: Workspace, seconds: float) -> None:
    path = workspace.root / "pyproject.toml"
    path.write_text(path.read_text().replace("settle = 0.5 ", f"settle = {seconds} "))


def test_recovery_waits_out_the_window_and_adopts_a_create_that_lands_late(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    _with_settle(workspace, 3)
    workspace.write("specs/a.yaml", ONE)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/a.yaml", ONE + LATER)
    body = _lost_create(workspace)
    lander = _land_later(sandbox_server, body, 1.0)  # after recovery's first look-up, inside the window
    started = time.monotonic()
    applied = workspace.run("apply", "--auto-approve")
    lander.join()
    assert applied.exit_code == 0, applied.output
    assert time.monotonic() - started >= 2.0  # it waited rather than failing or creating
    assert "to settle" in applied.stderr
    matching = [i for i in sandbox_server.invoices() if i["source_id"] == body["source_id"]]
    assert len(matching) == 1
    assert workspace.state()["invoices"]["inv-b"]["id"] == matching[0]["id"]
    assert "No changes" in applied.stdout


def test_without_a_window_the_late_create_becomes_a_second_invoice(workspace: Workspace, sandbox_server: SandboxServer) -> None:
    """The control for the test above: it can fail. With settle = 0 the same lost create is made twice."""
    _with_settle(workspace, 0)
    workspace.write("specs/a.yaml", ONE)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/a.yaml", ONE + LATER)
    body = _lost_create(workspace)
    lander = _land_later(sandbox_server, body, 1.0)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    lander.join()
    assert len([i for i in sandbox_server.invoices() if i["source_id"] == body["source_id"]]) == 2


def test_an_offline_plan_never_waits_on_an_unsettled_journal(workspace: Workspace) -> None:
    _with_settle(workspace, 600)
    workspace.write("specs/a.yaml", ONE)
    assert workspace.run("apply", "--auto-approve").exit_code == 0
    workspace.write("specs/a.yaml", ONE + LATER)
    _lost_create(workspace)
    workspace.env["CAMPFIRE_BASE_URL"] = "http://127.0.0.1:9"  # a dead server: reading must not need it
    started = time.monotonic()
    for args in (("plan", "--refresh=false"), ("show",), ("state", "list")):
        result = workspace.run(*args)
        assert result.exit_code == 0, result.output
        assert "unresolved, outcome unknown: inv-b" in result.stderr
    assert time.monotonic() - started < 10
    assert (workspace.root / "state" / "e2e.journal").exists()  # reading never settles a journal

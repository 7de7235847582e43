"""apply's recovery against the in-process sandbox: what an interrupted run left in its journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from invoicesync.recovery import recover
from invoicesync.client import CampfireClient
from invoicesync.models import loads_json
from invoicesync.sandbox import DEFAULT_TOKEN, Sandbox
from invoicesync.state import InvoiceRecord, StateStore, new_state

BODY = loads_json(
    '{"entity": 54, "client": 33973, "invoice_date": "2025-07-01", "due_date": "2025-07-31",'
    ' "lines": [{"product": 2545, "quantity": 1, "rate": 50}], "source": "invoicesync", "source_id": "L/a"}'
)
STAMP = "2025-07-25T18:54:43+00:00"


def _recover_after_replace(tmp_path: Path, *, voided: bool) -> Any:
    async def run() -> Any:
        sandbox = Sandbox()
        async with CampfireClient("http://sandbox", DEFAULT_TOKEN, transport=sandbox.transport()) as client:
            result = await client.create_invoice(BODY, idempotency_key="k", lookup=_lookup())
            invoice_id = int(result.invoice["id"])
            store = StateStore(tmp_path / "state", "dev")
            state = new_state("dev")
            state.invoices["a"] = InvoiceRecord(id=invoice_id, digest="sha256:x", body=dict(BODY),
                                                created_at=STAMP, updated_at=STAMP)
            state = store.save(state)
            journal = store.open_journal()
            journal.append_sync({"op": "replacing", "address": "a", "id": invoice_id, "how": "void", "time": STAMP})
            journal.close()
            if voided:  # the run died after Campfire voided it, before the journal said so
                await client.void_invoice(invoice_id, "2025-07-26")
            recovered, _found = await recover(store, store.load(), client, settle_seconds=0)
            return invoice_id, recovered, store.has_journal()

    return asyncio.run(run())


def _lookup() -> Any:
    from invoicesync.client import InvoiceLookup

    return InvoiceLookup.from_body(BODY)


def test_a_replace_interrupted_after_its_void_leaves_the_address_to_be_created_anew(tmp_path: Path) -> None:
    invoice_id, state, journal_left = _recover_after_replace(tmp_path, voided=True)
    assert "a" not in state.invoices
    assert invoice_id in state.retired
    assert not journal_left


def test_a_replace_interrupted_before_its_void_keeps_the_live_invoice(tmp_path: Path) -> None:
    invoice_id, state, journal_left = _recover_after_replace(tmp_path, voided=False)
    assert state.invoices["a"].id == invoice_id
    assert not journal_left

"""Settling what an interrupted or uncertain run left: the journal's unresolved creates and replaces.

Owns recovery (DESIGN.md, "Creating each invoice exactly once" and "The settle window"): folding
a journal's recorded outcomes into the state, looking up creates whose outcome is unknown, waiting
out the settle window of the dead run's last sends before concluding that one never landed, and
asking Campfire how far an interrupted replace got. Never parses arguments or prints: a wait is
shown through the ``wait`` callback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from invoicesync.client import CampfireClient, InvoiceLookup
from invoicesync.errors import StateError
from invoicesync.models import Lifecycle, Locked, RemoteSnapshot
from invoicesync.state import InvoiceRecord, State, fold_journal, timestamp
from invoicesync.state.backend import Backend
from invoicesync.state.journal import Intent, Replacing

__all__ = ["recover"]


async def recover(
    store: Backend,
    state: State,
    client: CampfireClient | None,
    *,
    settle_seconds: float = 0.0,
    wait: Callable[[float, int], Awaitable[None]] | None = None,
) -> tuple[State, int]:
    """Fold a journal left by an interrupted run into the state and reconcile its unresolved creates.

    Returns the saved state and how many unresolved creates were found in Campfire. Without a client
    (no API key), unresolved creates make this fail: they cannot be settled without asking Campfire,
    and planning around them could create duplicates.

    A create sent by a run that died may still land for up to ``settle_seconds`` after it was sent
    (every send is journalled first, so the journal's last write bounds the last send). A look-up
    that finds nothing before then proves nothing: recovery waits out the rest of the window
    (``wait(seconds, count)``, asyncio.sleep by default; at most ``settle_seconds``) and looks again.
    What is still not found then never landed, and the next plan creates it.
    """
    records = store.read_journal()
    if not records:
        if store.has_journal():
            store.remove_journal()
        return state, 0
    folded, unresolved = fold_journal(state, records, allow_duplicate_ids=store.allow_duplicate_ids)
    if not unresolved:
        saved = store.save(folded)
        store.remove_journal()
        return saved, 0
    if client is None:
        raise StateError(
            f"{store.journal_name} holds {len(unresolved)} change(s) of an interrupted run whose outcome is "
            "unknown; they must be looked up in Campfire before anything else changes. Set the API key "
            "(the environment's api_key_env, CAMPFIRE_API_KEY by default) and run again."
        )
    folded = await _settle_replacements(client, folded, [r for r in unresolved if isinstance(r, Replacing)])
    # A create sent more than once has an intent per send: the last one says what was sent last.
    pending = list({r.address: r for r in unresolved if isinstance(r, Intent)}.values())
    found = await _look_up_intents(client, folded, pending)
    missing = [i for i in pending if i.address not in found]
    if missing:
        last_sign = max([_stamp(i.time) for i in missing] + [store.journal_last_write() or 0.0])
        # Bounded by the window itself, whatever the clock says of the journal's times.
        seconds = min(settle_seconds, last_sign + settle_seconds - time.time())
        if seconds > 0:
            await (wait or _sleep)(seconds, len(missing))
            found.update(await _look_up_intents(client, folded, missing))
    now = timestamp("microseconds")
    for intent in pending:
        invoice = found.get(intent.address)
        if invoice is None:
            continue
        folded.invoices[intent.address] = InvoiceRecord(
            id=int(invoice["id"]),
            digest=intent.digest,
            body=intent.body or {},
            lifecycle=Lifecycle.model_validate(intent.lifecycle or {}),
            remote=RemoteSnapshot.from_response(invoice),
            created_at=intent.time or now,
            updated_at=now,
        )
    saved = store.save(folded)
    store.remove_journal()
    return saved, len(found)


async def _settle_replacements(client: CampfireClient, state: State, replacing: Sequence[Replacing]) -> State:
    """Replaces interrupted around their void or delete: drop the old invoice's record if it is gone.

    Voided or deleted in Campfire, the address is left without a live invoice and the next plan
    creates it anew; still live, the record stays and the replace can simply be asked for again.
    """
    invoices = dict(state.invoices)
    retired = list(state.retired)
    for record in replacing:
        current = invoices.get(record.address)
        if current is None or current.id != record.id:
            continue
        invoice = await client.get_invoice(record.id)
        if invoice is None or RemoteSnapshot.from_response(invoice).locked_reason is Locked.VOIDED:
            del invoices[record.address]
            if record.id not in retired:
                retired.append(record.id)
    return state.model_copy(update={"invoices": invoices, "retired": retired})


async def _look_up_intents(client: CampfireClient, state: State, intents: Sequence[Intent]) -> dict[str, dict[str, Any]]:
    """Address -> the invoice each intent's create made, for those Campfire shows (8 look-ups at a time)."""
    semaphore = asyncio.Semaphore(8)

    async def look_up(intent: Intent) -> tuple[str, dict[str, Any] | None]:
        if intent.lookup is not None:
            lookup = InvoiceLookup.from_dict(intent.lookup)
        elif intent.body is not None:
            lookup = InvoiceLookup.from_body(intent.body)
        else:
            raise StateError(f'the journal\'s intent for "{intent.address}" says neither what was sent nor how to '
                             "find it; it was not written by invoicesync")
        async with semaphore:
            invoice = await client.find_invoice(lookup, exclude_ids=_managed_elsewhere(state, intent.address))
        return intent.address, invoice

    pairs = await asyncio.gather(*(look_up(i) for i in intents))
    return {address: invoice for address, invoice in pairs if invoice is not None}


async def _sleep(seconds: float, count: int) -> None:
    await asyncio.sleep(seconds)


def _managed_elsewhere(state: State, address: str) -> frozenset[int]:
    """Ids the state manages under other addresses, or let go: a look-up for ``address`` must never take one."""
    return frozenset(record.id for other, record in state.invoices.items() if other != address) | frozenset(state.retired)


def _stamp(value: Any) -> float:
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0

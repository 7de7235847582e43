"""Refresh: reading the managed invoices back from Campfire.

Owns ``read_back`` (address -> the invoice as Campfire holds it, or None where Campfire no longer has
it) and ``with_remote_snapshots`` (the state with those snapshots recorded). Never formats output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from invoicesync.client import CampfireClient
from invoicesync.models import RemoteSnapshot
from invoicesync.state import State

__all__ = ["read_back", "with_remote_snapshots"]


async def read_back(
    state: State, client: CampfireClient, *, addresses: Iterable[str] | None = None, parallelism: int = 8
) -> dict[str, dict[str, Any] | None]:
    """Read managed invoices back from Campfire: address -> invoice, or None where Campfire says 404."""
    wanted = sorted(state.invoices if addresses is None else addresses)
    semaphore = asyncio.Semaphore(max(1, parallelism))

    async def one(address: str) -> tuple[str, dict[str, Any] | None]:
        async with semaphore:
            return address, await client.get_invoice(state.invoices[address].id)

    pairs = await asyncio.gather(*(one(a) for a in wanted if a in state.invoices))
    return dict(pairs)


def with_remote_snapshots(state: State, remote: Mapping[str, Mapping[str, Any] | None]) -> State:
    """A copy of ``state`` whose records carry the refreshed remote snapshots.

    An invoice Campfire answered 404 for keeps its last snapshot, marked ``deleted`` (so money views
    stop counting it; the next plan creates it again).
    """
    invoices = dict(state.invoices)
    for address, invoice in remote.items():
        record = invoices.get(address)
        if record is None:
            continue
        if invoice is not None:
            snapshot = RemoteSnapshot.from_response(invoice)
        else:
            snapshot = (record.remote or RemoteSnapshot()).model_copy(update={"status": "deleted", "payment_status": "deleted"})
        invoices[address] = record.model_copy(update={"remote": snapshot})
    return state.model_copy(update={"invoices": invoices})


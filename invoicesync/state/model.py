"""The state as data: ``State``, ``InvoiceRecord``, ``LifecycleRecord`` and the rules they keep.

Owns the model of one environment's state (``format_version``, ``lineage``, ``serial``, the invoices
by address, the retired ids) and its invariants (one invoice id per address). No IO: where the
state is kept is a backend's business (``state.local``, ``state.postgres``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from invoicesync.models import RemoteSnapshot

FORMAT_VERSION = 1


class LifecycleRecord(BaseModel):
    """The spec's lifecycle as last applied (kept so that a removed spec is still handled per its lifecycle)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prevent_destroy: bool = False
    on_remove: Literal["void", "delete", "forget"] = "void"


class InvoiceRecord(BaseModel):
    """One managed invoice: its Campfire id and the request body last applied to it."""

    model_config = ConfigDict(extra="forbid")

    id: int
    digest: str  # body_digest(body)
    body: dict[str, Any]  # the wire body last applied (money as Decimal, loaded with loads_json)
    lifecycle: LifecycleRecord = Field(default_factory=LifecycleRecord)
    remote: RemoteSnapshot | None = None
    created_at: str  # ISO 8601 with offset, e.g. 2025-07-25T18:54:43+00:00
    updated_at: str


class State(BaseModel):
    """The whole state file of one environment."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    lineage: str
    serial: int = 0
    environment: str
    # Which Campfire the ids belong to ("sandbox", or the API's scheme://host[:port]); set by the
    # first run that talks to it, so the state is never applied against another Campfire by mistake.
    endpoint: str | None = None
    invoices: dict[str, InvoiceRecord] = Field(default_factory=dict)
    # Ids once managed and let go (voided, deleted, forgotten, `state rm`): a look-up for a lost
    # create must never take one of them for the new invoice, though they may share its source_id.
    retired: list[int] = Field(default_factory=list)


def timestamp(timespec: str = "seconds") -> str:
    """The current time as the state and journal write it: ISO 8601, UTC, whole seconds by default."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec=timespec)


def new_state(environment: str, lineage: str | None = None) -> State:
    """A state with nothing in it yet: ``serial`` 0 and a fresh uuid4 ``lineage`` unless one is given."""
    return State(lineage=lineage or str(uuid.uuid4()), serial=0, environment=environment)


def _validation_problems(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{loc}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def duplicate_ids(state: State) -> dict[int, list[str]]:
    """Every invoice id the state holds under more than one address: ``{id: [addresses, sorted]}``."""
    by_id: dict[int, list[str]] = {}
    for address, record in state.invoices.items():
        by_id.setdefault(record.id, []).append(address)
    return {i: sorted(addresses) for i, addresses in sorted(by_id.items()) if len(addresses) > 1}


def _addresses_text(addresses: Sequence[str]) -> str:
    quoted = [f'"{a}"' for a in addresses]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _duplicates_message(shown: str, shared: Mapping[int, Sequence[str]]) -> str:
    lines = [
        f"{shown} holds invoice {i} under {len(addresses)} addresses, {_addresses_text(addresses)}"
        for i, addresses in shared.items()
    ]
    first = next(iter(shared.values()))
    return (
        "; ".join(lines)
        + ". One Campfire invoice can be managed under one address only: a plan would change it from "
        "two specs, and removing either spec would void it for the other. Keep it under the right "
        "address and forget the others with `invoicesync state rm ADDRESS` (for example "
        f"`invoicesync state rm {first[-1]}`); the invoice stays in Campfire as it is"
    )

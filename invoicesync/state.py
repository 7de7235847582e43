"""The state file: format, atomic write, backup, lock, write-ahead journal and its folding.

Owns ``state/<environment>.json`` (pretty, sorted JSON; ``format_version``, ``lineage``, ``serial``),
``<environment>.json.backup``, the OS lock on ``<environment>.lock`` and the JSON-lines journal
``<environment>.journal``. Knows nothing about HTTP or plans: reconciling an unresolved ``intent``
with Campfire is the caller's job (``apply``); this module only says which intents are unresolved.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    invoices: dict[str, InvoiceRecord] = Field(default_factory=dict)

"""What a caller hands the client and gets back besides invoices: look-ups, create results, counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from invoicesync.client._support import _iso_date

# --- public value types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceLookup:
    """What finding an invoice whose create response was lost needs (the journal keeps it as sent).

    ``source_id`` is matched when set, else ``invoice_number``; at least one of them is required.
    """

    entity: int
    client: int | None
    invoice_date: str  # YYYY-MM-DD
    invoice_number: str | None
    source_id: str | None
    exclude_ids: tuple[int, ...] = ()  # invoices that must not be taken for this create (the one it supersedes)

    def __post_init__(self) -> None:
        if not self.source_id and not self.invoice_number:
            raise ValueError("an invoice look-up needs a source_id or an invoice_number to match on")

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, exclude_ids: tuple[int, ...] = ()) -> InvoiceLookup:
        """The look-up for a Create Invoice wire body (ids may be numeric strings, dates strings or dates)."""
        client = body.get("client")
        number = body.get("invoice_number")
        source_id = body.get("source_id")
        return cls(
            entity=int(body["entity"]),
            client=None if client is None else int(client),
            invoice_date=_iso_date(body["invoice_date"]),
            invoice_number=None if number is None else str(number),
            source_id=None if source_id is None else str(source_id),
            exclude_ids=tuple(exclude_ids),
        )

    def to_dict(self) -> dict[str, Any]:
        """The journal form: plain JSON types."""
        return {
            "entity": self.entity,
            "client": self.client,
            "invoice_date": self.invoice_date,
            "invoice_number": self.invoice_number,
            "source_id": self.source_id,
            "exclude_ids": list(self.exclude_ids),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InvoiceLookup:
        """Read back what ``to_dict`` wrote."""
        client = d.get("client")
        number = d.get("invoice_number")
        source_id = d.get("source_id")
        return cls(
            entity=int(d["entity"]),
            client=None if client is None else int(client),
            invoice_date=_iso_date(d["invoice_date"]),
            invoice_number=None if number is None else str(number),
            source_id=None if source_id is None else str(source_id),
            exclude_ids=tuple(int(i) for i in d.get("exclude_ids") or ()),
        )


# A key shorter than this cannot be a Campfire key (those are 40-character tokens); it is still
# hidden, but only where it stands as a word of its own, so that "abc" does not tear "abcdef" apart.
@dataclass
class ClientStats:
    """Counters of one client's life; never holds the API key.

    ``requests`` counts every HTTP send; ``retries`` every send that repeated an earlier one (for any
    cause, 429s included); ``throttled`` the 429 replies; ``lookups`` the ``find_invoice`` calls and
    ``found_by_lookup`` the creates whose invoice was found by one; ``throttle_wait_seconds`` the time
    throttled requests waited before being sent again (``Retry-After``), and ``pace_wait_seconds`` the
    time requests waited for a paced slot, each summed over requests.
    """

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    lookups: int = 0
    found_by_lookup: int = 0
    throttle_wait_seconds: float = 0.0
    pace_wait_seconds: float = 0.0


@dataclass(frozen=True)
class CreateResult:
    """The invoice a create produced; ``found_by_lookup`` when the reply was lost and a look-up found it."""

    invoice: dict[str, Any]
    found_by_lookup: bool
    attempts: int

"""Refresh: reading the managed invoices back from Campfire, by listing them where that is cheaper.

Owns ``read_back`` (address -> the invoice as Campfire holds it, or None where Campfire no longer has
it), ``with_remote_snapshots`` (the state with those snapshots recorded) and ``changes_outside``
(which invoices changed in Campfire since the state last saw them). Never formats output.

Reading by listing (DESIGN.md, "Talking to the API"): the managed invoices are grouped by entity and,
where every invoice of the group names one, by client (at most ``CLIENTS_PER_LISTING`` client ids in
one query), and each group is read with one list query (``entity``, ``client``, and ``start_date`` /
``end_date`` around the invoice dates last applied): a first page of ``FIRST_PAGE`` invoices, whose
``count`` comes soon, then the rest ``LOOKUP_PAGE_SIZE`` a page, read together by offset, any further
``next`` followed on the configured host only. A group's listing is given up after its first page
when that ``count`` says it would take more than one page per ``PAGES_PER_INVOICE`` of the group's
invoices (a tenant with many more invoices than the state manages); small groups are read one by
one from the start.

Then a ``GET`` by id confirms:

- every id the listing did not return: deleted (404), or moved out of the filters (its entity,
  client or date changed in Campfire), which only a GET can tell apart;
- every invoice whose applied body has a field list items omit (``LIST_OMITS``: list items use a
  lighter serializer than retrieve, API.md "List invoices").

Payments are never read from list items (API.md: read them only from retrieve); ``read_details``
reads the invoices a plan's changes depend on again by id when the listing shows them paid in part
or in full.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from invoicesync.client import LOOKUP_PAGE_SIZE, CampfireClient
from invoicesync.errors import ApiConnectionError, ApiError
from invoicesync.models import SOURCE, RemoteSnapshot
from invoicesync.plan.diff import drift_of, to_field_changes
from invoicesync.state import InvoiceRecord, State

__all__ = [
    "CLIENTS_PER_LISTING",
    "LIST_OMITS",
    "OutsideChange",
    "ReadBack",
    "changes_outside",
    "read_back",
    "read_details",
    "with_remote_snapshots",
]

#: Fields of an invoice that list items do not carry (retrieve does).
LIST_OMITS = frozenset({"payments", "payment_journal_entries", "attachments", "emails", "tags", "department"})
#: The first page of a listing: small, so that its count (which decides how the rest is read) comes soon.
FIRST_PAGE = 250
#: The most client ids one list query names (a longer query string risks a 414 from a proxy).
CLIENTS_PER_LISTING = 50
#: A group is listed while its pages are at most one per this many of its invoices (each page holds up
#: to ``LOOKUP_PAGE_SIZE`` invoices, others' included); groups smaller than this are read one by one.
PAGES_PER_INVOICE = MIN_LISTED = 4

Progress = Callable[[int], None]


@dataclass
class ReadBack:
    """What a refresh read: address -> invoice (None: Campfire no longer has it), and how it read them."""

    invoices: dict[str, dict[str, Any] | None]
    listings: int = 0  # list queries made (each possibly several pages)
    fetched: int = 0  # invoices read by id
    by_listing: set[str] = field(default_factory=set)  # addresses read from list items (no payments)
    notes: list[str] = field(default_factory=list)  # why a listing gave way to reading by id


@dataclass(frozen=True)
class _Group:
    entity: int
    clients: tuple[int, ...]  # empty: every client
    start: str | None
    end: str | None
    addresses: tuple[str, ...]

    def filters(self) -> dict[str, Any]:
        # A small first page learns the count sooner; the pages after it are large and read together.
        out: dict[str, Any] = {"entity": self.entity, "limit": min(FIRST_PAGE, LOOKUP_PAGE_SIZE)}
        if self.clients:
            out["client"] = list(self.clients)
        if self.start and self.end:
            out["start_date"], out["end_date"] = self.start, self.end
        return out


def _groups(records: Mapping[str, InvoiceRecord]) -> tuple[list[_Group], list[str]]:
    """The list queries that cover ``records``, and the addresses to read one by one."""
    direct: list[str] = []
    by_entity: dict[int, list[str]] = defaultdict(list)
    for address, record in records.items():
        entity = record.body.get("entity")
        if LIST_OMITS & record.body.keys() or not isinstance(entity, int) or isinstance(entity, bool):
            direct.append(address)
        else:
            by_entity[entity].append(address)
    groups: list[_Group] = []
    for entity, addresses in sorted(by_entity.items()):
        clients = {records[a].body.get("client") for a in addresses}
        if None in clients or not all(isinstance(c, int) for c in clients):
            chunks: list[tuple[tuple[int, ...], list[str]]] = [((), addresses)]
        else:
            ordered = sorted(c for c in clients if isinstance(c, int))
            chunks = []
            for i in range(0, len(ordered), CLIENTS_PER_LISTING):
                part = tuple(ordered[i:i + CLIENTS_PER_LISTING])
                chosen = set(part)
                chunks.append((part, [a for a in addresses if records[a].body.get("client") in chosen]))
        for clients_of, members in chunks:
            if len(members) < MIN_LISTED:
                direct.extend(members)
                continue
            dates = sorted(str(d) for a in members if (d := records[a].body.get("invoice_date")))
            groups.append(_Group(entity, clients_of, dates[0] if dates else None, dates[-1] if dates else None,
                                 tuple(sorted(members))))
    return groups, sorted(direct)


async def read_back(
    state: State,
    client: CampfireClient,
    *,
    addresses: Iterable[str] | None = None,
    parallelism: int = 8,
    on_read: Progress | None = None,
) -> ReadBack:
    """Read managed invoices back from Campfire (the ``addresses`` given, else all), listing where cheaper.

    ``on_read(n)`` is called as each batch of ``n`` invoices has been read.
    """
    wanted = sorted(state.invoices if addresses is None else (a for a in addresses if a in state.invoices))
    records = {a: state.invoices[a] for a in wanted}
    result = ReadBack({})
    groups, direct = _groups(records)
    parallelism = max(1, parallelism)
    semaphore = asyncio.Semaphore(parallelism)
    # Each listing's pages share what the parallelism allows among the listings.
    pages_at_once = max(1, parallelism // max(1, len(groups)))
    report = on_read or (lambda n: None)

    async def listing(group: _Group) -> list[str]:
        """Read a group by listing it; returns the addresses still to read by id."""
        # Worth it while it takes at most a quarter as many requests as reading the group by id.
        at_most = max(LOOKUP_PAGE_SIZE, LOOKUP_PAGE_SIZE * len(group.addresses) // PAGES_PER_INVOICE)
        try:
            async with semaphore:
                listed = await client.list_invoices_up_to(at_most, concurrency=pages_at_once,
                                                          then_limit=LOOKUP_PAGE_SIZE, **group.filters())
        except ApiConnectionError:
            raise
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            # A listing that cannot be read (a 'next' link off the configured host behind a proxy, an
            # unexpected page): the group is read by id instead, and the user told why once.
            if not result.notes:
                result.notes.append(f"Reading invoices by id instead of listing them: {exc}")
            return list(group.addresses)
        if listed is None:
            return list(group.addresses)
        result.listings += 1
        by_id = {records[a].id: a for a in group.addresses}
        found = 0
        for invoice in listed:
            if invoice.get("is_deleted"):
                continue  # read by id, as any invoice the listing does not show
            address = by_id.get(invoice.get("id"))  # type: ignore[arg-type]
            if address is not None and address not in result.invoices:
                result.invoices[address] = invoice
                found += 1
        result.by_listing.update(a for a in group.addresses if a in result.invoices)
        report(found)
        return [a for a in group.addresses if a not in result.invoices]

    rest = await asyncio.gather(*(listing(g) for g in groups))
    missing = direct + [a for addresses_ in rest for a in addresses_]
    result.invoices.update(await read_details(client, {a: records[a].id for a in missing}, parallelism=parallelism,
                                              on_read=report))
    result.fetched = len(missing)
    return result


async def read_details(
    client: CampfireClient, ids: Mapping[str, int], *, parallelism: int = 8, on_read: Progress | None = None
) -> dict[str, dict[str, Any] | None]:
    """The full invoices by id (as retrieve returns them, payments included) for ``{address: id}``; None for a 404."""
    semaphore = asyncio.Semaphore(max(1, parallelism))

    async def one(address: str, invoice_id: int) -> tuple[str, dict[str, Any] | None]:
        async with semaphore:
            invoice = await client.get_invoice(invoice_id)
        if on_read is not None:
            on_read(1)
        return address, invoice

    return dict(await asyncio.gather(*(one(a, i) for a, i in sorted(ids.items()))))


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


# --- what changed outside invoicesync -----------------------------------------------------------------


@dataclass(frozen=True)
class OutsideChange:
    """One managed invoice that Campfire shows differently from what the state last saw."""

    address: str
    invoice_id: int
    what: tuple[str, ...]  # each a short phrase: "deleted", "status open -> paid", "lines[0].rate 50 -> 60"


_SNAPSHOT_FIELDS = ("status", "payment_status", "amount_paid", "amount_due", "total_amount", "invoice_number",
                    "currency", "voided_date")


def changes_outside(state: State, remote: Mapping[str, Mapping[str, Any] | None]) -> list[OutsideChange]:
    """The invoices whose refreshed form differs from the state: deleted, paid, voided, edited in Campfire."""
    out: list[OutsideChange] = []
    for address, live in sorted(remote.items()):
        record = state.invoices.get(address)
        if record is None:
            continue
        if live is None:
            if record.remote is None or record.remote.status != "deleted":
                out.append(OutsideChange(address, record.id, ("deleted in Campfire",)))
            continue
        what: list[str] = []
        # invoicesync's own marks are bookkeeping (an invoice adopted by import lacks them), as in the plan.
        marks = ("source", "source_id") if record.body.get("source") == SOURCE else ()
        drift, _view = drift_of(record.body, live, ignore=marks)
        for change in to_field_changes(drift):
            what.append(f"{change.path} {_short(change.before)} -> {_short(change.after)}")
        before = record.remote
        after = RemoteSnapshot.from_response(live)
        if before is not None:
            for name in _SNAPSHOT_FIELDS:
                old, new = getattr(before, name), getattr(after, name)
                if old != new and not (name == "invoice_number" and drift):
                    what.append(f"{name} {_short(old)} -> {_short(new)}")
            if not what and before.last_modified_at and after.last_modified_at != before.last_modified_at:
                what.append(f"modified at {after.last_modified_at} (fields invoicesync does not manage)")
        if what:
            out.append(OutsideChange(address, record.id, tuple(what)))
    return out


def _short(value: Any, width: int = 40) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."

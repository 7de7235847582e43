"""The journal protocol: the records a run writes before and after each change, and folding them into the state.

Owns what a journal record is (``intent``, ``created``, ``updated``, ``removed``, ``abandoned``,
``replacing``), which state it belongs to (its ``lineage``), and ``fold_journal``: which outcomes a
journal recorded and which intents it leaves unresolved. Where the records are kept (a JSON-lines
file, PostgreSQL rows) is a backend's business; reconciling unresolved intents with Campfire is
``recovery``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from invoicesync.errors import StateError
from invoicesync.state.model import InvoiceRecord, State, _addresses_text, _validation_problems, duplicate_ids

JOURNAL_OPS = frozenset({"intent", "created", "updated", "removed", "abandoned", "replacing"})


def _plain(value: Any) -> Any:
    """A journal record value ready for JSON: pydantic models and dataclasses become dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class JournalEntry(dict[str, Any]):
    """One journal record as read from the file: the record itself, plus where it was (file and line)."""

    __slots__ = ("source", "line")

    def __init__(self, record: Mapping[str, Any], *, source: str, line: int) -> None:
        super().__init__(record)
        self.source = source
        self.line = line


# --- folding the journal into the state ------------------------------------------------------------


def _where(index: int, record: Mapping[str, Any]) -> str:
    """Where a record is: ``state/sandbox.journal, line 7`` when read from the file, else its position."""
    if isinstance(record, JournalEntry):
        return f"{record.source}, line {record.line}"
    return f"journal record {index + 1}"


def _record_problem(index: int, record: Mapping[str, Any], problem: str) -> StateError:
    return StateError(
        f"{_where(index, record)} ({record.get('op')} {record.get('address')!r}) is not valid: {problem}; "
        "repair that line by hand and run again (deleting the whole journal forgets the invoices it recorded)"
    )


def _require(index: int, record: Mapping[str, Any], *keys: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise _record_problem(index, record, "missing " + ", ".join(missing))
    if not isinstance(record["address"], str):
        raise _record_problem(index, record, "address is not a string")


def _require_id(index: int, record: Mapping[str, Any], *, optional: bool = False) -> None:
    """The record's ``id`` is a Campfire invoice id: an integer (never a string, a float or a boolean)."""
    value = record.get("id")
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _record_problem(
            index, record, f"id: Input should be a valid integer (the Campfire invoice id), not {value!r}"
        )


def _invoice_record(index: int, record: Mapping[str, Any], fields: Mapping[str, Any]) -> InvoiceRecord:
    try:
        return InvoiceRecord.model_validate(fields)
    except ValidationError as exc:
        raise _record_problem(index, record, _validation_problems(exc)) from exc


def _foreign(record: Mapping[str, Any], lineage: str) -> bool:
    """Whether a record was stamped by another state (records of older versions carry no lineage)."""
    return "lineage" in record and record["lineage"] != lineage


def _foreign_message(record: Mapping[str, Any], theirs: Any, ours: str) -> str:
    source = record.source if isinstance(record, JournalEntry) else "the journal"
    line = f" (line {record.line})" if isinstance(record, JournalEntry) else ""
    return (
        f"{source} belongs to another state: its records{line} carry lineage {theirs}, this state's is "
        f"{ours}. It was probably copied from another workspace or environment. Move {source} away "
        "(to the workspace it came from) to continue; nothing was changed"
    )


def fold_journal(
    state: State, records: Sequence[Mapping[str, Any]], *, allow_duplicate_ids: bool = False
) -> tuple[State, list[dict[str, Any]]]:
    """Fold journal outcomes into ``state``; return the new state and the intents still unresolved.

    Pure: ``state`` is not changed (unchanged invoice records are shared) and the serial is not
    bumped (``save`` does that). Folding is idempotent, so a journal folded into a state that was
    saved before the journal could be removed folds to the same state again.

    - ``created``: the address gets a new record (``created_at`` = ``updated_at`` = the record's time).
    - ``updated``: body, digest, lifecycle and remote are replaced (those present in the record),
      ``updated_at`` is the record's time, ``created_at`` is kept; an unknown address is added.
    - ``removed``: the address is dropped, if its record still has that ``id`` (after a replace, the
      new invoice's record must survive the void of the old one).
    - ``intent``: waits for a later ``created`` or ``abandoned`` with the same address and digest
      (any digest when the outcome has none); every earlier matching intent is resolved by it, since a
      retried create carries the same idempotency key. The rest are returned, in journal order, for
      the caller to reconcile with Campfire.
    - ``replacing``: a replace is about to void or delete ``id``; resolved by the ``removed`` of that
      id. Unresolved, it is returned too: the run died around the void, and only Campfire knows
      whether the old invoice is still live.

    Raises ``StateError`` naming the record (its journal line, for records read by ``read_journal``)
    for a malformed record (an ``id`` that is not an integer, say), for a record stamped with another
    state's ``lineage`` (records without one, from older versions, are accepted), and when the records
    would leave one invoice id under two addresses that did not share it before (unless
    ``allow_duplicate_ids``, for the state surgery that repairs such a state).
    """
    for index, record in enumerate(records):
        if _foreign(record, state.lineage):
            raise StateError(_foreign_message(record, record.get("lineage"), state.lineage))
    invoices = dict(state.invoices)
    given_by: dict[str, int] = {}  # address -> the index of the last record that gave it an id
    retired = list(state.retired)
    pending: list[tuple[int, Mapping[str, Any]]] = []

    def resolve(address: str, digest: Any) -> None:
        pending[:] = [
            (i, intent)
            for i, intent in pending
            if not (
                intent.get("op") == "intent"
                and intent.get("address") == address
                and (digest is None or intent.get("digest") == digest)
            )
        ]

    for index, record in enumerate(records):
        op = record.get("op")
        if op == "intent":
            _require(index, record, "address", "digest")
            pending.append((index, record))
        elif op == "created":
            _require(index, record, "address", "id", "digest", "body", "time")
            _require_id(index, record)
            address = record["address"]
            given_by[address] = index
            invoices[address] = _invoice_record(
                index,
                record,
                {
                    "id": record["id"],
                    "digest": record["digest"],
                    "body": record["body"],
                    "lifecycle": record.get("lifecycle") or {},
                    "remote": record.get("remote"),
                    "created_at": record["time"],
                    "updated_at": record["time"],
                },
            )
            resolve(address, record["digest"])
        elif op == "updated":
            _require(index, record, "address", "id", "time")
            _require_id(index, record)
            address = record["address"]
            given_by[address] = index
            previous = invoices.get(address)
            fields: dict[str, Any] = {"id": record["id"], "updated_at": record["time"]}
            if previous is not None and previous.id == record["id"]:
                fields["created_at"] = previous.created_at
                fields["digest"] = previous.digest
                fields["body"] = previous.body
                fields["lifecycle"] = previous.lifecycle
                fields["remote"] = previous.remote
            else:
                fields["created_at"] = record["time"]
            for key in ("digest", "body", "lifecycle", "remote"):
                if key in record:
                    fields[key] = record[key] if key != "lifecycle" else (record[key] or {})
            invoices[address] = _invoice_record(index, record, fields)
        elif op == "removed":
            _require(index, record, "address")
            _require_id(index, record, optional=True)
            address = record["address"]
            current = invoices.get(address)
            if current is not None and (record.get("id") is None or current.id == record["id"]):
                del invoices[address]
                if current.id not in retired:
                    retired.append(current.id)
            pending[:] = [
                (i, r) for i, r in pending
                if not (r.get("op") == "replacing" and r.get("address") == address and r.get("id") == record.get("id"))
            ]
        elif op == "abandoned":
            _require(index, record, "address")
            _require_id(index, record, optional=True)
            if "id" in record:  # a replace whose void or delete Campfire refused
                pending[:] = [
                    (i, r) for i, r in pending
                    if not (r.get("op") == "replacing" and r.get("address") == record["address"] and r.get("id") == record["id"])
                ]
            else:
                resolve(record["address"], record.get("digest"))
        elif op == "replacing":
            _require(index, record, "address", "id")
            _require_id(index, record)
            pending.append((index, record))
        else:
            raise _record_problem(index, record, f"unknown op {op!r} (written by a newer invoicesync?)")

    folded = state.model_copy(update={"invoices": invoices, "retired": retired})
    if not allow_duplicate_ids:
        _check_no_new_duplicates(state, folded, records, given_by)
    return folded, [dict(intent) for _, intent in pending]


def _check_no_new_duplicates(
    state: State, folded: State, records: Sequence[Mapping[str, Any]], given_by: Mapping[str, int]
) -> None:
    """Refuse a fold that leaves an invoice id under an address that did not hold it alongside the others.

    Duplicates the state already had are the loader's business (``StateStore.load``), not the journal's.
    """
    shared = duplicate_ids(folded)
    if not shared:
        return
    before = duplicate_ids(state)
    for invoice_id, addresses in shared.items():
        if set(addresses) <= set(before.get(invoice_id, ())):
            continue
        culprits = [a for a in addresses if a in given_by]
        index = max(given_by[a] for a in culprits) if culprits else len(records) - 1
        record = records[index]
        address = record.get("address")
        others = [a for a in addresses if a != address]
        raise StateError(
            f"{_where(index, record)} ({record.get('op')} {address!r}) records invoice {invoice_id} for "
            f'"{address}", but the state already holds it as {_addresses_text(others)}. One Campfire invoice '
            "can be managed under one address only. Keep it under the right address and forget the "
            f"other with `invoicesync state rm ADDRESS` (for example `invoicesync state rm {address}`); "
            "the invoice stays in Campfire as it is"
        )

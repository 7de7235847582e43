"""The journal protocol: the records a run writes before and after each change, and folding them into the state.

Owns what a journal record is (``intent``, ``created``, ``updated``, ``removed``, ``abandoned``,
``replacing``), which state it belongs to (its ``lineage``), and ``fold_journal``: which outcomes a
journal recorded and which intents it leaves unresolved. Where the records are kept (a JSON-lines
file, PostgreSQL rows) is a backend's business; reconciling unresolved intents with Campfire is
``recovery``'s.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError

from invoicesync.errors import StateError
from invoicesync.models import dumps_json
from invoicesync.state.model import InvoiceRecord, State, _addresses_text, _validation_problems, duplicate_ids

JOURNAL_OPS = frozenset({"intent", "created", "updated", "removed", "abandoned", "replacing"})


# --- the records -----------------------------------------------------------------------------------


class _Record(BaseModel):
    """What every record carries: the address it is about, when, and which state wrote it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    address: StrictStr
    time: str | None = None
    # The lineage of the state the journal belongs to, stamped by the writer (absent in older journals).
    lineage: str | None = None


class Intent(_Record):
    """A create is about to be sent (written, and on disk, before every send of it)."""

    op: Literal["intent"] = "intent"
    digest: str
    idempotency_key: str | None = None
    lookup: dict[str, Any] | None = None  # client.InvoiceLookup.to_dict(): what finding it needs, as sent
    body: dict[str, Any] | None = None  # the wire body sent
    lifecycle: dict[str, Any] | None = None
    replaces: StrictInt | None = None  # the invoice this create supersedes (a replace, or one deleted outside)


class Created(_Record):
    """Campfire answered a create (or a look-up found it): the address now manages ``id``."""

    op: Literal["created"] = "created"
    id: StrictInt
    digest: str
    body: dict[str, Any]
    time: str
    lifecycle: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None


class Updated(_Record):
    """An update was made (or only the recorded lifecycle changed); fields left unset keep their recorded value."""

    op: Literal["updated"] = "updated"
    id: StrictInt
    time: str
    digest: str | None = None
    body: dict[str, Any] | None = None
    lifecycle: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None


class Removed(_Record):
    """The address's invoice was voided, deleted or forgotten."""

    op: Literal["removed"] = "removed"
    id: StrictInt | None = None


class Abandoned(_Record):
    """Campfire refused a create (``digest``) or a replace's void or delete (``id``): nothing happened."""

    op: Literal["abandoned"] = "abandoned"
    digest: str | None = None
    id: StrictInt | None = None
    reason: str | None = None


class Replacing(_Record):
    """A replace is about to void or delete ``id``; if the run dies, only Campfire knows whether it did."""

    op: Literal["replacing"] = "replacing"
    id: StrictInt
    how: str | None = None


JournalRecord = Annotated[Intent | Created | Updated | Removed | Abandoned | Replacing, Field(discriminator="op")]
#: What ``fold_journal`` leaves for recovery to settle with Campfire.
Unresolved = Intent | Replacing

_RECORD: TypeAdapter[JournalRecord] = TypeAdapter(JournalRecord)


def parse_record(data: Mapping[str, Any], index: int = 0) -> JournalRecord:
    """A journal record read back (or handed to a writer) as its type; ``StateError`` naming it when it is not one."""
    try:
        return _RECORD.validate_python(data)
    except ValidationError as exc:
        raise _record_problem(index, data, _record_errors(exc)) from None


def encode_record(record: JournalRecord | Mapping[str, Any], *, lineage: str | None = None) -> str:
    """One journal line (without its newline): the record as its type, stamped with ``lineage``.

    A mapping is validated as its type first; one that is not a journal record is a bug of the
    writer's (``ValueError``), never written.
    """
    if isinstance(record, _Record):
        typed = record
    else:
        if record.get("op") not in JOURNAL_OPS:
            raise ValueError(f"unknown journal record op {record.get('op')!r}")
        try:
            typed = _RECORD.validate_python({k: _plain(v) for k, v in record.items()})
        except ValidationError as exc:
            raise ValueError(f"not a valid {record.get('op')} record: {_record_errors(exc)}") from None
    # model_dump(exclude_unset=True), without copying every body (a journal line per send of a create).
    given = typed.model_fields_set
    values = typed.__dict__
    data = {name: values[name] for name in type(typed).model_fields if name in given}
    data["op"] = typed.op
    if lineage is not None:
        data["lineage"] = lineage
    try:
        return dumps_json(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot write a {typed.op} record for {typed.address!r}: {exc}") from exc


def _plain(value: Any) -> Any:
    """A record value as the record holds it: pydantic models and dataclasses become dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _record_errors(exc: ValidationError) -> str:
    """What is wrong with a record, as the journal's readers have always said it."""
    errors = exc.errors()
    if any(e["type"] in ("union_tag_invalid", "union_tag_not_found") for e in errors):
        op = next((e["input"].get("op") for e in errors if isinstance(e.get("input"), Mapping)), None)
        return f"unknown op {op!r} (written by a newer invoicesync?)"
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing"]
    if missing:
        return "missing " + ", ".join(missing)
    for error in errors:
        field = error["loc"][-1] if error["loc"] else None
        if field == "address":
            return "address is not a string"
        if field == "id":
            return f"id: Input should be a valid integer (the Campfire invoice id), not {error['input']!r}"
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or '(top level)'}: {e['msg']}" for e in errors[:5])


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
) -> tuple[State, list[Unresolved]]:
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
    for raw in records:
        if _foreign(raw, state.lineage):
            raise StateError(_foreign_message(raw, raw.get("lineage"), state.lineage))
    typed = [parse_record(record, index) for index, record in enumerate(records)]
    invoices = dict(state.invoices)
    given_by: dict[str, int] = {}  # address -> the index of the last record that gave it an id
    retired = list(state.retired)
    pending: list[Unresolved] = []

    def resolve_intents(address: str, digest: str | None) -> None:
        pending[:] = [
            r for r in pending
            if not (isinstance(r, Intent) and r.address == address and (digest is None or r.digest == digest))
        ]

    def resolve_replacing(address: str, invoice_id: int | None) -> None:
        pending[:] = [r for r in pending if not (isinstance(r, Replacing) and r.address == address and r.id == invoice_id)]

    for index, (raw, record) in enumerate(zip(records, typed)):
        if isinstance(record, (Intent, Replacing)):
            pending.append(record)
        elif isinstance(record, Created):
            given_by[record.address] = index
            invoices[record.address] = _invoice_record(index, raw, {
                "id": record.id, "digest": record.digest, "body": record.body, "lifecycle": record.lifecycle or {},
                "remote": record.remote, "created_at": record.time, "updated_at": record.time,
            })
            resolve_intents(record.address, record.digest)
        elif isinstance(record, Updated):
            given_by[record.address] = index
            previous = invoices.get(record.address)
            fields: dict[str, Any] = {"id": record.id, "updated_at": record.time}
            if previous is not None and previous.id == record.id:
                fields.update(created_at=previous.created_at, digest=previous.digest, body=previous.body,
                              lifecycle=previous.lifecycle, remote=previous.remote)
            else:
                fields["created_at"] = record.time
            for key in ("digest", "body", "lifecycle", "remote"):
                if key in record.model_fields_set:
                    value = getattr(record, key)
                    fields[key] = (value or {}) if key == "lifecycle" else value
            invoices[record.address] = _invoice_record(index, raw, fields)
        elif isinstance(record, Removed):
            current = invoices.get(record.address)
            if current is not None and (record.id is None or current.id == record.id):
                del invoices[record.address]
                if current.id not in retired:
                    retired.append(current.id)
            resolve_replacing(record.address, record.id)
        elif isinstance(record, Abandoned):
            if record.id is not None:  # a replace whose void or delete Campfire refused
                resolve_replacing(record.address, record.id)
            else:
                resolve_intents(record.address, record.digest)

    folded = state.model_copy(update={"invoices": invoices, "retired": retired})
    if not allow_duplicate_ids:
        _check_no_new_duplicates(state, folded, records, given_by)
    return folded, pending


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


# --- writing: one durable write shared by concurrent appends ----------------------------------------


class GroupCommitJournal(abc.ABC):
    """An open journal: ``append`` returns once its record is durable, and concurrent appends share one durable write.

    While one batch is being made durable in a worker thread (a write and an fsync, or a commit),
    records arriving meanwhile queue up and go together in the next batch. Subclasses say how a batch
    of encoded records (JSON text, one per record, in order) is made durable (``_write_batch``),
    whether the journal is open, and how it closes. ``appends`` and ``durable_writes`` count what was
    done, for tests and benchmarks.
    """

    def __init__(self, shown: str, *, lineage: str | None = None) -> None:
        self._shown = shown
        self._lineage = lineage  # stamped on every record: which state the journal belongs to
        self._broken: str | None = None  # set when a failed write may have left the journal unusable
        self._io_lock = threading.Lock()
        self._queue: list[tuple[str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.appends = 0
        self.durable_writes = 0

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the journal was closed."""

    @abc.abstractmethod
    def _write_batch(self, records: list[str]) -> None:
        """Make ``records`` durable, in order, or raise ``StateError`` (called holding the I/O lock)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the file or connection (called holding the I/O lock, once)."""

    def _encode(self, record: JournalRecord | Mapping[str, Any]) -> str:
        try:
            return encode_record(record, lineage=self._lineage)
        except TypeError as exc:
            raise StateError(f"{exc} (to {self._shown})") from exc

    def _write(self, records: list[str]) -> None:
        with self._io_lock:
            if self.closed:
                raise StateError(f"{self._shown} is closed")
            if self._broken is not None:
                raise StateError(self._broken)
            self._write_batch(records)
            self.durable_writes += 1
            self.appends += len(records)

    def append_sync(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append ``record`` and return once it is durable."""
        self._write([self._encode(record)])

    async def append(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append ``record`` and return once it is durable (sharing the durable write with concurrent calls)."""
        data = self._encode(record)
        if self.closed:
            raise StateError(f"{self._shown} is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((data, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        """Write queued records in batches, one durable write per batch, until none are left."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, [data for data, _ in batch])
            except StateError as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
            finally:
                for _, done in batch:  # only when this task itself was cancelled mid-batch
                    if not done.done():
                        done.cancel()

    def close(self) -> None:
        """Close (records already appended are durable); idempotent."""
        with self._io_lock:
            if not self.closed:
                self._close()

    async def aclose(self) -> None:
        """Wait for queued appends to land, then close."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

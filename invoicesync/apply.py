"""Carrying out a plan through Campfire, recording every outcome through the state journal as it lands.

Owns: executing a ``Plan`` with bounded concurrency (creates exactly once, waiting out the settle
window of a create whose answer was lost; updates by PATCH after a look-up; removals per lifecycle),
and import (adopting an existing invoice). What an
interrupted run left is settled by ``recovery``. Never parses arguments or formats output: progress
is reported through callbacks of ``Outcome`` values and settle waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from invoicesync.client import CampfireClient, InvoiceLookup
from invoicesync.errors import (
    ApiConnectionError,
    ApiError,
    CreateUnsettled,
    NotFoundError,
    StateError,
    UsageError,
)
from invoicesync.models import (
    DesiredInvoice,
    Locked,
    OnRemove,
    RemoteSnapshot,
    body_digest,
    project_remote,
    with_source,
)
from invoicesync.plan import Action, ApplyResult, Change, Outcome, Plan
from invoicesync.state import InvoiceRecord, State, fold_journal, timestamp
from invoicesync.state.backend import Backend, JournalWriter
from invoicesync.state.journal import Abandoned, Created, Intent, Removed, Replacing, Updated

OutcomeCallback = Callable[[Outcome], None]
#: Called with (address, time.monotonic() deadline) when a create starts waiting out its settle window.
WaitCallback = Callable[[str, float], None]



def _now() -> str:
    # Microseconds kept: recovery measures how old an intent is.
    return timestamp("microseconds")


def idempotency_key(lineage: str, serial: int, address: str, digest: str) -> str:
    """The ``Idempotency-Key`` of one create: the same for every retry of it within one plan.

    The state's ``serial`` (as planned) is part of it, so that creating the same body for the same
    address again later (after a removal, a replace, or a delete outside invoicesync) is a new
    request, never a replay of the first create's response.
    """
    raw = f"{lineage}\n{serial}\n{address}\n{digest}"
    return "invoicesync-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def _snapshot(invoice: Mapping[str, Any]) -> dict[str, Any]:
    return RemoteSnapshot.from_response(invoice).model_dump()


def _describe_api_error(exc: ApiError, change: Change) -> str:
    """An API error said against the spec: address, spec location and the field paths Campfire named."""
    where = f"{change.location}: " if change.location else ""
    if exc.field_errors and exc.status == 400:
        fields = "; ".join(f"{path}: {msg}" if path else msg for path, msg in exc.field_errors)
        return f'{where}invoice "{change.address}": Campfire rejected it ({exc.status}): {fields}'
    return f'{where}invoice "{change.address}": {exc}'


@dataclass
class _Run:
    """One apply in progress: shared by the workers."""

    plan: Plan
    client: CampfireClient
    journal: JournalWriter
    today: str
    on_outcome: OutcomeCallback | None
    stop: asyncio.Event
    semaphore: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    settle: float = 0.0  # seconds after a send during which a create whose answer was lost may still land
    on_wait: WaitCallback | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    settling: list[asyncio.Task[None]] = field(default_factory=list)
    # Ids a look-up must never take: those the state manages or let go, and those this run recorded.
    taken_ids: set[int] = field(default_factory=set)

    def record_later(self, record: Created) -> None:
        """Journal an outcome without holding the worker: only intents must be on disk before a request leaves.

        A lost ``created`` record costs nothing but a look-up: recovery finds the invoice by its intent.
        """
        self.settling.append(asyncio.ensure_future(self.journal.append(record)))

    def report(self, outcome: Outcome) -> None:
        self.outcomes[outcome.address] = outcome
        if self.on_outcome is not None:
            self.on_outcome(outcome)


async def execute_plan(
    plan: Plan,
    *,
    store: Backend,
    state: State,
    client: CampfireClient,
    parallelism: int = 8,
    on_outcome: OutcomeCallback | None = None,
    stop: asyncio.Event | None = None,
    today: dt.date | None = None,
    settle: float = 0.0,
    on_wait: WaitCallback | None = None,
) -> tuple[State, ApplyResult]:
    """Carry out every actionable change of ``plan``; return the saved state and what happened.

    Each result is appended to the journal (fsynced) the moment Campfire answers; at the end the
    journal is folded into the state file, which is saved once, and removed. Setting ``stop`` stops
    starting new changes; changes in flight finish (or are left as intents for the next run to
    reconcile) and are recorded.

    ``settle`` is the settle window (DESIGN.md): a create whose answer was lost and that a look-up
    did not find gives up its worker slot, waits until ``settle`` seconds after its last send (other
    changes go on meanwhile; ``on_wait`` is told), and is looked up again before it may be sent again.
    """
    started = time.monotonic()
    created_state = not store.exists()
    if created_state:
        # The lineage is in every source_id about to be sent: it must be on disk before the first create.
        state = store.save(state)
    run = _Run(
        plan=plan,
        client=client,
        journal=store.open_journal(lineage=state.lineage),
        today=(today or dt.date.today()).isoformat(),
        on_outcome=on_outcome,
        stop=stop or asyncio.Event(),
        semaphore=asyncio.Semaphore(max(1, parallelism)),
        settle=settle,
        on_wait=on_wait,
        taken_ids={record.id for record in state.invoices.values()} | set(state.retired),
    )
    # Blocked changes (the invoice is paid or voided in Campfire) are shown by the plan and not attempted.
    actionable = [c for c in plan.changes if c.action is not Action.NOOP and not c.blocked]

    async def worker(change: Change) -> None:
        async with run.semaphore:
            if run.stop.is_set():
                run.report(Outcome(change.address, change.action, ok=False, skipped=True, message="not started: interrupted"))
                return
            try:
                await _carry_out(run, change, state)
            except BaseException:
                # Not an API answer (a journal that cannot be written, a bug): start nothing new, let
                # the changes in flight finish and be recorded, then raise it.
                run.stop.set()
                raise

    results = await asyncio.gather(*(worker(c) for c in actionable), return_exceptions=True)
    try:
        await asyncio.gather(*run.settling)
    finally:
        await run.journal.aclose()
    # Every outcome is on disk in the journal by now; folding it into the state file is done once.
    elapsed = time.monotonic() - started
    new_state = _fold_and_save(store, state)
    if created_state and not new_state.invoices and not new_state.retired and not store.has_journal():
        # Nothing was created (a dead endpoint, refused bodies): leave no state bound to this endpoint.
        store.discard()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    outcomes = tuple(run.outcomes[c.address] for c in actionable if c.address in run.outcomes)
    return new_state, ApplyResult(outcomes, interrupted=run.stop.is_set(), elapsed_seconds=elapsed)


def _fold_and_save(store: Backend, state: State) -> State:
    """Fold the run's journal into the state and save it, unless the run changed nothing (the serial stays)."""
    folded, pending = fold_journal(state, store.read_journal(), allow_duplicate_ids=store.allow_duplicate_ids)
    saved = store.save(folded) if folded != state else state
    if not pending:
        store.remove_journal()
    return saved


async def _carry_out(run: _Run, change: Change, state: State) -> None:
    try:
        if change.action is Action.CREATE:
            # A create for an address still recorded: its invoice was deleted outside invoicesync.
            replaces = state.invoices[change.address].id if change.address in state.invoices else None
            await _create(run, change, replaces)
        elif change.action is Action.UPDATE:
            await _update(run, change)
        elif change.action is Action.REPLACE:
            how = change.lifecycle.on_remove
            if await _remove(run, change, how, report=False, replacing=True):
                await _create(run, change, change.invoice_id)
        elif change.action is Action.VOID:
            await _remove(run, change, OnRemove.VOID)
        elif change.action is Action.DELETE:
            await _remove(run, change, OnRemove.DELETE)
        elif change.action is Action.FORGET:
            await _remove(run, change, OnRemove.FORGET)
    except ApiConnectionError as exc:
        note = {
            Action.CREATE: " The next run looks the invoice up before creating it again.",
            Action.REPLACE: " The next run finds out how far the replace got.",
        }.get(change.action, "")
        message = str(exc).rstrip(".") + "." + note
        run.report(Outcome(change.address, change.action, ok=False, invoice_id=change.invoice_id, message=message))
    except ApiError as exc:
        run.report(Outcome(change.address, change.action, ok=False, invoice_id=change.invoice_id, message=_describe_api_error(exc, change)))


async def _create(run: _Run, change: Change, replaces: int | None) -> None:
    assert change.body is not None and change.digest is not None
    body = dict(change.body)
    # The superseded invoice may carry the same source_id (forgotten, not voided): never adopt it.
    lookup = InvoiceLookup.from_body(body, exclude_ids=(replaces,) if replaces is not None else ())
    key = idempotency_key(run.plan.lineage, run.plan.serial, change.address, change.digest)
    intent = Intent(address=change.address, digest=change.digest, idempotency_key=key, lookup=lookup.to_dict(),
                    body=body, lifecycle=change.lifecycle.model_dump(mode="json"), replaces=replaces)

    async def journal_send() -> None:
        # Every send is journalled first: recovery counts the settle window from the last one.
        await run.journal.append(intent.model_copy(update={"time": _now()}))

    await journal_send()
    invoice: dict[str, Any] | None = None
    found_by_lookup = False
    rounds = 0
    while invoice is None:
        try:
            result = await run.client.create_invoice(
                body, idempotency_key=key, lookup=lookup, exclude_ids=run.taken_ids, settle=run.settle,
                before_resend=journal_send,
            )
        except CreateUnsettled as exc:
            rounds += 1
            found = await _settle(run, change.address, lookup, exc.sent_at)
            if found is not None:
                invoice, found_by_lookup = found, True
                break
            if rounds >= run.client.max_attempts:
                raise ApiConnectionError(
                    f"{str(exc).rstrip('.')}; sent {rounds} times, each answer lost and never found after its "
                    f"{run.settle:g} s settle window",
                    method=exc.method, path=exc.path, uncertain=True,
                ) from exc
            # The window has passed and a second look-up found nothing: it never landed; send it again.
            await journal_send()
            continue
        except ApiError as exc:
            if not exc.uncertain:
                # Campfire refused it, or it never left, and no earlier send may have landed: nothing was created.
                await run.journal.append(Abandoned(address=change.address, digest=change.digest, time=_now(),
                                                   reason=str(exc)))
                raise
            if isinstance(exc, ApiConnectionError):
                raise
            # An earlier send may have created it: the intent stays open for the next run's look-up.
            raise ApiConnectionError(f"{str(exc).rstrip('.')}; an earlier attempt may have created it", status=exc.status,
                                     method=exc.method, path=exc.path, body=exc.body, uncertain=True) from exc
        invoice, found_by_lookup = result.invoice, result.found_by_lookup
    invoice_id = int(invoice["id"])
    run.taken_ids.add(invoice_id)
    run.record_later(Created(address=change.address, id=invoice_id, digest=change.digest, body=body,
                             lifecycle=change.lifecycle.model_dump(mode="json"), remote=_snapshot(invoice), time=_now()))
    note = "found after a lost response" if found_by_lookup else None
    run.report(Outcome(change.address, change.action, ok=True, invoice_id=invoice_id, message=note))


async def _settle(run: _Run, address: str, lookup: InvoiceLookup, sent_at: float) -> dict[str, Any] | None:
    """Wait, without holding a worker slot, until a lost create can no longer land; then look it up again."""
    deadline = sent_at + run.settle
    if run.on_wait is not None:
        run.on_wait(address, deadline)
    run.semaphore.release()
    try:
        # Ctrl-C ends the wait: the intent stays open, and the next run waits out the rest of the window.
        await asyncio.wait_for(run.stop.wait(), timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    finally:
        await run.semaphore.acquire()
    if time.monotonic() < deadline:
        raise ApiConnectionError(
            f"interrupted while waiting for its lost answer to settle ({deadline - time.monotonic():.0f} s of "
            f"the {run.settle:g} s window left)", uncertain=True,
        )
    return await run.client.find_invoice(lookup, exclude_ids=run.taken_ids)


async def _update(run: _Run, change: Change) -> None:
    assert change.invoice_id is not None and change.body is not None and change.patch is not None
    if not change.patch:
        # Only the recorded lifecycle changed: nothing to send.
        await run.journal.append(Updated(address=change.address, id=change.invoice_id, digest=change.digest,
                                         body=dict(change.body), lifecycle=change.lifecycle.model_dump(mode="json"), time=_now()))
        run.report(Outcome(change.address, change.action, ok=True, invoice_id=change.invoice_id))
        return
    current = await run.client.get_invoice(change.invoice_id)
    if current is None:
        run.report(Outcome(change.address, change.action, ok=False, invoice_id=change.invoice_id,
                           message=f"invoice {change.invoice_id} no longer exists in Campfire; run plan again to create it anew"))
        return
    locked = RemoteSnapshot.from_response(current).locked_reason
    if locked:
        run.report(Outcome(change.address, change.action, ok=False, skipped=True, invoice_id=change.invoice_id,
                           message=f"invoice {change.invoice_id} is {locked} in Campfire; it can no longer be changed"))
        return
    invoice = await run.client.update_invoice(change.invoice_id, dict(change.patch))
    await run.journal.append(Updated(address=change.address, id=change.invoice_id, digest=change.digest,
                                     body=dict(change.body), lifecycle=change.lifecycle.model_dump(mode="json"),
                                     remote=_snapshot(invoice), time=_now()))
    run.report(Outcome(change.address, change.action, ok=True, invoice_id=change.invoice_id))


async def _remove(run: _Run, change: Change, how: OnRemove, *, report: bool = True, replacing: bool = False) -> bool:
    """Void, delete or forget ``change.invoice_id``; False (and an outcome saying why) when it must not be.

    Campfire is read first: a void or delete is refused for an invoice paid or partly paid since the
    plan was made (a delete would take its payments with it), and a void of an invoice already
    voided is not sent again.
    """
    invoice_id = change.invoice_id
    if how is not OnRemove.FORGET and invoice_id is not None:
        current = await run.client.get_invoice(invoice_id)
        locked = RemoteSnapshot.from_response(current).locked_reason if current is not None else None
        if locked in (Locked.PAID, Locked.PARTLY_PAID):
            done = "voided" if how is OnRemove.VOID else "deleted"
            run.report(Outcome(change.address, change.action, ok=False, skipped=True, invoice_id=invoice_id,
                               message=f"invoice {invoice_id} is {locked} in Campfire; it is not {done}"))
            return False
        if current is not None and (how is OnRemove.DELETE or locked is not Locked.VOIDED):
            if replacing:
                # If the run dies between the void and its record, recovery asks Campfire which it was.
                await run.journal.append(Replacing(address=change.address, id=invoice_id, how=how, time=_now()))
            try:
                if how is OnRemove.DELETE:
                    await run.client.delete_invoice(invoice_id)
                else:
                    await run.client.void_invoice(invoice_id, run.today)
            except ApiError as exc:
                if replacing and not isinstance(exc, ApiConnectionError) and not exc.uncertain:
                    # Campfire refused it: the old invoice is as it was, nothing is left to settle.
                    await run.journal.append(Abandoned(address=change.address, id=invoice_id, time=_now(),
                                                       reason=str(exc)))
                raise
    await run.journal.append(Removed(address=change.address, id=invoice_id, time=_now()))
    if report:
        run.report(Outcome(change.address, change.action, ok=True, invoice_id=invoice_id))
    return True


# --- import ------------------------------------------------------------------------------------------


async def find_for_import(
    client: CampfireClient, desired: DesiredInvoice, *, invoice_id: int | None, invoice_number: str | None
) -> dict[str, Any]:
    """The invoice to adopt, by id or by invoice number, with a clear error when there is none."""
    if invoice_id is not None:
        invoice = await client.get_invoice(invoice_id)
        if invoice is None:
            raise NotFoundError(f"Campfire has no invoice with id {invoice_id}.")
        return invoice
    assert invoice_number is not None
    matches = [
        inv
        for inv in await client.list_invoices(invoice_number=invoice_number, limit=1000)
        if inv.get("invoice_number") == invoice_number and not inv.get("is_deleted")
    ]
    if not matches:
        raise NotFoundError(f'Campfire has no invoice numbered "{invoice_number}".')
    if len(matches) > 1:
        ids = ", ".join(str(m["id"]) for m in matches)
        raise UsageError(
            f'{len(matches)} invoices are numbered "{invoice_number}" (ids {ids}); import one by id: '
            f"invoicesync import {desired.address} ID"
        )
    return matches[0]


def adopt(state: State, desired: DesiredInvoice, invoice: Mapping[str, Any]) -> State:
    """A copy of ``state`` managing ``invoice`` under ``desired.address``.

    The recorded body is Campfire's invoice cut to the shape of the spec's body, so the next plan
    shows exactly the fields where the spec and Campfire differ. ``source``/``source_id`` are taken
    from the spec's body where Campfire has none: they only mark invoices this tool created.
    """
    invoice_id = int(invoice["id"])
    for address, record in state.invoices.items():
        if record.id == invoice_id and address != desired.address:
            raise StateError(f'invoice {invoice_id} is already managed as "{address}"; use `invoicesync state mv` to rename it.')
    if desired.address in state.invoices:
        raise StateError(
            f'"{desired.address}" already manages invoice {state.invoices[desired.address].id}; '
            f"run `invoicesync state rm {desired.address}` first to adopt another."
        )
    like = with_source(desired.wire, state.lineage, desired.address)
    body = project_remote(invoice, like)
    for key in ("source", "source_id"):
        if body.get(key) is None:
            body[key] = like[key]
    now = _now()
    record = InvoiceRecord(
        id=invoice_id,
        digest=body_digest(body),
        body=body,
        lifecycle=desired.lifecycle,
        remote=RemoteSnapshot.from_response(invoice),
        created_at=now,
        updated_at=now,
    )
    invoices = dict(state.invoices)
    invoices[desired.address] = record
    retired = [i for i in state.retired if i != invoice_id]
    return state.model_copy(update={"invoices": invoices, "retired": retired})

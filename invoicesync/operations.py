"""Each command's operation: plan, apply, refresh, import, state rm/mv/pull/push/history, reading the state,
force-unlock, the environments overview.

Owns what a command does between parsing its flags and printing its result (Terraform's
``backend/local``): one ``session()`` that opens the environment's client, binds the state to the
endpoint it talks to and recovers any journal an interrupted run left; then the operation itself,
which hands its decisions to ``plan``, ``apply`` and ``recovery``. It never parses arguments and
never prints: what the user should see while it runs reaches them through ``Hooks``, which the CLI
fills in.

Every operation works on the environment's configured backend (``store_for``: the files under
``state/``, or PostgreSQL), through the ``state.backend.Backend`` seam only, so that a command
behaves the same on either; each store is closed when its operation ends.

HTTP (``client``, ``apply``) is imported where an operation talks to Campfire, so that offline
commands (validate, ``plan --refresh=false``) stay quick to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoicesync.config import Settings, load_all_settings, load_settings
from invoicesync.errors import ApiConnectionError, ApiError, ConfigError, InvoiceSyncError, NotFoundError, StateError
from invoicesync.models import DesiredInvoice
from invoicesync.plan import Action, ApplyResult, Outcome, Plan, check_saved_plan, has_changes, make_plan, matching
from invoicesync.specs import SpecSet
from invoicesync.state import State, StateStore, fold_journal, new_state
from invoicesync.state.backend import Backend, closing, read_state_file
from invoicesync.state.lock import LockInfo

if TYPE_CHECKING:
    from invoicesync.client import CampfireClient
    from invoicesync.refresh import OutsideChange, ReadBack
    from invoicesync.state.postgres import StateVersion

__all__ = [
    "SANDBOX_BASE_URL",
    "EnvironmentSummary",
    "Hooks",
    "Progress",
    "RefreshResult",
    "Unlocked",
    "apply",
    "endpoint_of",
    "environments",
    "force_unlock",
    "import_invoice",
    "plan",
    "read_state",
    "refresh",
    "session",
    "state_history",
    "state_mv",
    "state_pull",
    "state_push",
    "state_rm",
    "store_for",
]

SANDBOX_BASE_URL = "http://sandbox.invoicesync.invalid"


# --- how an operation reaches the user ---------------------------------------------------------------


#: The client's request rate: (requests/s answered over the last second, the pace or None while unpaced).
Rate = Callable[[], tuple[float, float | None]]


def _no_rate() -> tuple[float, float | None]:
    return 0.0, None


@dataclass(frozen=True)
class Progress:
    """Apply's progress callbacks: each finished change, and each create that starts waiting out its settle window."""

    on_outcome: Callable[[Outcome], None] | None = None
    on_wait: Callable[[str, float], None] | None = None


def _no_note(text: str) -> None:
    return None


def _no_plan(plan: Plan) -> None:
    return None


@contextlib.asynccontextmanager
async def _no_progress(plan: Plan, settle: float, rate: Rate) -> AsyncIterator[Progress]:
    yield Progress()


def _no_count(n: int) -> None:
    return None


@contextlib.asynccontextmanager
async def _no_reading(total: int, rate: Rate) -> AsyncIterator[Callable[[int], None]]:
    yield _no_count


@dataclass(frozen=True)
class Hooks:
    """What the user sees while an operation runs (the CLI's views); every hook is optional.

    - ``note``: one line for stderr (a warning, a recovery report).
    - ``wait``: waits out an interrupted run's settle window (``seconds``, ``count``), showing it.
    - ``show_plan``: the plan apply is about to carry out, before it asks.
    - ``confirm``: asks for approval; raises to cancel.
    - ``progress``: an async context around the execution, yielding its ``Progress`` callbacks.
    - ``reading``: an async context around a refresh of ``total`` invoices, yielding a callback
      called with the number of invoices read as each batch lands.
    """

    note: Callable[[str], None] = _no_note
    wait: Callable[[float, int], Awaitable[None]] | None = None
    show_plan: Callable[[Plan], None] = _no_plan
    confirm: Callable[[Plan], None] = _no_plan
    progress: Callable[[Plan, float, Rate], AbstractAsyncContextManager[Progress]] = field(default=_no_progress)
    reading: Callable[[int, Rate], AbstractAsyncContextManager[Callable[[int], None]]] = field(default=_no_reading)


# --- the session: client, endpoint binding, recovery ------------------------------------------------


def store_for(settings: Settings, *, repairing: bool = False) -> Backend:
    """Where the environment's state is kept, as configured: the files under ``state/``, or PostgreSQL.

    ``repairing`` lets state surgery load a state that needs it. A PostgreSQL backend whose
    connection-string variable is unset is a ``ConfigError`` naming it. Close the store when done
    (``state.backend.closing``).
    """
    env = settings.environment
    backend = env.backend
    if backend.type == "local":
        return StateStore(settings.state_dir, env.name, allow_duplicate_ids=repairing)
    if not settings.dsn:
        where = settings.config_file.name if settings.config_file is not None else "the configuration"
        raise ConfigError(
            f"{backend.dsn_env} is not set: the state of environment \"{env.name}\" is kept in PostgreSQL "
            f"(backend type \"postgres\" in {where}), and its connection string "
            f"(postgresql://USER:PASSWORD@HOST:PORT/DATABASE) comes from that environment variable."
        )
    from invoicesync.state.postgres import PostgresStore  # psycopg only where it is used

    return PostgresStore(settings.dsn, schema=backend.schema, environment=env.name, dsn_env=backend.dsn_env,
                         allow_duplicate_ids=repairing)


def describe_backend(settings: Settings) -> str:
    """Where the environment's state is kept, for people: never the connection string."""
    backend = settings.environment.backend
    if backend.type == "local":
        return f"local files in {settings.relative(settings.state_dir)}/"
    if not settings.dsn:
        return f"PostgreSQL (schema {backend.schema}; {backend.dsn_env} is not set)"
    from invoicesync.state.postgres import PostgresStore

    return PostgresStore(settings.dsn, schema=backend.schema, environment=settings.environment.name,
                         dsn_env=backend.dsn_env).server + f" (schema {backend.schema})"


def endpoint_of(settings: Settings) -> str:
    """Which Campfire this environment talks to: "sandbox", or the API's origin."""
    env = settings.environment
    if env.endpoint == "sandbox":
        return "sandbox"
    url = urllib.parse.urlsplit(env.base_url)
    # Host and port only: never credentials (the state is committed), never a default port's spelling.
    port = url.port if url.port not in (None, {"http": 80, "https": 443}.get(url.scheme)) else None
    return f"{url.scheme}://{(url.hostname or '').lower()}" + (f":{port}" if port else "")


def _bind(state: State, settings: Settings) -> State:
    """The state, refused if it belongs to another Campfire than this run talks to, else bound to this one."""
    here = endpoint_of(settings)
    if state.endpoint is not None and state.endpoint != here:
        raise ConfigError(
            f'the state of environment "{state.environment}" holds invoice ids of {state.endpoint}, but this run '
            f"talks to {here}; its ids mean other invoices there. Check -e, CAMPFIRE_BASE_URL and the workspace config."
        )
    return state if state.endpoint == here else state.model_copy(update={"endpoint": here})


def _retry_base() -> float:
    """INVOICESYNC_RETRY_BASE (seconds, default 0.25) shortens back-off, for test suites driving a faulty sandbox."""
    raw = os.environ.get("INVOICESYNC_RETRY_BASE")
    if not raw:
        return 0.25
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise ConfigError(f"INVOICESYNC_RETRY_BASE must be a number of seconds, not {raw!r}") from exc


@contextlib.asynccontextmanager
async def _client(settings: Settings, *, required: bool) -> AsyncIterator[CampfireClient | None]:
    """The Campfire client of the environment: the in-process sandbox, or HTTP with the API key."""
    from invoicesync.client import CampfireClient

    env = settings.environment
    if env.endpoint == "sandbox":
        from invoicesync.sandbox import Sandbox

        # A key of its own, as long as a real one: the client hides its key wherever it shows, and
        # the public "sandbox" would be hidden inside the sandbox's own messages.
        token = secrets.token_hex(20)
        sandbox = Sandbox(data_file=settings.state_dir / f"{env.name}.sandbox.json", tokens=(token,))
        try:
            async with CampfireClient(SANDBOX_BASE_URL, token, transport=sandbox.transport()) as client:
                yield client
        finally:
            sandbox.close()
    elif settings.api_key:
        async with CampfireClient(
            env.base_url, settings.api_key, api_key_name=env.api_key_env, backoff_base=_retry_base(),
            read_timeout=env.timeout,
        ) as client:
            yield client
    elif required:
        raise ConfigError(
            f"{env.api_key_env} is not set: this command talks to Campfire ({env.base_url}) and needs an API key "
            f"in that environment variable."
        )
    else:
        yield None


@dataclass(frozen=True)
class Session:
    """An environment ready to work on: its store, its state (recovered and bound) and its client."""

    settings: Settings
    store: Backend
    state: State
    client: CampfireClient | None


@contextlib.asynccontextmanager
async def session(
    settings: Settings, store: Backend, hooks: Hooks, *, client_required: bool
) -> AsyncIterator[Session]:
    """Open the environment's client, bind the state to its endpoint and recover any journal left behind.

    The caller holds the state lock. The client is None when no API key is set (and none is required).
    """
    from invoicesync.recovery import recover

    async with _client(settings, required=client_required) as client:
        state = _bind(store.load(), settings)
        if store.has_journal():
            state, found = await recover(
                store, state, client, settle_seconds=settings.environment.settle_window, wait=hooks.wait,
            )
            hooks.note(f"Recovered the journal of an interrupted run ({found} create(s) of unknown outcome found in Campfire).")
        yield Session(settings, store, state, client)


def read_state(settings: Settings, hooks: Hooks) -> State:
    """The state with any journal an interrupted (or running) apply left folded in memory, for commands that only read.

    No look-ups, no writes, no lock, no waiting: it works offline and beside a running apply, and
    names what is still unresolved.
    """
    with closing(store_for(settings)) as store:
        return _read_state(store, hooks)


def _read_state(store: Backend, hooks: Hooks) -> State:
    if not store.has_journal():
        return store.load()
    folded, pending = fold_journal(store.load(), store.read_journal(), allow_duplicate_ids=store.allow_duplicate_ids)
    note = "Including the outcomes an unfinished (interrupted or running) apply recorded in its journal"
    if pending:
        unresolved = sorted({r.address for r in pending})
        shown = ", ".join(unresolved[:10]) + (f" and {len(unresolved) - 10} more" if len(unresolved) > 10 else "")
        note += (f"; unresolved, outcome unknown: {shown} (the next plan or apply looks "
                 f"{'them' if len(unresolved) != 1 else 'it'} up in Campfire before anything else)")
    hooks.note(note + ".")
    return folded


def _recovered(settings: Settings, store: Backend, hooks: Hooks) -> State:
    """The state with its journal recovered for real (the caller holds the lock): for commands that write."""
    if not store.has_journal():
        return store.load()

    async def run() -> State:
        async with session(settings, store, hooks, client_required=False) as s:
            return s.state

    return asyncio.run(run())


# --- plan ------------------------------------------------------------------------------------------------


def _rate_of(client: CampfireClient | None) -> Rate:
    if client is None:
        return _no_rate
    return lambda: client.rate


async def _read_back(s: Session, hooks: Hooks, addresses: Sequence[str] | None, parallelism: int) -> ReadBack:
    """Read the managed invoices (``addresses``, else all) back, showing progress."""
    from invoicesync.refresh import read_back

    assert s.client is not None
    total = len(s.state.invoices) if addresses is None else len(addresses)
    async with hooks.reading(total, _rate_of(s.client)) as count:
        read = await read_back(s.state, s.client, addresses=addresses, parallelism=parallelism, on_read=count)
    for note in read.notes:
        hooks.note(f"Note: {note}")
    return read


async def _refreshed(
    s: Session, hooks: Hooks, *, parallelism: int, targets: Sequence[str]
) -> ReadBack | None:
    """Campfire's invoices for the state's addresses (the targeted ones), or None when not read."""
    from invoicesync.refresh import ReadBack  # noqa: F811 (at run time, not only for the types)

    if not s.state.invoices:
        return ReadBack({})  # nothing recorded, so nothing to read back: the plan is as fresh as it gets
    if s.client is None:
        hooks.note(f"Not refreshed: {s.settings.environment.api_key_env} is not set; planning against the state as recorded.")
        return None
    addresses = sorted(matching(s.state.invoices, targets)) if targets else None
    return await _read_back(s, hooks, addresses, parallelism)


async def _facts(s: Session, specs: SpecSet, hooks: Hooks) -> dict[str, Any]:
    """What a plan needs from Campfire besides the managed invoices (``make_plan``'s keyword arguments).

    The currency of each entity, when a spec leaves ``currency`` to its entity; and, for the
    invoices about to be created, the invoice numbers Campfire already holds outside this state.
    """
    if s.client is None:
        return {}
    facts: dict[str, Any] = {}
    if any(not d.wire.get("currency") for d in specs.invoices):
        try:
            facts["entity_currencies"] = await s.client.entity_currencies()
        except ApiConnectionError:
            raise
        except ApiError as exc:
            hooks.note(f"Warning: cannot read the entities' currencies ({exc}); invoices that do not name a "
                       "currency are shown with their entity's currency unknown.")
    numbers = {
        (int(d.wire["entity"]), str(d.wire["invoice_number"]))
        for d in specs.invoices
        if d.address not in s.state.invoices and d.wire.get("invoice_number")
    }
    facts["existing_invoices"] = await s.client.invoice_numbers_in_use(numbers) if numbers else {}
    return facts


async def _plan_online(
    s: Session, specs: SpecSet, hooks: Hooks, *, refresh: bool, parallelism: int, targets: Sequence[str],
    replace: Sequence[str],
) -> tuple[Plan, State]:
    """Refresh (unless told not to), learn the facts and plan; returns the plan and the refreshed state."""
    from invoicesync.refresh import read_details, with_remote_snapshots

    # Independent of each other: read together (a round trip less before the plan); a failure of
    # either cancels the other.
    try:
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(_refreshed(s, hooks, parallelism=parallelism, targets=targets)) if refresh else None
            asking = group.create_task(_facts(s, specs, hooks))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first failure, as the error handler knows it
    read, facts = (reading.result() if reading is not None else None), asking.result()
    remote = read.invoices if read is not None else None
    state = with_remote_snapshots(s.state, remote) if remote else s.state

    def planned() -> Plan:
        return make_plan(specs.invoices, state, remote, targets=targets, replace=replace,
                         refreshed=remote is not None, **facts)

    plan_ = planned()
    if read is not None and s.client is not None:
        # A change to an invoice Campfire shows paid in part or in full depends on its payments, which
        # list items do not carry: read those invoices in full, and plan again with them.
        wanted = {c.address: c.invoice_id for c in plan_.changes
                  if c.invoice_id is not None and c.address in read.by_listing and _has_payments(read.invoices[c.address])
                  and c.action is not Action.NOOP}
        if wanted:
            read.invoices.update(await read_details(s.client, wanted, parallelism=parallelism))
            state = with_remote_snapshots(s.state, read.invoices)
            plan_ = planned()
    return plan_, state


def _has_payments(invoice: Mapping[str, Any] | None) -> bool:
    if invoice is None:
        return False
    if str(invoice.get("payment_status") or invoice.get("status") or "").lower() in ("paid", "partial"):
        return True
    try:
        return Decimal(str(invoice.get("amount_paid") or 0)) != 0
    except ArithmeticError:
        return True  # unreadable: read it in full


def plan(
    settings: Settings,
    specs: SpecSet,
    hooks: Hooks,
    *,
    refresh: bool = True,
    parallelism: int = 8,
    targets: Sequence[str] = (),
    replace: Sequence[str] = (),
    lock_timeout: float | None = None,
) -> Plan:
    """Recover, refresh and plan, under the state lock.

    ``refresh=False`` plans offline: no client is built, no event loop runs, and a journal left by
    an interrupted run is folded in memory (never waited on, never written).
    """
    with closing(store_for(settings)) as store, store.lock("plan", lock_timeout):
        if not refresh:
            return make_plan(specs.invoices, _read_state(store, hooks), None, targets=targets, replace=replace,
                             refreshed=False)

        async def online() -> Plan:
            async with session(settings, store, hooks, client_required=False) as s:
                plan_, _state = await _plan_online(s, specs, hooks, refresh=True, parallelism=parallelism,
                                                   targets=targets, replace=replace)
            return plan_

        return asyncio.run(online())


# --- apply ------------------------------------------------------------------------------------------------


def apply(
    settings: Settings,
    specs: SpecSet,
    hooks: Hooks,
    *,
    saved: Plan | None = None,
    refresh: bool = True,
    parallelism: int = 8,
    targets: Sequence[str] = (),
    replace: Sequence[str] = (),
    lock_timeout: float | None = None,
) -> ApplyResult:
    """Plan (or take a saved plan), show it, confirm, carry it out and record every outcome, under the state lock.

    A saved plan is checked against the state and the specs it was made from. A plan with nothing to
    do returns an empty result (writing the refreshed snapshots only when they are news). Ctrl-C or
    SIGTERM stops starting new changes; those in flight finish and are recorded.
    """
    with closing(store_for(settings)) as store, store.lock("apply", lock_timeout):
        return asyncio.run(_apply(settings, store, specs, hooks, saved, refresh=refresh, parallelism=parallelism,
                                  targets=targets, replace=replace))


async def _apply(settings: Settings, store: Backend, specs: SpecSet, hooks: Hooks, saved: Plan | None, *,
                 refresh: bool, parallelism: int, targets: Sequence[str], replace: Sequence[str]) -> ApplyResult:
    from invoicesync.apply import execute_plan

    async with session(settings, store, hooks, client_required=True) as s:
        assert s.client is not None
        state = s.state
        if saved is not None:
            plan_ = saved
            check_saved_plan(plan_, environment=settings.environment.name, state=state,
                             state_exists=store.exists(), desired=specs.invoices)
            if not store.exists():
                # The plan's lineage is in the source_ids it will send.
                state = new_state(settings.environment.name, lineage=plan_.lineage).model_copy(
                    update={"endpoint": state.endpoint})
            hooks.show_plan(plan_)
        else:
            plan_, state = await _plan_online(s, specs, hooks, refresh=refresh, parallelism=parallelism,
                                              targets=targets, replace=replace)
            hooks.show_plan(plan_)
            if not has_changes(plan_):
                if state != s.state:  # a refresh that found nothing new writes nothing (the serial stays)
                    store.save(state)
                return ApplyResult(outcomes=())
            hooks.confirm(plan_)

        stop = asyncio.Event()
        settle = settings.environment.settle_window
        with _interrupts(asyncio.get_running_loop(), stop):
            async with hooks.progress(plan_, settle, _rate_of(s.client)) as progress:
                _state, result = await execute_plan(plan_, store=store, state=state, client=s.client,
                                                    parallelism=parallelism, on_outcome=progress.on_outcome,
                                                    stop=stop, settle=settle, on_wait=progress.on_wait)
    return result


@contextlib.contextmanager
def _interrupts(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) stops starting new changes; the ones in flight finish and are recorded."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# --- refresh and import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh read: how many invoices and how, and the invoices that changed outside invoicesync."""

    count: int
    missing: tuple[str, ...]  # addresses whose invoice Campfire no longer has
    changed: tuple[OutsideChange, ...]  # what differs from what the state last saw, deleted ones included
    listings: int = 0
    fetched: int = 0


def refresh(settings: Settings, hooks: Hooks, *, parallelism: int = 8, lock_timeout: float | None = None) -> RefreshResult:
    """Read every managed invoice back and record the remote snapshots; writes only when something is news."""

    async def run(store: Backend) -> RefreshResult:
        from invoicesync.refresh import changes_outside, with_remote_snapshots

        async with session(settings, store, hooks, client_required=True) as s:
            assert s.client is not None
            read = await _read_back(s, hooks, None, parallelism)
            remote = read.invoices
            refreshed = with_remote_snapshots(s.state, remote)
            if refreshed != s.state:  # nothing new: the state file is left as it is, serial included
                store.save(refreshed)
            return RefreshResult(len(remote), tuple(sorted(a for a, inv in remote.items() if inv is None)),
                                 tuple(changes_outside(s.state, remote)), read.listings, read.fetched)

    with closing(store_for(settings)) as store, store.lock("refresh", lock_timeout):
        return asyncio.run(run(store))


def import_invoice(
    settings: Settings,
    desired: DesiredInvoice,
    hooks: Hooks,
    *,
    invoice_id: int | None = None,
    invoice_number: str | None = None,
    lock_timeout: float | None = None,
) -> int:
    """Adopt an existing invoice (by id or invoice number) for a declared address; returns its id."""

    async def run(store: Backend) -> int:
        from invoicesync.apply import adopt, find_for_import

        async with session(settings, store, hooks, client_required=True) as s:
            assert s.client is not None
            invoice = await find_for_import(s.client, desired, invoice_id=invoice_id, invoice_number=invoice_number)
            store.save(adopt(s.state, desired, invoice))
            return int(invoice["id"])

    with closing(store_for(settings)) as store, store.lock("import", lock_timeout):
        return asyncio.run(run(store))


# --- state surgery -----------------------------------------------------------------------------------------


def state_rm(settings: Settings, addresses: Sequence[str], hooks: Hooks, *, lock_timeout: float | None = None) -> None:
    """Forget addresses without touching their invoices; their ids are retired (a look-up never takes one)."""
    with closing(store_for(settings, repairing=True)) as store, store.lock("state rm", lock_timeout):
        state = _recovered(settings, store, hooks)
        missing = [a for a in addresses if a not in state.invoices]
        if missing:
            raise NotFoundError("the state has no " + ", ".join(f'"{a}"' for a in missing) + "; nothing was changed.")
        invoices = {a: r for a, r in state.invoices.items() if a not in addresses}
        kept = {r.id for r in invoices.values()}  # an id another address still holds is not let go
        retired = state.retired + [r.id for a, r in state.invoices.items()
                                   if a in addresses and r.id not in state.retired and r.id not in kept]
        store.save(state.model_copy(update={"invoices": invoices, "retired": retired}))


def state_mv(settings: Settings, old: str, new: str, hooks: Hooks, *, lock_timeout: float | None = None) -> int:
    """Rename an address, keeping its invoice; returns the invoice id."""
    with closing(store_for(settings, repairing=True)) as store, store.lock("state mv", lock_timeout):
        state = _recovered(settings, store, hooks)
        if old not in state.invoices:
            raise NotFoundError(f'the state has no "{old}"; nothing was changed.')
        if new in state.invoices:
            raise StateError(f'the state already has "{new}"; nothing was changed.')
        invoices = {(new if a == old else a): r for a, r in state.invoices.items()}
        store.save(state.model_copy(update={"invoices": invoices}))
        return state.invoices[old].id


# --- the state as JSON out and in, its history ----------------------------------------------------------------


def state_pull(settings: Settings, hooks: Hooks) -> State:
    """The saved state (its latest serial), as ``state pull`` prints it; ``StateError`` "no state yet" when there is none."""
    with closing(store_for(settings)) as store:
        if not store.exists():
            raise StateError(f'no state yet for environment "{settings.environment.name}" in '
                             f"{describe_backend(settings)}; nothing to pull.")
        if store.has_journal():
            hooks.note(f"Note: {store.journal_name} holds records of an unfinished (interrupted or running) run; "
                       "they are not in the pulled state until a plan or apply recovers them.")
        return store.load()


def state_push(settings: Settings, path: Path, hooks: Hooks, *, force: bool = False,
               lock_timeout: float | None = None) -> State:
    """Store the state in the file ``path`` as the environment's latest, keeping its lineage and serial; returns it.

    Allowed when no state is stored yet. Refused for another lineage, or a serial not above the
    stored one, unless ``force``; refused while an interrupted run's journal waits for recovery
    (it belongs to the stored state), unless ``force``.
    """
    env = settings.environment.name
    pushed = read_state_file(path, settings.relative(path))
    if pushed.environment != env:
        raise StateError(f'{settings.relative(path)} holds the state of environment "{pushed.environment}", not '
                         f'"{env}"; push it with `-e {pushed.environment}`. Nothing was changed.')
    with closing(store_for(settings)) as store, store.lock("state push", lock_timeout):
        if store.has_journal() and not force:
            raise StateError(f"{store.journal_name} holds records of an interrupted run, which belong to the stored "
                             "state: run `invoicesync plan` first so that they are recovered, then push (or push "
                             "with --force). Nothing was changed.")
        if settings.environment.backend.type == "postgres":
            from invoicesync.state.postgres import PostgresStore

            assert isinstance(store, PostgresStore)
            return store.push(pushed, force=force)
        return _push_file(store, pushed, force=force, shown=describe_backend(settings))


def _push_file(store: Backend, pushed: State, *, force: bool, shown: str) -> State:
    """``state push`` into the local files: the same rules as PostgreSQL's; the replaced file becomes the backup."""
    if store.exists():
        current = store.load()  # also lets save() replace a file of another lineage, once checked here
        if not force and current.lineage != pushed.lineage:
            raise StateError(f"{shown} holds another state (lineage {current.lineage}, the one pushed has "
                             f"{pushed.lineage}); refusing to replace it. Push with --force to replace it anyway "
                             "(the replaced state is kept as the .backup file)")
        if not force and pushed.serial <= current.serial:
            raise StateError(f"the state in {shown} is at serial {current.serial}; the one pushed is at serial "
                             f"{pushed.serial}, and only a higher serial replaces it. Push with --force to replace it "
                             "anyway (the replaced state is kept as the .backup file)")
    return store.save(pushed.model_copy(update={"serial": pushed.serial - 1}))  # save() adds the one back


def state_history(settings: Settings) -> list[StateVersion]:
    """Every serial saved, newest first (PostgreSQL); the local files keep none, which is an error saying so."""
    backend = settings.environment.backend
    if backend.type != "postgres":
        state_file = settings.relative(settings.state_dir / f"{settings.environment.name}.json")
        raise StateError(f"the local backend keeps no history: {state_file} is the latest state and "
                         f"{state_file}.backup the one before it, nothing older. Keep the state in PostgreSQL "
                         '([backend] type = "postgres") for every serial with when, what and who wrote it.')
    with closing(store_for(settings)) as store:
        from invoicesync.state.postgres import PostgresStore

        assert isinstance(store, PostgresStore)
        return store.history()


# --- locks ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unlocked:
    """What ``force-unlock`` did: whose lock it was (None: there was none) and whether a live holder was ended."""

    holder: LockInfo | None
    ended_session: bool = False


def force_unlock(settings: Settings, hooks: Hooks) -> Unlocked:
    """Break the environment's lock, saying whose it is first.

    Local files: only a lock file no live run holds (the OS lock is released when a holder dies, so
    a live one is a ``StateError``). PostgreSQL: the holder's session is ended where the role may
    (a vanished runner's session may outlive it until the keepalives notice), and the ``locks`` row
    removed.
    """
    with closing(store_for(settings)) as store:
        info = store.read_lock_info()
        held = store.lock_is_held()
        if settings.environment.backend.type == "local":
            if held:
                holder = (info or LockInfo()).describe()
                raise StateError(
                    f"the state lock is held by a live run: {holder}. Wait for it, or stop it; the operating "
                    "system releases its lock when it ends. Nothing was removed."
                )
            if info is None or not info.known:
                return Unlocked(None)  # no file, or one a finished run released
            store.force_unlock()
            return Unlocked(info)
        if not held and info is None:
            return Unlocked(None)
        if held:
            hooks.note(f"The lock of environment \"{settings.environment.name}\" is held by "
                       f"{(info or LockInfo()).describe()}; ending that session.")
        return Unlocked(store.force_unlock() or info, ended_session=held)


# --- environments -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentSummary:
    """One environment of the config: where it sends requests, where its state is, and the state's serial."""

    name: str
    endpoint: str
    backend: str
    serial: int | None  # None: no state yet, or it could not be read (``problem``)
    problem: str | None = None
    chosen: bool = False  # the environment a command without -e would use


def environments(root: Path | None) -> list[EnvironmentSummary]:
    """Every environment the workspace config defines, each with its state's serial (read from its backend)."""
    try:
        chosen: str | None = load_settings(root).environment.name
    except ConfigError:  # several environments and no default: none is chosen
        chosen = None
    summaries = []
    for settings in load_all_settings(root):
        env = settings.environment
        endpoint = endpoint_of(settings) if env.endpoint == "sandbox" else env.base_url
        serial: int | None = None
        problem: str | None = None
        backend = describe_backend(settings)
        try:
            with closing(store_for(settings)) as store:
                serial = store.load().serial if store.exists() else None
        except InvoiceSyncError as exc:  # one environment's problem is shown beside it, not fatal to the list
            problem = str(exc)
        summaries.append(EnvironmentSummary(env.name, endpoint, backend, serial, problem, chosen=env.name == chosen))
    return summaries

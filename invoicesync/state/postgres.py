"""Team state on PostgreSQL: the state, its history, the journal and the lock of one environment.

Owns the tables in one schema (``states``, ``journal``, ``locks`` and ``schema_version``), created on
first use; what the local files under ``state/`` are for one machine, these are for CI runners that
share no disk. ``PostgresStore`` has the methods of ``invoicesync.state.StateStore`` (and behaves like
them), plus ``pull``/``push``/``history`` for the ``state`` commands. See DESIGN.md, "Team state on
PostgreSQL".

- One state per (schema, environment); every write is a new row (a serial's history is never
  overwritten), compare-and-swap on ``serial`` inside a transaction.
- The state and journal records are stored as the JSON text ``dumps_json`` writes and read back with
  ``loads_json``, so money stays an exact ``Decimal`` (psycopg never sees a number).
- The lock is a session-level advisory lock on a connection of its own, keyed by (schema,
  environment); the server drops it when that session ends, also when its client vanished (TCP
  keepalives), and a ``locks`` row says who holds it.
- The connection string holds a password: it is never stored nor shown. psycopg errors are turned
  into ``StateError`` naming host, port and database, with any secret scrubbed from their text, and
  are never chained (their text may quote the connection string).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

import psycopg
import simplejson
from psycopg import errors as pg_errors
from psycopg import sql

from invoicesync.errors import LockError, StateError
from invoicesync.models import dumps_json, gc_paused, loads_json
from invoicesync.state.journal import GroupCommitJournal, JournalEntry, _foreign
from invoicesync.state.lock import LockInfo, os_user, run_url
from invoicesync.state.model import (
    FORMAT_VERSION,
    State,
    _duplicates_message,
    duplicate_ids,
    new_state,
    state_from_document,
)
from invoicesync.state.pgconn import _LOCK_SESSION, _LONG_SESSION, _Target, _translated

P = ParamSpec("P")
T = TypeVar("T")

# Each entry brings the tables from the previous version to the next; ``schema_version`` records
# every version applied. Never edit an entry that has shipped: add one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {schema}.states (
        id          bigserial PRIMARY KEY,
        environment text NOT NULL,
        serial      bigint NOT NULL,
        lineage     text NOT NULL,
        state       text NOT NULL,             -- dumps_json of the State: exact decimals
        time        timestamptz NOT NULL DEFAULT now(),
        command     text NOT NULL DEFAULT '',
        host        text,
        os_user     text,
        run_url     text,
        counts      text NOT NULL DEFAULT '{{}}'
    );
    CREATE INDEX ON {schema}.states (environment, id);
    CREATE TABLE {schema}.journal (
        id          bigserial PRIMARY KEY,
        environment text NOT NULL,
        record      text NOT NULL,             -- dumps_json of the record
        time        timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX ON {schema}.journal (environment, id);
    CREATE TABLE {schema}.locks (
        environment text PRIMARY KEY,
        command     text NOT NULL,
        host        text,
        pid         integer,
        os_user     text,
        since       timestamptz NOT NULL DEFAULT now(),
        run_url     text,
        backend_pid integer NOT NULL           -- the holding session: pg_locks names it too
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_LOCK_POLL_SECONDS = 0.1
_HOLDER_ROW_WAIT = 2.0  # the holder writes its locks row right after taking the lock
_TERMINATE_WAIT = 5.0


def _key(*parts: str) -> tuple[int, int]:
    """Two non-negative int4 advisory lock keys for ``parts``, distinct per purpose, schema and environment."""
    digest = hashlib.sha256("\0".join(("invoicesync", *parts)).encode()).digest()
    return (
        int.from_bytes(digest[:4], "big") & 0x7FFFFFFF,
        int.from_bytes(digest[4:8], "big") & 0x7FFFFFFF,
    )


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    return None if value is None else str(value)


def _counts(state: State) -> dict[str, int]:
    return {"invoices": len(state.invoices), "retired": len(state.retired)}


@dataclass(frozen=True)
class StateVersion:
    """One saved serial of the history: when, by which command, who (host, OS user, CI run) and what it held."""

    serial: int
    time: str
    command: str
    host: str | None
    user: str | None
    run_url: str | None
    counts: Mapping[str, int]  # {"invoices": n, "retired": n}

    def to_dict(self) -> dict[str, Any]:
        """``{serial, time, command, host, user, run_url, counts}``, as ``state history --json`` prints it."""
        return {
            "serial": self.serial, "time": self.time, "command": self.command, "host": self.host,
            "user": self.user, "run_url": self.run_url, "counts": dict(self.counts),
        }


class PostgresStore:
    """The state, history, journal and lock of one environment in one schema of a PostgreSQL database.

    Connects lazily. Every method creates the tables first when they are missing, and raises
    ``StateError`` (``LockError`` for a held lock) whose message names the server, schema and
    environment (``display``), never the connection string's password.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "invoicesync",
        environment: str,
        dsn_env: str = "INVOICESYNC_PG_DSN",
        allow_duplicate_ids: bool = False,
    ) -> None:
        self._target = _Target(dsn, schema=schema, environment=environment, dsn_env=dsn_env)
        self.schema = schema
        self.environment = environment
        self.dsn_env = dsn_env
        # As StateStore: only state surgery may load a state holding one invoice id under two addresses.
        self.allow_duplicate_ids = allow_duplicate_ids
        self.display = self._target.display
        self.server = self._target.server  # postgresql://host:port/database, never a secret
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._conn_lock = threading.RLock()
        self._ready = False
        self._command = ""  # of the lock held now, recorded with every save meanwhile
        self._lock_key = _key("lock", schema, environment)
        self._write_key = _key("write", schema, environment)
        self._ddl_key = _key("ddl", schema)

    def __repr__(self) -> str:
        return f"PostgresStore({self.display!r})"

    # --- connections and tables ----------------------------------------------------------------------

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self.schema))

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """The store's own connection (opened, and the tables created, on first use)."""
        with self._conn_lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    self._conn.close()
                self._conn = self._target.connect(settings=_LONG_SESSION)
            if not self._ready:
                self._migrate(self._conn)
                self._ready = True
            yield self._conn

    def _migrate(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Create the schema and tables, or bring them up to ``SCHEMA_VERSION``; safe when runners race."""
        if self._up_to_date(self._version(conn)):
            return  # a role that may create nothing can use tables that exist
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._ddl_key)
            conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {schema}"))
            conn.execute(self._q(
                "CREATE TABLE IF NOT EXISTS {schema}.schema_version ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            current = self._version(conn) or 0
            if self._up_to_date(current):
                return  # another runner created them meanwhile
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute(self._q(_MIGRATIONS[version - 1]))
                conn.execute(self._q("INSERT INTO {schema}.schema_version (version) VALUES (%s)"), (version,))

    def _up_to_date(self, version: int | None) -> bool:
        if version is not None and version > SCHEMA_VERSION:
            raise StateError(
                f"the tables in {self.display} were made by a newer invoicesync (schema version "
                f"{version}; this version knows {SCHEMA_VERSION}); upgrade invoicesync to use them"
            )
        return version == SCHEMA_VERSION

    def _version(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int | None:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (self.schema,)
        ).fetchone()
        if not row or not row[0]:
            return None
        found = conn.execute(self._q("SELECT max(version) FROM {schema}.schema_version")).fetchone()
        return int(found[0]) if found and found[0] is not None else None

    def close(self) -> None:
        """Close the store's connection (a later call opens a new one); idempotent."""
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- state ---------------------------------------------------------------------------------------

    @_translated("read the state")
    def exists(self) -> bool:
        """Whether a state has been saved (or pushed) at least once."""
        with self._connection() as conn:
            row = conn.execute(
                self._q("SELECT EXISTS (SELECT 1 FROM {schema}.states WHERE environment = %s)"), (self.environment,)
            ).fetchone()
        return bool(row and row[0])

    def _latest(self, conn: psycopg.Connection[tuple[Any, ...]], *, with_state: bool) -> dict[str, Any] | None:
        columns = "serial, lineage, time, command, host, os_user, run_url" + (", state" if with_state else "")
        row = conn.execute(
            self._q(f"SELECT {columns} FROM {{schema}}.states WHERE environment = %s ORDER BY id DESC LIMIT 1"),
            (self.environment,),
        ).fetchone()
        if row is None:
            return None
        names = ["serial", "lineage", "time", "command", "host", "user", "run_url"] + (["state"] if with_state else [])
        return dict(zip(names, row))

    def _parse(self, text: str) -> State:
        shown = f"the state in {self.display}"
        with gc_paused():
            try:
                data = loads_json(text)
            except (simplejson.JSONDecodeError, ValueError) as exc:
                raise StateError(f"{shown} is not valid JSON ({exc})") from exc
            state = state_from_document(data, shown)
        if state.environment != self.environment:
            raise StateError(
                f'{shown} holds the state of environment "{state.environment}", not "{self.environment}"'
            )
        if not self.allow_duplicate_ids:
            shared = duplicate_ids(state)
            if shared:
                raise StateError(_duplicates_message(shown, shared))
        return state

    @_translated("read the state")
    def load(self) -> State:
        """The latest saved state, or ``new_state(environment)`` when none was saved yet.

        Raises ``StateError`` for a state that is not valid, was written by a newer invoicesync,
        belongs to another environment or holds one invoice id under two addresses (unless
        ``allow_duplicate_ids``), as ``StateStore.load`` does.
        """
        with self._connection() as conn:
            latest = self._latest(conn, with_state=True)
        if latest is None:
            return new_state(self.environment)
        return self._parse(latest["state"])

    def _encode(self, state: State) -> str:
        with gc_paused():
            try:
                return dumps_json(state.model_dump())
            except (TypeError, ValueError) as exc:
                raise StateError(
                    f"cannot write the state in {self.display}: it holds a value JSON cannot express ({exc})"
                ) from exc

    def _insert(self, conn: psycopg.Connection[tuple[Any, ...]], state: State, text: str, command: str) -> None:
        conn.execute(
            self._q(
                "INSERT INTO {schema}.states (environment, serial, lineage, state, command, host, os_user, run_url, counts)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ),
            (
                self.environment, state.serial, state.lineage, text, command, socket.gethostname(),
                os_user(), run_url(), dumps_json(_counts(state)),
            ),
        )

    @staticmethod
    def _writer(latest: Mapping[str, Any]) -> str:
        who = f"{latest.get('command') or 'a run'} on {latest.get('host') or 'an unknown host'}"
        if latest.get("user"):
            who += f" ({latest['user']})"
        who += f" at {_iso(latest.get('time'))}"
        if latest.get("run_url"):
            who += f", run {latest['run_url']}"
        return who

    @_translated("save the state")
    def save(self, state: State, *, command: str | None = None) -> State:
        """Save ``state`` with its serial increased by one and return what was saved.

        ``command`` names what made it in the history; by default, the command holding this store's
        lock (``lock(command)``), so that every save of an apply says "apply".

        Compare-and-swap: in one transaction, and only if the latest stored state is still the one
        ``state`` was loaded from (same lineage and serial), or none is stored yet. Otherwise raise
        ``StateError`` naming who wrote the newer one; nothing is written. Every serial is kept, with
        its time, ``command``, host, OS user, CI run URL and counts (see ``history``).
        """
        if state.environment != self.environment:
            raise StateError(
                f'cannot save the state of environment "{state.environment}" in {self.display}'
            )
        saved = state.model_copy(update={"serial": state.serial + 1, "format_version": FORMAT_VERSION})
        text = self._encode(saved)
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._write_key)
            latest = self._latest(conn, with_state=False)
            if latest is not None:
                if latest["lineage"] != state.lineage:
                    raise StateError(
                        f"{self.display} holds another state (lineage {latest['lineage']}, not "
                        f"{state.lineage}), written by {self._writer(latest)}; refusing to overwrite it"
                    )
                if latest["serial"] != state.serial:
                    moved = "has moved on" if latest["serial"] > state.serial else "has changed"
                    raise StateError(
                        f"the state in {self.display} {moved} (serial {latest['serial']} was written by "
                        f"{self._writer(latest)}; this state was read at serial {state.serial}); refusing "
                        "to overwrite it: run the command again"
                    )
            self._insert(conn, saved, text, self._command if command is None else command)
        return saved

    @_translated("discard the state")
    def discard(self) -> None:
        """Remove the state and its history: for a state a run created and left empty."""
        with self._connection() as conn:
            conn.execute(self._q("DELETE FROM {schema}.states WHERE environment = %s"), (self.environment,))

    # --- team commands -------------------------------------------------------------------------------

    @_translated("read the state")
    def pull(self) -> State | None:
        """The latest state, or None when none was saved yet."""
        with self._connection() as conn:
            latest = self._latest(conn, with_state=True)
        return None if latest is None else self._parse(latest["state"])

    @_translated("push the state")
    def push(self, state: State, *, force: bool = False) -> State:
        """Store ``state`` as the latest, keeping its lineage and serial; return it.

        Allowed when nothing is stored yet. Refused (``StateError``) for another lineage or a serial
        not above the stored one, unless ``force``; the states it replaces stay in the history.
        """
        if state.environment != self.environment:
            raise StateError(
                f'cannot push the state of environment "{state.environment}" to {self.display}; '
                "push it to that environment"
            )
        pushed = state.model_copy(update={"format_version": FORMAT_VERSION})
        text = self._encode(pushed)
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._write_key)
            latest = self._latest(conn, with_state=False)
            if latest is not None and not force:
                if latest["lineage"] != state.lineage:
                    raise StateError(
                        f"{self.display} holds another state (lineage {latest['lineage']}, the one pushed "
                        f"has {state.lineage}); refusing to replace it. Push with --force to replace it "
                        "anyway (the replaced state stays in the history)"
                    )
                if state.serial <= latest["serial"]:
                    raise StateError(
                        f"the state in {self.display} is at serial {latest['serial']} (written by "
                        f"{self._writer(latest)}); the one pushed is at serial {state.serial}, and only "
                        "a higher serial replaces it. Push with --force to replace it anyway (the "
                        "replaced state stays in the history)"
                    )
            self._insert(conn, pushed, text, "state push --force" if force else "state push")
        return pushed

    @_translated("read the state history")
    def history(self) -> list[StateVersion]:
        """Every state saved, newest first."""
        with self._connection() as conn:
            rows = conn.execute(
                self._q(
                    "SELECT serial, time, command, host, os_user, run_url, counts FROM {schema}.states"
                    " WHERE environment = %s ORDER BY id DESC"
                ),
                (self.environment,),
            ).fetchall()
        return [
            StateVersion(
                serial=serial, time=_iso(time_) or "", command=command, host=host, user=user, run_url=url,
                counts=MappingProxyType(loads_json(counts)),
            )
            for serial, time_, command, host, user, url, counts in rows
        ]

    # --- lock ----------------------------------------------------------------------------------------

    def lock(self, command: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Hold the state lock for the ``with`` block; ``command`` names this run in others' messages.

        A session-level advisory lock on a connection of its own, so the server releases it when
        that session ends: at the end of the block, when the process dies (even by SIGKILL: the
        kernel closes its socket), or when its machine vanishes (TCP keepalives, about 40 s). When
        another run holds it, raise ``LockError`` at once naming the holder, or with ``timeout`` > 0
        retry every 0.1 s for up to ``timeout`` seconds first.
        """
        return self._locked(command, timeout)

    @contextlib.contextmanager
    def _locked(self, command: str, timeout: float | None) -> Iterator[None]:
        conn = self._lock_connection()
        outer = self._command
        try:
            self._acquire(conn, command, timeout)
            self._command = command
            yield
        finally:
            self._command = outer
            with contextlib.suppress(psycopg.Error):  # a session ended by force-unlock has nothing to release
                conn.execute(
                    self._q("DELETE FROM {schema}.locks WHERE environment = %s AND backend_pid = pg_backend_pid()"),
                    (self.environment,),
                )
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._lock_key)
            conn.close()

    @_translated("take the state lock")
    def _lock_connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        with self._connection():
            pass  # the tables exist
        return self._target.connect(keepalives=True, settings=_LOCK_SESSION)

    @_translated("take the state lock")
    def _acquire(self, conn: psycopg.Connection[tuple[Any, ...]], command: str, timeout: float | None) -> None:
        me = LockInfo.current(command)
        started = time.monotonic()
        wait = max(timeout or 0.0, 0.0)
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self._lock_key).fetchone()
            if row and row[0]:
                break
            waited = time.monotonic() - started
            if waited >= wait:
                raise LockError(self._held_message(wait))
            time.sleep(min(_LOCK_POLL_SECONDS, wait - waited))
        conn.execute(
            self._q(
                "INSERT INTO {schema}.locks (environment, command, host, pid, os_user, since, run_url, backend_pid)"
                " VALUES (%s, %s, %s, %s, %s, now(), %s, pg_backend_pid())"
                " ON CONFLICT (environment) DO UPDATE SET command = EXCLUDED.command, host = EXCLUDED.host,"
                " pid = EXCLUDED.pid, os_user = EXCLUDED.os_user, since = EXCLUDED.since,"
                " run_url = EXCLUDED.run_url, backend_pid = EXCLUDED.backend_pid"
            ),
            (self.environment, me.command, me.host, me.pid, me.user, me.run_url),
        )

    def _holder_pid(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int | None:
        """The server process id of the session holding the lock, or None."""
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s::oid AND objid = %s::oid",
            self._lock_key,
        ).fetchone()
        return int(row[0]) if row else None

    def _read_row(self, conn: psycopg.Connection[tuple[Any, ...]]) -> LockInfo | None:
        row = conn.execute(
            self._q(
                "SELECT command, host, pid, os_user, since, run_url, backend_pid FROM {schema}.locks"
                " WHERE environment = %s"
            ),
            (self.environment,),
        ).fetchone()
        if row is None:
            return None
        command, host, pid, user, since, url, backend_pid = row
        return LockInfo(
            command=command, host=host, pid=pid, user=user, time=_iso(since), run_url=url, backend_pid=backend_pid,
        )

    def _held_message(self, waited: float) -> str:
        """Who holds the lock, waiting up to 2 s for the holder's row (it writes it just after locking)."""
        deadline = time.monotonic() + _HOLDER_ROW_WAIT
        with self._connection() as conn:
            while True:
                holder = self._holder_pid(conn)
                info = self._read_row(conn)
                if holder is None or (info is not None and info.backend_pid == holder):
                    break
                if time.monotonic() >= deadline:
                    info = None  # a row left by an earlier holder says nothing about this one
                    break
                time.sleep(_LOCK_POLL_SECONDS)
        if info is not None:
            holder_text = info.describe()
        else:
            holder_text = "another run" + (f" (server session {holder}, which has not said who it is)" if holder else "")
        after = f" after waiting {waited:g} s" if waited > 0 else ""
        return (
            f"the state in {self.display} is locked by {holder_text}{after}; wait for it, retry "
            "with --lock-timeout SECONDS, or if no such run is alive, run `invoicesync force-unlock`"
        )

    @_translated("read the state lock")
    def read_lock_info(self) -> LockInfo | None:
        """What the ``locks`` row says about the holder (command, host, pid, user, time, run_url,
        backend_pid), or None when there is none. The row of a run killed by SIGKILL outlives its lock."""
        with self._connection() as conn:
            return self._read_row(conn)

    @_translated("read the state lock")
    def lock_is_held(self) -> bool:
        """Whether some session holds the lock right now."""
        with self._connection() as conn:
            return self._holder_pid(conn) is not None

    @_translated("force-unlock the state")
    def force_unlock(self) -> LockInfo | None:
        """End the session holding the lock, remove the ``locks`` row, and return what it said (None when nothing).

        The caller says whose lock it is first (``read_lock_info``). The holder's session is ended
        with ``pg_terminate_backend``, which the server allows for sessions of the same role (or to
        members of ``pg_signal_backend``); otherwise ``StateError`` says what an administrator can do.
        """
        with self._connection() as conn:
            info = self._read_row(conn)
            holder = self._holder_pid(conn)
            if holder is not None:
                problem: str | None = None
                try:
                    conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
                except pg_errors.InsufficientPrivilege as exc:
                    problem = self._target.detail(exc)
                if problem is not None:
                    raise StateError(
                        f"cannot end the session holding the lock of {self.display} (server process "
                        f"{holder}): {problem}; a superuser can run `SELECT pg_terminate_backend({holder})`"
                    )
                deadline = time.monotonic() + _TERMINATE_WAIT
                while self._holder_pid(conn) is not None:
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"asked the server to end the session holding the lock of {self.display} "
                            f"(server process {holder}), but it still holds it after {_TERMINATE_WAIT:g} s; "
                            "try again"
                        )
                    time.sleep(_LOCK_POLL_SECONDS)
            conn.execute(self._q("DELETE FROM {schema}.locks WHERE environment = %s"), (self.environment,))
        return info

    # --- journal -------------------------------------------------------------------------------------

    @property
    def journal_name(self) -> str:
        """The journal as messages name it."""
        return f"the journal in {self.display}"

    @_translated("read the journal")
    def has_journal(self) -> bool:
        """Whether journal records exist: the last run did not finish folding them into the state."""
        with self._connection() as conn:
            row = conn.execute(
                self._q("SELECT EXISTS (SELECT 1 FROM {schema}.journal WHERE environment = %s)"), (self.environment,)
            ).fetchone()
        return bool(row and row[0])

    def _records(self, conn: psycopg.Connection[tuple[Any, ...]]) -> list[dict[str, Any]]:
        rows = conn.execute(
            self._q("SELECT id, record FROM {schema}.journal WHERE environment = %s ORDER BY id"), (self.environment,)
        ).fetchall()
        source = f"{self.display}: journal"  # fold_journal says "<source>, line <row id>"
        records: list[dict[str, Any]] = []
        for row_id, text in rows:
            try:
                record = loads_json(text)
            except ValueError as exc:
                raise StateError(f"{source}, row {row_id}, is damaged ({exc}); repair or delete that row and run again") from exc
            if not isinstance(record, dict) or not isinstance(record.get("op"), str):
                raise StateError(
                    f'{source}, row {row_id}, is not a journal record (a JSON object with an "op"); repair or '
                    "delete that row and run again"
                )
            records.append(JournalEntry(record, source=source, line=row_id))
        return records

    def _foreign_message(self, record: Mapping[str, Any], lineage: str) -> str:
        return (
            f"the journal of {self.display} belongs to another state: its records (row {getattr(record, 'line', '?')}) carry "
            f"lineage {record.get('lineage')}, this state's is {lineage}. A run of that state left them "
            "unfolded (was the state replaced with `state push --force`?); push that state back and run "
            "again to recover them. Nothing was changed"
        )

    @_translated("read the journal")
    def read_journal(self) -> list[dict[str, Any]]:
        """Every journal record in append order (``[]`` when there is none); each a ``JournalEntry``
        whose ``line`` is its row id, so ``fold_journal`` can name a record it refuses."""
        with self._connection() as conn:
            return self._records(conn)

    @_translated("read the journal")
    def journal_last_write(self) -> float | None:
        """Epoch seconds (the server's clock) of the newest journal record, or None when there is none."""
        with self._connection() as conn:
            row = conn.execute(
                self._q("SELECT extract(epoch FROM max(time))::float8 FROM {schema}.journal WHERE environment = %s"),
                (self.environment,),
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    @_translated("remove the journal")
    def remove_journal(self) -> None:
        """Delete the journal once its records are folded into a saved state (and no intent is unresolved)."""
        with self._connection() as conn:
            conn.execute(self._q("DELETE FROM {schema}.journal WHERE environment = %s"), (self.environment,))

    @_translated("open the journal")
    def open_journal(self, *, lineage: str | None = None) -> PgJournal:
        """Open the journal for appending, on a connection of its own.

        With ``lineage`` (the state's), every record appended is stamped with it, and a journal that
        already holds records of another lineage is refused here, before anything is added to it.
        """
        with self._connection() as conn:
            if lineage is not None:
                for record in self._records(conn):
                    if _foreign(record, lineage):
                        raise StateError(self._foreign_message(record, lineage))
        # One statement per batch, in autocommit: atomic on its own, and one round trip where BEGIN,
        # an INSERT per record and COMMIT took three (the journal's cost beside an fsynced file).
        insert = self._q(
            "INSERT INTO {schema}.journal (environment, record)"
            " SELECT %s, r::text FROM json_array_elements(%s::json) WITH ORDINALITY AS t(r, n) ORDER BY n"
        )
        return PgJournal(self._target.connect(settings=_LONG_SESSION), self._target, insert, lineage=lineage)


class PgJournal(GroupCommitJournal):
    """The journal as rows: each ``append`` returns once its row is committed (concurrent appends share commits)."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        target: _Target,
        insert: sql.Composed,
        *,
        lineage: str | None = None,
    ) -> None:
        super().__init__(f"the journal of {target.display}", lineage=lineage)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = conn
        self._target = target
        self._insert = insert

    @property
    def closed(self) -> bool:
        """Whether the journal was closed."""
        return self._conn is None

    @property
    def commits(self) -> int:
        """How many commits the appends took."""
        return self.durable_writes

    @property
    def fsyncs(self) -> int:
        """``commits`` under the name the file journal uses, for code that counts either."""
        return self.durable_writes

    def _write_batch(self, records: list[str]) -> None:
        """Insert the records in one statement (so one transaction, rows in order), committed before it returns."""
        assert self._conn is not None
        try:
            # json keeps each element's text as written (exact decimals); records are JSON objects
            self._conn.execute(self._insert, (self._target.environment, "[" + ",".join(records) + "]"))
        except psycopg.Error as exc:
            message = self._target.problem(f"write {len(records)} journal record(s)", exc)
            if self._conn.broken:
                # The commit's outcome is unknown; the next command's recovery looks them up.
                self._broken = message
            raise StateError(message) from None

    def _close(self) -> None:
        assert self._conn is not None
        self._conn.close()
        self._conn = None

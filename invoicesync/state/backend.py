"""The seam between operations and where a state is kept: what every backend does, and nothing more.

``StateStore`` (files under ``state/`` with an OS lock, ``state.local``) and ``PostgresStore``
(tables with an advisory lock, ``state.postgres``) both implement ``Backend``; ``operations``,
``apply`` and ``recovery`` only ever use these methods, so a run behaves the same on either.
Also here: ``closing`` (a backend holds connections until closed) and ``read_state_file`` (a state
file given on the command line, for ``state push``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import simplejson

from invoicesync.errors import StateError
from invoicesync.models import gc_paused, loads_json
from invoicesync.state.journal import JournalRecord
from invoicesync.state.lock import LockInfo
from invoicesync.state.model import State, state_from_document

__all__ = ["Backend", "JournalWriter", "closing", "read_state_file"]


class JournalWriter(Protocol):
    """An open journal: each ``append`` returns once the record is durable (fsynced or committed)."""

    @property
    def closed(self) -> bool:
        """Whether the journal was closed."""
        ...

    async def append(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append ``record``; concurrent appends may share one fsync or commit."""
        ...

    def append_sync(self, record: JournalRecord | Mapping[str, Any]) -> None:
        """Append ``record`` from synchronous code."""
        ...

    async def aclose(self) -> None:
        """Wait for queued appends to land, then close."""
        ...

    def close(self) -> None:
        """Close (records already appended are durable); idempotent."""
        ...


class Backend(Protocol):
    """Where one environment's state, journal and lock are kept."""

    #: State surgery (``state rm``/``mv``) may load a state holding one invoice id under two addresses, to repair it.
    allow_duplicate_ids: bool

    def exists(self) -> bool:
        """Whether a state has been saved."""
        ...

    def load(self) -> State:
        """The saved state, or a new empty one when there is none."""
        ...

    def save(self, state: State) -> State:
        """Save ``state`` as the next serial, refusing when another run saved since it was loaded."""
        ...

    def discard(self) -> None:
        """Remove a state this run created and left empty."""
        ...

    def lock(self, command: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Hold the environment's lock for ``command``; ``LockError`` naming the holder when it is taken."""
        ...

    def read_lock_info(self) -> LockInfo | None:
        """Who holds (or last held) the lock, as far as the backend knows."""
        ...

    def lock_is_held(self) -> bool:
        """Whether a live run holds the lock now."""
        ...

    def force_unlock(self) -> LockInfo | None:
        """Break the lock; returns what was known about its holder."""
        ...

    def has_journal(self) -> bool:
        """Whether an unfinished run left journal records."""
        ...

    def open_journal(self, *, lineage: str | None = None) -> JournalWriter:
        """Open the journal for appending, stamping ``lineage`` on every record."""
        ...

    def read_journal(self) -> list[dict[str, Any]]:
        """The journal's records in the order they were written."""
        ...

    @property
    def journal_name(self) -> str:
        """The journal as messages name it."""
        ...

    def journal_last_write(self) -> float | None:
        """When the journal was last written (epoch seconds): bounds a dead run's last send."""
        ...

    def remove_journal(self) -> None:
        """Drop the journal once it is folded into a saved state."""
        ...


@contextlib.contextmanager
def closing(backend: Backend) -> Iterator[Backend]:
    """Use ``backend`` for the ``with`` block, then close what it holds open (a database connection)."""
    try:
        yield backend
    finally:
        close = getattr(backend, "close", None)  # the local files hold nothing open between calls
        if callable(close):
            close()


def read_state_file(path: Path, shown: str | None = None) -> State:
    """The state in the JSON file ``path`` (a ``state pull`` or a state file), or ``StateError`` saying what is wrong."""
    shown = shown or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StateError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    with gc_paused():
        try:
            data = loads_json(raw)
        except simplejson.JSONDecodeError as exc:
            raise StateError(f"{shown} is not valid JSON (line {exc.lineno}, column {exc.colno})") from exc
        except ValueError as exc:
            raise StateError(f"{shown} is not a readable state file ({exc})") from exc
        return state_from_document(data, shown)

